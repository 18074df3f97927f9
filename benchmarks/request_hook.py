"""Per-request cost of the run's httpx request hook for a 1 KB ``tools/call`` body.

    python benchmarks/request_hook.py [--calls 5000] [--alg ES256|EdDSA] [--durability none|flush|fsync]

One ``await hooks.on_request(request)`` = body read, JSON-RPC parse, policy + mandate check, ECT mint
(one signature), header overwrite, Content-Digest + RFC 9421 signature (a second signature), and the
``ect`` ledger line (one ``write()`` under ``flock``). Requests are built before timing; no network.
Prints median / p90 / p99 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from mcpclient_auth._hooks import RunHooks
from mcpclient_auth.keys import Identity
from mcpclient_auth.run import AgentRun

URL = "http://127.0.0.1:8000/mcp"
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-session-id": "0f9c5a1e2b3d4c5f",
    "mcp-protocol-version": "2025-06-18",
}


def _body(i: int) -> bytes:
    message = {
        "jsonrpc": "2.0",
        "id": i,
        "method": "tools/call",
        "params": {"name": "search", "arguments": {}},
    }
    filler = 1024 - len(json.dumps(message, separators=(",", ":")))
    message["params"]["arguments"] = {"query": "x" * (filler - len('"query":""'))}  # type: ignore[index]
    return json.dumps(message, separators=(",", ":")).encode()


async def _measure(calls: int, alg: str, durability: str) -> list[float]:
    user = Identity.generate(alg, name="alice")
    agent = Identity.generate(alg, name="agent")
    with tempfile.TemporaryDirectory() as tmp:
        run = AgentRun(
            agent=agent,
            issuer=user,
            purpose="benchmark",
            capabilities=["mcp.search"],
            endpoint=URL,
            ledger=Path(tmp) / "ledger.jsonl",
            durability=durability,
        )
        hooks = RunHooks(run)
        warmup = 200
        requests = [
            httpx.Request("POST", URL, content=_body(i), headers=HEADERS) for i in range(calls + warmup)
        ]
        assert len(requests[0].content) == 1024
        samples: list[float] = []
        clock = time.perf_counter_ns
        for i, request in enumerate(requests):
            start = clock()
            await hooks.on_request(request)
            if i >= warmup:
                samples.append((clock() - start) / 1000)
        run.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--alg", default="ES256", choices=["ES256", "EdDSA"])
    parser.add_argument("--durability", default="flush", choices=["none", "flush", "fsync"])
    args = parser.parse_args()
    samples = sorted(asyncio.run(_measure(args.calls, args.alg, args.durability)))

    def p(q: float) -> float:
        return samples[min(len(samples) - 1, int(len(samples) * q))]

    print(
        f"request hook, 1 KB tools/call, {args.alg}, durability={args.durability}: "
        f"median {statistics.median(samples):.0f} µs, p90 {p(0.90):.0f} µs, p99 {p(0.99):.0f} µs "
        f"({len(samples)} calls)"
    )


if __name__ == "__main__":
    main()
