"""PreAuthGate.read_body: its bare cancel scope (anyio.fail_after without the generator machinery) is
held to the strict loop it replaced, on generated and hostile inputs; and a receive() that opens cancel
scopes of its own (Starlette's BaseHTTPMiddleware) is read inside the deadline's scope, nested.

A fast path that ran the first step of receive() outside the scope was tried and removed: its scopes
overlapped those of such a receive(), and every request behind a BaseHTTPMiddleware became a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpclient_auth.errors import BodyTimeout, BodyTooLarge, McpClientAuthError, ServerLimitError
from mcpclient_auth.keys import Identity
from mcpclient_auth.server import RequestLimits
from mcpclient_auth.server._limits import PreAuthGate
from mcpclient_auth.server.verify import IncomingHeaders
from tests.support.trust import trust_for

AGENT = Identity.generate("ES256", name="agent")
TRUST = trust_for(agents=[AGENT])
LIMIT = 64


async def strict_read_body(gate: PreAuthGate, receive: Any, headers: Mapping[str, str], keyid: str) -> bytes:
    """The loop read_body ran before the fast path (main at 56f849f), verbatim but for the names."""
    from mcpclient_auth.server._limits import _content_length

    limit = gate.limits.max_body_bytes
    declared = None if "transfer-encoding" in headers else _content_length(headers)
    reserve = limit if declared is None else min(declared, limit)
    with gate._pending.reserve(reserve, keyid) as reservation:
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(gate.limits.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLarge("the request body exceeds the allowed size")
                    reservation.cover(size)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise BodyTimeout(
                f"the request body did not arrive within {gate.limits.body_timeout:g} s"
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


#: One receive() call: what it returns (or does) and whether it suspends before returning.
step = st.one_of(
    st.tuples(
        st.just("chunk"),
        st.binary(max_size=LIMIT // 2 + 8),
        st.booleans(),  # more_body
        st.sampled_from(["now", "sleep", "future"]),  # how it returns
    ),
    st.tuples(st.just("disconnect"), st.just(b""), st.just(False), st.sampled_from(["now", "sleep"])),
    st.tuples(st.just("no-body-key"), st.just(b""), st.booleans(), st.just("now")),
    st.tuples(st.just("raise"), st.just(b""), st.just(False), st.sampled_from(["now", "sleep"])),
    st.tuples(st.just("timeout-error"), st.just(b""), st.just(False), st.just("now")),
    st.tuples(st.just("stall"), st.just(b""), st.just(False), st.just("sleep")),
    st.tuples(st.just("awaitable"), st.binary(max_size=8), st.booleans(), st.just("now")),
)


class Script:
    """A scripted ASGI ``receive``; counts calls and finished (or closed) coroutines."""

    def __init__(self, steps: list[tuple[str, bytes, bool, str]]) -> None:
        self.steps = list(steps)
        self.calls = 0
        self.finished = 0

    def __call__(self) -> Any:
        self.calls += 1
        kind, body, more, how = self.steps.pop(0) if self.steps else ("disconnect", b"", False, "now")
        if kind == "awaitable":  # not a native coroutine: a Future that is already done
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            future.set_result({"type": "http.request", "body": body, "more_body": more})
            return future
        return self._run(kind, body, more, how)

    async def _run(self, kind: str, body: bytes, more: bool, how: str) -> dict[str, Any]:
        try:
            if how == "sleep":
                await asyncio.sleep(0)
            elif how == "future":
                future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                asyncio.get_running_loop().call_soon(future.set_result, None)
                await future
            if kind == "stall":
                await asyncio.Event().wait()
            if kind == "raise":
                raise RuntimeError("the server's receive failed")
            if kind == "timeout-error":
                raise TimeoutError
            if kind == "disconnect":
                return {"type": "http.disconnect"}
            if kind == "no-body-key":
                return {"type": "http.request", "more_body": more}
            return {"type": "http.request", "body": body, "more_body": more}
        finally:
            self.finished += 1


def gate() -> PreAuthGate:
    return PreAuthGate(TRUST, RequestLimits(max_body_bytes=LIMIT, body_timeout=0.02, max_pending_bodies=4))


async def outcome(read: Any, the_gate: PreAuthGate, script: Script, headers: IncomingHeaders) -> Any:
    try:
        result: Any = await read(the_gate, script, headers, AGENT.kid)
    except McpClientAuthError as exc:
        result = (type(exc), exc.code, exc.message)
    except RuntimeError as exc:
        result = (RuntimeError, str(exc))
    except TimeoutError:
        result = TimeoutError
    return result, script.calls, script.finished, the_gate.pending_bodies, the_gate._pending.reserved


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=6), declared=st.sampled_from([None, 0, 10, 64, 100_000]))
def test_read_body_agrees_with_the_strict_loop(steps: list[Any], declared: int | None) -> None:
    headers = IncomingHeaders([] if declared is None else [(b"content-length", str(declared).encode())])

    async def both() -> tuple[Any, Any]:
        fast = await outcome(lambda g, r, h, k: g.read_body(r, h, k), gate(), Script(steps), headers)
        strict = await outcome(strict_read_body, gate(), Script(steps), headers)
        return fast, strict

    fast, strict = asyncio.run(both())
    assert fast == strict


async def test_a_first_receive_that_never_returns_times_out_and_is_closed() -> None:
    the_gate = gate()
    script = Script([("stall", b"", False, "sleep")])
    with pytest.raises(BodyTimeout):
        await the_gate.read_body(script, IncomingHeaders(), AGENT.kid)
    assert (script.calls, script.finished, the_gate.pending_bodies) == (1, 1, 0)


async def test_a_first_receive_that_waits_then_answers_is_read_under_the_deadline() -> None:
    the_gate = gate()
    script = Script([("chunk", b'{"a":', True, "future"), ("chunk", b"1}", False, "sleep")])
    assert await the_gate.read_body(script, IncomingHeaders(), AGENT.kid) == b'{"a":1}'
    assert (script.calls, script.finished, the_gate.pending_bodies) == (2, 2, 0)


async def test_cancelling_the_request_while_its_first_receive_waits_releases_everything() -> None:
    the_gate = PreAuthGate(TRUST, RequestLimits(body_timeout=60))
    script = Script([("stall", b"", False, "sleep")])
    task = asyncio.create_task(the_gate.read_body(script, IncomingHeaders(), AGENT.kid))
    for _ in range(10):
        await asyncio.sleep(0)
    assert script.calls == 1 and not task.done() and the_gate.pending_bodies == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert script.finished == 1 and the_gate.pending_bodies == 0


async def test_a_single_chunk_over_the_limit_is_refused_and_budget_released() -> None:
    the_gate = gate()
    script = Script([("chunk", b"x" * (LIMIT + 1), False, "now")])
    with pytest.raises(BodyTooLarge):
        await the_gate.read_body(script, IncomingHeaders(), AGENT.kid)
    assert the_gate.pending_bodies == 0 and the_gate._pending.reserved == 0


async def test_a_large_single_chunk_is_charged_to_the_byte_budget() -> None:
    # The received bytes are a fact: a chunk above SMALL_BODY is charged even when it came in one
    # message without a Content-Length, and refused when the budget cannot hold it.
    limits = RequestLimits(max_body_bytes=1 << 20, max_pending_body_bytes=100_000)
    the_gate = PreAuthGate(TRUST, limits)
    script = Script([("chunk", b"x" * 200_000, False, "now")])
    headers = IncomingHeaders([(b"content-length", b"10")])
    with pytest.raises(ServerLimitError) as refused:
        await the_gate.read_body(script, headers, AGENT.kid)
    assert refused.value.code == "too_many_pending_bodies" and the_gate._pending.reserved == 0


async def test_a_receive_with_its_own_cancel_scope_is_read_nested_in_the_deadline() -> None:
    # A receive() that waits inside a cancel scope of its own: the deadline's scope must be entered
    # first, so the two nest (anyio raises RuntimeError when scopes overlap).
    the_gate = gate()
    first = [True]

    async def receive() -> dict[str, Any]:
        with anyio.move_on_after(30):
            if first[0]:
                first[0] = False
                await anyio.sleep(0.01)
            return {"type": "http.request", "body": b"{}", "more_body": False}
        raise AssertionError("unreachable")  # pragma: no cover

    assert await the_gate.read_body(receive, IncomingHeaders(), AGENT.kid) == b"{}"
    assert the_gate.pending_bodies == 0


async def test_the_middleware_behind_a_base_http_middleware_refuses_with_401_not_500() -> None:
    # Starlette's BaseHTTPMiddleware (FastAPI's @app.middleware("http")) hands on a receive() that
    # runs in a task group: a forged request behind it is refused as a signature problem, never a 500.
    import httpx
    from starlette.applications import Starlette
    from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from mcpclient_auth.server.middleware import McpAuthMiddleware

    async def mcp(request: Request) -> Response:  # pragma: no cover - never reached unsigned
        return JSONResponse({"ok": True})

    class PassThrough(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            return await call_next(request)

    inner = McpAuthMiddleware(
        Starlette(routes=[Route("/mcp", mcp, methods=["POST"])]), trust=TRUST, audience="http://t/mcp"
    )
    transport = httpx.ASGITransport(app=PassThrough(inner), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post(
            "/mcp",
            content=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
            headers={
                "content-type": "application/json",
                "act-mandate": "x.y.z",
                "signature-input": f'sig1=("@method");keyid="{AGENT.kid}";created=1',
                "signature": "sig1=:AAAA:",
            },
        )
    assert response.status_code == 401, response.text
    assert response.json()["type"].startswith("urn:mcpclient-auth:problem:")
