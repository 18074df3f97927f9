"""McpAuthMiddleware as a plain ASGI callable: what it forwards, what it answers, and how."""

from __future__ import annotations

import json
from typing import Any

from mcpclient_auth.keys import Identity
from mcpclient_auth.server import PROBLEM_TYPE_PREFIX, McpAuthMiddleware
from tests.support.trust import trust_for

TRUST = trust_for(issuers=[Identity.generate("ES256", name="user")])


class App:
    """The protected app: records what reached it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        if scope["type"] == "http" and scope["method"] == "POST":
            body = (await receive())["body"]
        self.calls.append((scope.get("path", ""), body))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(
    app: Any, method: str, path: str, chunks: list[bytes] | None = None
) -> tuple[int, dict[str, str], bytes]:
    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks or []) - 1}
        for i, chunk in enumerate(chunks or [b""])
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"hr.example")],
        "scheme": "https",
    }
    await app(scope, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def middleware(app: App, **options: Any) -> McpAuthMiddleware:
    return McpAuthMiddleware(app, trust=TRUST, audience="https://hr.example/mcp", **options)


async def test_unprotected_paths_and_preflight_pass_untouched() -> None:
    app = App()
    guarded = middleware(app)
    for method, path in [
        ("GET", "/health"),
        ("GET", "/.well-known/oauth-protected-resource/mcp"),
        ("OPTIONS", "/mcp"),
    ]:
        status, _, _ = await call(guarded, method, path)
        assert status == 204
    assert [p for p, _ in app.calls] == ["/health", "/.well-known/oauth-protected-resource/mcp", "/mcp"]


async def test_unsigned_request_is_a_problem_document_and_never_reaches_the_app() -> None:
    app = App()
    status, headers, body = await call(middleware(app), "POST", "/mcp/", [b'{"jsonrpc":', b'"2.0"}'])
    assert status == 401 and app.calls == []
    assert headers["content-type"] == "application/problem+json"
    assert headers["www-authenticate"] == 'HTTPSig realm="mcp", tag="mcpclient-auth/1"'
    document = json.loads(body)
    assert document["type"] == PROBLEM_TYPE_PREFIX + "signature_missing"
    assert document["title"] == "Unauthorized" and document["status"] == 401


async def test_oversized_body_is_413_without_verifying() -> None:
    app = App()
    status, _, body = await call(middleware(app, max_body_bytes=10), "POST", "/mcp", [b"x" * 8, b"y" * 8])
    assert status == 413 and app.calls == []
    assert json.loads(body)["code"] == "body_too_large"


async def test_other_protected_paths_can_be_added() -> None:
    app = App()
    status, _, _ = await call(middleware(app, paths=("/mcp", "/messages")), "POST", "/messages/", [b"{}"])
    assert status == 401 and app.calls == []
