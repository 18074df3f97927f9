"""Shared pieces for the reliability suite (issue 9): an MCP server in its own process, scale knobs.

    with server_process(trust) as server:           # FastMCP + verifying guard, another process
        ... calls to server.url ...
        server.stats()                               # what the server saw (verified, rejected, ...)

The load test runs the server in a separate process so client and server each get a core (the
project's CI has two), and so the client process's memory is the SDK's alone.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from mcpclient_auth.keys import TrustStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STATS_PATH = "/_stats"


def env_int(name: str, default: int) -> int:
    """A scale knob: ``MCPCA_<NAME>`` from the environment, else the issue's number."""
    value = os.environ.get(f"MCPCA_{name}")
    return int(value) if value else default


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class TokenBindingCheck:
    """Outer ASGI middleware: counts requests whose bearer token is not the mandate issuer's.

    Every user ``u`` holds the token ``tok-<u>``; the mandate (verified by the inner guard) names the
    user as ``iss``. A request carrying one user's mandate with another user's token is *cross-user*.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], counters: dict[str, int]) -> None:
        self.app = app
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == STATS_PATH:
            body = json.dumps(self.counters).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http":
            from mcpclient_auth.act import Mandate

            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            mandate = headers.get("act-mandate")
            authorization = headers.get("authorization")
            if mandate is None or authorization is None:
                self.counters["missing_token"] += 1
            elif authorization != f"Bearer tok-{Mandate.decode(mandate).iss}":
                self.counters["cross_user"] += 1
            else:
                self.counters["bound"] += 1
        await self.app(scope, receive, send)


def _serve_in_process(jwks: dict[str, Any], ready: Any, stop: Any) -> None:
    """A multiprocessing target: the stateless JSON FastMCP app behind the guard, until ``stop``."""
    import logging

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Mount

    from tests.support.mcp_app import Guard, GuardState, build_mcp
    from tests.support.servers import serve

    logging.disable(logging.CRITICAL)
    state = GuardState(TrustStore.from_jwks(jwks))
    counters = {"bound": 0, "cross_user": 0, "missing_token": 0, "verified_ects": 0, "rejected": 0}
    mcp_app = build_mcp().http_app(path="/mcp", json_response=True, stateless_http=True)
    inner = Starlette(
        routes=[Mount("/", app=mcp_app)],
        middleware=[Middleware(Guard, state=state)],
        lifespan=mcp_app.lifespan,
    )

    class _Counting(TokenBindingCheck):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            counters["verified_ects"] = state.verified_ects
            counters["rejected"] = state.rejected
            # The guard keeps every request it saw: drop them, the counters are what we report.
            state.requests.clear()
            await super().__call__(scope, receive, send)

    with serve(_Counting(inner, counters), backlog=4096) as base:
        state.audience = f"{base}/mcp"
        ready.send(base)
        stop.wait(600)


@dataclass
class ServerProcess:
    base: str

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(self.base + STATS_PATH, timeout=10).json())


@contextmanager
def server_process(trust: TrustStore) -> Iterator[ServerProcess]:
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    stop = ctx.Event()
    process = ctx.Process(target=_serve_in_process, args=(trust.to_jwks(), sender, stop), daemon=True)
    process.start()
    try:
        if not receiver.poll(60):
            raise RuntimeError("the server process did not start")
        yield ServerProcess(receiver.recv())
    finally:
        stop.set()
        process.join(timeout=15)
        if process.is_alive():  # pragma: no cover - never hang the suite
            process.kill()
            process.join(timeout=5)
