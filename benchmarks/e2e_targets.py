"""Target 2: end-to-end loopback throughput through a real mcp ``ClientSession``, signed vs unsigned.

    python -m benchmarks --only 2

Two uvicorn servers on 127.0.0.1 (threads of this process) run the same FastMCP app: one bare, one
behind the reference middleware ``mcpclient_auth.server.McpAuthMiddleware``. One ``ClientSession`` per
side is opened once and reused; each round sends ``e2e_calls`` ``tools/call`` requests (~1 KB) with
``concurrency`` in flight, alternating unsigned and signed rounds. Reported: signed calls/s ÷ unsigned
calls/s (median over rounds), and the middleware's in-process ``verifier.check`` time per request ÷ the
unsigned round-trip time at concurrency 1.

Client, servers and the GIL share one process (and this machine's cores): a signed call pays the
client's signing *and* the server's verification on the same interpreter.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastmcp import FastMCP
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

from mcpclient_auth._hooks import RunHooks
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import McpAuthMiddleware
from mcpclient_auth.server.verify import IncomingHeaders, IncomingRequest

from ._common import Config, Row

__all__ = ["loopback_throughput"]

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Any, Any], Awaitable[None]]
TEXT = "x" * 900


def _mcp_app() -> Any:
    mcp = FastMCP("bench")

    @mcp.tool
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    return mcp.http_app(path="/mcp")


class _Deferred:
    """ASGI app whose HTTP handler is set once the port (and so the audience) is known; lifespan
    events go straight to the FastMCP app so its session manager starts with the server."""

    def __init__(self, lifespan_app: ASGI) -> None:
        self.lifespan_app = lifespan_app
        self.http_app: ASGI = lifespan_app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan_app(scope, receive, send)
        else:
            await self.http_app(scope, receive, send)


@asynccontextmanager
async def _session(url: str, factory: Any = None) -> AsyncIterator[ClientSession]:
    async with AsyncExitStack() as stack:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if factory is None:
                streams = streamablehttp_client(url)
            else:
                streams = streamablehttp_client(url, httpx_client_factory=factory)
        read, write, _ = await stack.enter_async_context(streams)
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        yield session


async def _round(session: ClientSession, calls: int, concurrency: int) -> float:
    """Calls per second for ``calls`` tools/call with ``concurrency`` workers on one session."""
    remaining = iter(range(calls))

    async def worker() -> None:
        for _ in remaining:
            result = await session.call_tool("echo", {"text": TEXT})
            if result.isError:
                raise RuntimeError("the benchmark tool call failed")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - start)


def _signed_requests(run: AgentRun, url: str, count: int) -> list[IncomingRequest]:
    """``count`` requests exactly as the hooks sign them, converted to the middleware's input shape."""
    hooks = RunHooks(run)
    body = (
        b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"'
        + TEXT.encode()
        + b'"}}}'
    )
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-06-18",
    }
    out = []

    async def build() -> None:
        for i in range(count):
            request = httpx.Request("POST", url, content=body % i, headers=headers)
            await hooks.on_request(request)
            out.append(IncomingRequest("POST", url, IncomingHeaders(request.headers.raw), request.content))

    asyncio.run(build())
    return out


def loopback_throughput(config: Config) -> list[Row]:
    from tests.support.servers import serve  # the project's real uvicorn-in-a-thread helper

    user, agent = Identity.generate("ES256", name="alice"), Identity.generate("ES256", name="agent")
    trust = TrustStore()  # roles: the user key issues mandates for its name, the agent key acts
    trust.add_issuer(user)
    trust.add_agent(agent)
    plain_app = _mcp_app()
    signed_inner = _mcp_app()
    signed_app = _Deferred(signed_inner)
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(plain_app) as plain_base,
        serve(signed_app) as signed_base,
    ):
        signed_url = f"{signed_base}/mcp"
        middleware = McpAuthMiddleware(signed_inner, trust=trust, audience=signed_url)
        signed_app.http_app = middleware
        run = AgentRun(
            agent=agent,
            issuer=user,
            purpose="benchmark",
            capabilities=["mcp.echo"],
            endpoint=signed_url,
            ledger=Path(tmp) / "e2e.jsonl",
            durability="flush",
        )
        latency_c1 = 0.0

        async def main() -> None:
            nonlocal latency_c1
            async with (
                run,
                _session(f"{plain_base}/mcp") as plain,
                _session(signed_url, run.httpx_client_factory()) as signed,
            ):
                await _round(plain, 10, 1)  # warm-up, excluded
                await _round(signed, 10, 1)
                for concurrency in (1, 16):
                    unsigned_rates, signed_rates = [], []
                    for _ in range(config.e2e_rounds):
                        unsigned_rates.append(await _round(plain, config.e2e_calls, concurrency))
                        signed_rates.append(await _round(signed, config.e2e_calls, concurrency))
                    u, s = statistics.median(unsigned_rates), statistics.median(signed_rates)
                    if concurrency == 1:
                        latency_c1 = 1e6 / u
                    rows.append(
                        Row("2", f"signed tools/call throughput, concurrency {concurrency}", s, "calls/s",
                            "unsigned calls/s", u, ">= 0.9",
                            {"calls_per_round": config.e2e_calls, "rounds": config.e2e_rounds})
                    )  # fmt: skip

        asyncio.run(main())

        # The middleware's own cost, in process, on requests signed exactly as the client signs them.
        verify_run = AgentRun(
            agent=agent,
            issuer=user,
            purpose="benchmark",
            capabilities=["mcp.echo"],
            endpoint=signed_url,
            ledger=Path(tmp) / "verify.jsonl",
            durability="none",
        )
        count = max(50, config.e2e_calls * 2)
        requests = _signed_requests(verify_run, signed_url, count + 20)
        verify_run.close()
        for request in requests[:20]:  # warm-up
            assert not hasattr(middleware.verifier.check(request), "error")
        samples = []
        for request in requests[20:]:
            start = time.perf_counter_ns()
            result = middleware.verifier.check(request)
            samples.append((time.perf_counter_ns() - start) / 1000)
            if hasattr(result, "error"):
                raise RuntimeError("the middleware rejected a correctly signed request")
        cost = statistics.median(samples)
        rows.append(
            Row("2", "middleware verifier.check per request (in process)", cost, "µs/request",
                "unsigned round trip at concurrency 1 (µs)", latency_c1, "", {"requests": count})
        )  # fmt: skip
    return rows
