"""The 401/403 flow (``hooks/auth.py``) without a network: ``verdict()`` as a table, and the auth flow
driven with ``asend()`` (the MCP SDK's way of testing its ``OAuthClientProvider``)."""

from __future__ import annotations

from types import ModuleType

import httpx
import pytest

from mcpclient_auth._hooks import library_named
from mcpclient_auth._hooks.auth import FAIL, PASS, REOBTAIN, STEP_UP, Attempt, verdict
from mcpclient_auth._hooks.library import EXTENSION_ATTEMPT
from mcpclient_auth.authz import AccessToken

httpx2 = pytest.importorskip("httpx2")


def response(status: int, challenge: str | None = None) -> httpx.Response:
    headers = {"www-authenticate": challenge} if challenge else {}
    return httpx.Response(status, headers=headers)


def attempt(*, token: bool = True, final: bool = False, granted: frozenset[str] = frozenset()) -> Attempt:
    sent = Attempt(final=final)
    sent.token = AccessToken("tok", scopes=granted) if token else None
    sent.asked_scopes = tuple(sorted(granted))
    return sent


@pytest.mark.parametrize(
    ("sent", "answer", "expected"),
    [
        (attempt(), response(200), PASS),
        (attempt(token=False), response(401, 'Bearer error="invalid_token"'), PASS),  # not our token
        (attempt(), response(401, 'Bearer error="invalid_token"'), REOBTAIN),
        (attempt(final=True), response(401, 'Bearer error="invalid_token"'), FAIL),  # one resend only
        (attempt(), response(401), FAIL),  # no challenge: nothing to act on
        (attempt(), response(401, 'Bearer error="invalid_request"'), FAIL),
        (attempt(), response(403), PASS),  # a 403 for another reason (signature, mandate)
        # nothing to judge the allowlist by (no run): never ask the identity provider
        (attempt(), response(403, 'Bearer error="insufficient_scope", scope="mcp.write"'), FAIL),
        # the demanded scopes are all held already: a step-up cannot help
        (
            attempt(granted=frozenset({"mcp.read"})),
            response(403, 'Bearer error="insufficient_scope", scope="mcp.read"'),
            FAIL,
        ),
    ],
)
def test_verdict(sent: Attempt, answer: httpx.Response, expected: str) -> None:
    assert verdict(sent, answer)[0] == expected


def test_step_up_needs_allowed_scopes() -> None:
    class Run:
        discover_resource_metadata = False

        @staticmethod
        def scope_allowlist(endpoint: object, source: object) -> frozenset[str]:
            return frozenset({"mcp.read", "mcp.write"})

    sent = attempt(granted=frozenset({"mcp.read"}))
    sent.run, sent.endpoint = Run(), object()  # type: ignore[assignment]
    challenge = 'Bearer error="insufficient_scope", scope="mcp.write"'
    assert verdict(sent, response(403, challenge))[0] == STEP_UP
    assert verdict(sent, response(403, 'Bearer error="insufficient_scope", scope="mcp.admin"'))[0] == FAIL


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
async def test_the_flow_puts_its_attempt_on_the_request_and_takes_it_off(library: ModuleType) -> None:
    auth = library_named(library.__name__).auth()
    assert isinstance(auth, library.Auth)
    request = library.Request("POST", "http://127.0.0.1:9/mcp", content=b"{}")
    flow = auth.async_auth_flow(request)
    sent = await flow.__anext__()
    assert sent is request and isinstance(request.extensions[EXTENSION_ATTEMPT], Attempt)
    with pytest.raises(StopAsyncIteration):
        await flow.asend(library.Response(200, request=request))
    assert EXTENSION_ATTEMPT not in request.extensions  # nothing of the attempt outlives the request
