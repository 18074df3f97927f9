"""Per-request cost of the verifying middleware, in process: ``McpAuthMiddleware.__call__`` end to end.

    python benchmarks/server_middleware.py [--calls 200] [--rounds 5] [--cold] [--cprofile out.prof]

Requests are signed before timing exactly as the client signs them (``RunHooks.on_request``: 1 KB
``search`` call, mandate, ECT, RFC 9421 signature, Content-Digest), on one MCP session the middleware
bound, and go through the whole middleware — pre-auth screen, body read, signature, tokens, policy,
replay claim, session and in-flight checks, the audit ledger line — to a trivial app. ``--cold``
sweeps 8 MB of memory between requests (in situ the mcp server's own work evicts the caches between
two calls, and the middleware's code and data come back cold). Prints the median thread-CPU µs per
request of each round and their median; ``--cprofile`` adds the Python function calls per request
(load-independent). Issue #16, round 4 (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx

from mcpclient_auth._hooks import RunHooks
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import McpAuthMiddleware

URL = "http://127.0.0.1:8123/mcp"
QUERY = "x" * 1000
RESPONSE = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}],"isError":false}}'
Message = MutableMapping[str, Any]
Raw = list[tuple[bytes, bytes]]


async def _app(scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Message]], send: Any) -> None:
    """Reads the body, answers one JSON-RPC result; opens session ``s1`` on a request without one."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(RESPONSE)).encode())]
    if all(name != b"mcp-session-id" for name, _ in scope["headers"]):
        headers.append((b"mcp-session-id", b"s1"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": RESPONSE, "more_body": False})


class _Bench:
    def __init__(self, tmp: Path) -> None:
        user, agent = Identity.generate("ES256", name="alice"), Identity.generate("ES256", name="agent")
        trust = TrustStore()
        trust.add_issuer(user)
        trust.add_agent(agent)
        self.middleware = McpAuthMiddleware(_app, trust=trust, audience=URL, ledger=tmp / "server.jsonl")
        self.run = AgentRun(
            agent=agent, issuer=user, purpose="bench", capabilities=["mcp.search"], endpoint=URL,
            ledger=tmp / "client.jsonl", durability="none",
        )  # fmt: skip
        self.hooks = RunHooks(self.run)

    async def sign(self, i: int, session: bool) -> tuple[Raw, bytes]:
        body = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"search","arguments":' % i
        body += b'{"query":"' + QUERY.encode() + b'"}}}'
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
                   "mcp-protocol-version": "2025-06-18"}  # fmt: skip
        if session:
            headers["mcp-session-id"] = "s1"
        request = httpx.Request("POST", URL, content=body, headers=headers)
        await self.hooks.on_request(request)
        return [(name.lower(), value) for name, value in request.headers.raw], request.content

    async def call(self, raw: Raw, body: bytes) -> int:
        scope = {"type": "http", "method": "POST", "path": "/mcp", "raw_path": b"/mcp", "query_string": b"",
                 "scheme": "http", "server": ("127.0.0.1", 8123), "headers": raw, "http_version": "1.1"}  # fmt: skip
        delivered = False
        status: list[int] = []

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await self.middleware(scope, receive, send)
        return status[0]


async def _measure(args: argparse.Namespace, tmp: Path) -> None:
    bench = _Bench(tmp)
    junk = bytearray(os.urandom(8 << 20)) if args.cold else bytearray()
    async with bench.run:
        if await bench.call(*await bench.sign(0, False)) != 200:  # opens and binds session s1
            raise RuntimeError("the middleware refused the session's first request")
        requests = [await bench.sign(i + 1, True) for i in range(args.calls * args.rounds + 20)]
        for request in requests[:20]:
            if await bench.call(*request) != 200:
                raise RuntimeError("the middleware refused a correctly signed request")
        profile = cProfile.Profile() if args.cprofile else None
        medians = []
        for k in range(args.rounds):
            samples = []
            for request in requests[20 + k * args.calls : 20 + (k + 1) * args.calls]:
                for i in range(0, len(junk), 64):  # --cold: touch every cache line of 8 MB
                    junk[i] = (junk[i] + 1) & 255
                if profile is not None:
                    profile.enable()
                start = time.thread_time_ns()
                status = await bench.call(*request)
                samples.append((time.thread_time_ns() - start) / 1000)
                if profile is not None:
                    profile.disable()
                if status != 200:
                    raise RuntimeError(f"the middleware answered {status} to a correctly signed request")
            medians.append(statistics.median(samples))
    mode = "cold" if args.cold else "warm"
    rounds = " ".join(f"{m:.0f}" for m in medians)
    print(f"{mode}: median {statistics.median(medians):.1f} µs CPU per request (rounds: {rounds})")
    if profile is not None:
        profile.dump_stats(args.cprofile)
        calls = sum(entry[1] for entry in pstats.Stats(args.cprofile).stats.values())  # type: ignore[attr-defined]
        print(f"Python function calls per request: {calls / (args.calls * args.rounds):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="sweep 8 MB of memory between requests")
    parser.add_argument("--cprofile", help="also profile the requests (cProfile) and write the stats here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        asyncio.run(_measure(args, Path(name)))


if __name__ == "__main__":
    main()
