"""Small per-request shortcuts of the server path, each held to the expression it replaced."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth._rfc9421 import HttpMessage
from mcpclient_auth._rfc9421.components import _canonical_line
from mcpclient_auth.keys import Identity
from mcpclient_auth.server import McpAuthMiddleware
from tests.support.trust import trust_for

TRUST = trust_for(issuers=[Identity.generate("ES256", name="u")], agents=[Identity.generate("ES256", name="a")])
_SEGMENTS = st.sampled_from(["", "/", "mcp", "/mcp", "/mcp/", "/mcpx", "/mcp/x", "//", "/a/mcp", "/.well-known/x"])


async def _app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    raise AssertionError


@settings(max_examples=400, deadline=None)
@given(paths=st.lists(_SEGMENTS, min_size=1, max_size=3), path=st.lists(_SEGMENTS, max_size=3).map("".join))
def test_protected_matches_the_generator_it_replaced(paths: list[str], path: str) -> None:
    middleware = McpAuthMiddleware(_app, trust=TRUST, audience="https://hr.example/mcp", paths=paths)
    trimmed = path.rstrip("/") or "/"
    # The expression it replaced, with one deliberate change: "/" protects every path (its "below"
    # prefix was "//"; test_review4_fixes.test_the_root_path_protects_everything_below_it).
    expected = not path.startswith(middleware.passthrough_prefixes) and any(
        p == "/" or trimmed == p or trimmed.startswith(p + "/") for p in middleware.paths
    )
    assert middleware._protected({"path": path}) == expected


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.text(alphabet=" \t\r\nab,", max_size=6), min_size=1, max_size=3))
def test_header_matches_the_join_it_shortcuts(lines: list[str]) -> None:
    message = HttpMessage(method="GET", url="https://h.example/", headers=[("x-a", line) for line in lines])
    assert message.header("X-A") == ", ".join(_canonical_line(line) for line in lines)
