"""McpAuthMiddleware as a plain ASGI callable: what it forwards, what it answers, and how."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mcpclient_auth.keys import Identity
from mcpclient_auth.server import PROBLEM_TYPE_PREFIX, McpAuthMiddleware, RequestLimits
from mcpclient_auth.server.verify import IncomingHeaders, IncomingRequest, McpRequestVerifier, Rejection
from tests.support.trust import trust_for

USER = Identity.generate("ES256", name="user")
OTHER = Identity.generate("ES256", name="other-agent")
TRUST = trust_for(issuers=[USER], agents=[OTHER])
#: Headers that pass the pre-authentication screen (a known keyid, a mandate header) but verify nothing.
PLAUSIBLE = [
    (b"signature-input", f'sig1=("@method");created=1;expires=2;nonce="n";keyid="{USER.kid}"'.encode()),
    (b"signature", b"sig1=:AAAA:"),
    (b"act-mandate", b"not.a.token"),
]


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
    app: Any,
    method: str,
    path: str,
    chunks: list[bytes] | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    receive: Any = None,
) -> tuple[int, dict[str, str], bytes]:
    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks or []) - 1}
        for i, chunk in enumerate(chunks or [b""])
    ]
    sent: list[dict[str, Any]] = []

    async def scripted() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"hr.example"), *(headers or [])],
        "scheme": "https",
    }
    await app(scope, receive or scripted, send)
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
    status, headers, body = await call(
        middleware(app, max_body_bytes=10), "POST", "/mcp", [b"x" * 8, b"y" * 8], headers=PLAUSIBLE
    )
    assert status == 413 and app.calls == []
    assert json.loads(body)["code"] == "body_too_large" and headers["connection"] == "close"


async def test_other_protected_paths_can_be_added() -> None:
    app = App()
    status, _, _ = await call(middleware(app, paths=("/mcp", "/messages")), "POST", "/messages/", [b"{}"])
    assert status == 401 and app.calls == []


# --- pre-authentication limits (issue 13) ---------------------------------------------------------------


class CountingReceive:
    """A ``receive`` that counts how often it was called (0 = the body was never read)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.calls = 0
        self.chunks = list(chunks)

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        if not self.chunks:
            return {"type": "http.disconnect"}
        chunk = self.chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ([], 401, "signature_missing"),
        ([h for h in PLAUSIBLE if h[0] != b"act-mandate"], 401, "mandate_missing"),
        (
            [(b"signature-input", b'sig1=("@method");keyid="someone-else"'), PLAUSIBLE[2]],
            401,
            "unknown_key",
        ),
        ([(b"signature-input", b"sig1=(((;"), PLAUSIBLE[2]], 401, "signature_malformed"),
        ([(b"signature-input", b'other=();keyid="x"'), PLAUSIBLE[2]], 401, "signature_missing"),
        ([*PLAUSIBLE, (b"content-length", str(5 * 1024 * 1024).encode())], 413, "body_too_large"),
        (
            [*PLAUSIBLE, (b"content-length", b"100"), (b"transfer-encoding", b"chunked")],
            400,
            "body_framing_ambiguous",
        ),
    ],
)
async def test_hopeless_requests_are_refused_before_the_body_is_read(
    headers: list[tuple[bytes, bytes]], status: int, code: str
) -> None:
    app = App()
    receive = CountingReceive([b"x" * 1024])
    got, answer, body = await call(middleware(app), "POST", "/mcp", headers=headers, receive=receive)
    assert (got, json.loads(body)["code"]) == (status, code)
    assert receive.calls == 0 and app.calls == []
    assert answer["connection"] == "close"  # not drained: the connection goes


async def test_a_body_slower_than_the_deadline_is_408() -> None:
    app = App()
    guarded = middleware(app, limits=RequestLimits(body_timeout=0.05))
    stalled = asyncio.Event()

    async def trickle() -> dict[str, Any]:
        if not stalled.is_set():
            stalled.set()
            return {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.Event().wait()  # the next byte never comes
        raise AssertionError("unreachable")

    status, headers, body = await call(guarded, "POST", "/mcp", headers=PLAUSIBLE, receive=trickle)
    document = json.loads(body)
    assert (status, document["code"], document["title"]) == (408, "body_timeout", "Request Timeout")
    assert headers["connection"] == "close" and app.calls == []
    assert guarded.gate.pending_bodies == 0


async def test_concurrent_unauthenticated_reads_are_bounded() -> None:
    app = App()
    guarded = middleware(app, limits=RequestLimits(max_pending_bodies=1))
    release = asyncio.Event()

    async def held() -> dict[str, Any]:
        await release.wait()
        return {"type": "http.request", "body": b"{}", "more_body": False}

    first = asyncio.create_task(call(guarded, "POST", "/mcp", headers=PLAUSIBLE, receive=held))
    for _ in range(100):
        if guarded.gate.pending_bodies:
            break
        await asyncio.sleep(0)
    assert guarded.gate.pending_bodies == 1
    status, headers, body = await call(guarded, "POST", "/mcp", [b"{}"], headers=PLAUSIBLE)
    document = json.loads(body)
    assert (status, document["code"], document["retryable"]) == (503, "too_many_pending_bodies", True)
    assert headers["retry-after"] == "1"
    release.set()
    status, _, _ = await first
    assert status == 401  # read, then verified (and refused: the signature is junk)
    assert guarded.gate.pending_bodies == 0


async def test_pending_bytes_are_bounded_but_small_bodies_still_get_in() -> None:
    guarded = middleware(App(), limits=RequestLimits(max_pending_body_bytes=100 * 1024))
    release = asyncio.Event()
    big = str(80 * 1024).encode()

    async def held() -> dict[str, Any]:
        await release.wait()
        return {"type": "http.request", "body": b"x" * (80 * 1024), "more_body": False}

    first = asyncio.create_task(
        call(guarded, "POST", "/mcp", headers=[*PLAUSIBLE, (b"content-length", big)], receive=held)
    )
    for _ in range(100):
        if guarded.gate.pending_bodies:
            break
        await asyncio.sleep(0)
    # A second large body would pass the byte budget: refused at once.
    status, _, body = await call(
        guarded, "POST", "/mcp", [b"x" * (80 * 1024)], headers=[*PLAUSIBLE, (b"content-length", big)]
    )
    assert (status, json.loads(body)["code"]) == (503, "too_many_pending_bodies")
    # An ordinary call-sized body is not charged to the byte budget: it is read and verified.
    status, _, body = await call(
        guarded, "POST", "/mcp", [b"{}"], headers=[*PLAUSIBLE, (b"content-length", b"2")]
    )
    assert status == 401 and json.loads(body)["code"] != "too_many_pending_bodies"
    release.set()
    assert (await first)[0] == 401
    assert guarded.gate.pending_bodies == 0


async def test_one_keyid_cannot_take_every_pending_slot() -> None:
    guarded = middleware(App(), limits=RequestLimits(max_pending_per_key=1))
    release = asyncio.Event()

    async def held() -> dict[str, Any]:
        await release.wait()
        return {"type": "http.request", "body": b"{}", "more_body": False}

    first = asyncio.create_task(call(guarded, "POST", "/mcp", headers=PLAUSIBLE, receive=held))
    for _ in range(100):
        if guarded.gate.pending_bodies:
            break
        await asyncio.sleep(0)
    status, _, body = await call(guarded, "POST", "/mcp", [b"{}"], headers=PLAUSIBLE)
    assert (status, json.loads(body)["code"]) == (503, "too_many_pending_bodies")
    other = [
        (b"signature-input", f'sig1=("@method");nonce="n";keyid="{OTHER.kid}"'.encode()),
        (b"act-mandate", b"not.a.token"),
    ]
    status, _, body = await call(guarded, "POST", "/mcp", [b"{}"], headers=other)
    assert status == 401 and json.loads(body)["code"] != "too_many_pending_bodies"
    release.set()
    await first
    assert guarded.gate.pending_bodies == 0


async def test_a_body_longer_than_it_declared_is_charged_as_it_arrives() -> None:
    # Declared 10 bytes (not charged), sent 3 x 60 KiB: refused once the bytes received pass the
    # budget, instead of being read up to max_body_bytes on the strength of the declared length.
    app = App()
    guarded = middleware(app, limits=RequestLimits(max_pending_body_bytes=100 * 1024))
    receive = CountingReceive([b"x" * (60 * 1024)] * 3)
    status, headers, body = await call(
        guarded, "POST", "/mcp", headers=[*PLAUSIBLE, (b"content-length", b"10")], receive=receive
    )
    assert (status, json.loads(body)["code"]) == (503, "too_many_pending_bodies")
    assert receive.calls == 2 and app.calls == []  # the third chunk was never asked for
    assert headers["connection"] == "close"
    assert guarded.gate.pending_bodies == 0 and guarded.gate._pending.reserved == 0


@pytest.mark.parametrize("method", ["PUT", "PATCH", "PROPFIND"])
async def test_methods_other_than_the_transports_are_405_before_the_body_is_read(method: str) -> None:
    # Only POST bodies are parsed as JSON-RPC (ECT and capability checks); a PUT would skip them.
    app = App()
    receive = CountingReceive([b'{"jsonrpc":"2.0","id":1,"method":"tools/call"}'])
    status, headers, body = await call(middleware(app), method, "/mcp", headers=PLAUSIBLE, receive=receive)
    document = json.loads(body)
    assert (status, document["code"], document["title"]) == (405, "method_not_allowed", "Method Not Allowed")
    assert headers["allow"] == "DELETE, GET, HEAD, OPTIONS, POST"
    assert receive.calls == 0 and app.calls == [] and headers["connection"] == "close"


def test_the_pure_verifier_refuses_other_methods_too() -> None:
    verifier = McpRequestVerifier(TRUST, audience="https://hr.example/mcp")
    request = IncomingRequest("PUT", "https://hr.example/mcp", IncomingHeaders(PLAUSIBLE), b"{}")
    outcome = verifier.check(request)
    assert isinstance(outcome, Rejection)
    assert (outcome.error.code, outcome.status) == ("method_not_allowed", 405)


def test_limits_are_validated() -> None:
    from mcpclient_auth.errors import ConfigurationError

    for bad in ({"body_timeout": 0}, {"max_pending_bodies": 0}, {"max_body_bytes": -1}, {"max_pending_per_key": 0}):
        with pytest.raises(ConfigurationError):
            RequestLimits(**bad)  # type: ignore[arg-type]
