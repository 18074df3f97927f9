"""Target 9: LangGraph tools on one held MCP session vs a new session per tool call (issue 18).

    python -m benchmarks --only 9

The demo's HR server (FastMCP behind :class:`~mcpclient_auth.server.McpAuthMiddleware`) runs under
uvicorn on 127.0.0.1, wrapped in an ASGI counter of HTTP requests. Each round opens a run, gets its
tools with :func:`~mcpclient_auth.adapters.langchain_mcp_adapters.run_tools` — ``sessions="held"`` or
``"per-call"``, alternating — and calls ``get_office_locations`` ``session_calls`` times in sequence
through langchain-mcp-adapters. Reported per tool call, held ÷ per-call in the same run:

- HTTP requests (POST, the SSE GET and the closing DELETE; session set-up included, spread over the calls);
- ledger entries the calls left (ECTs, responses; without the run's mandate, record and seal);
- latency: the median ``ainvoke`` time of one tool call (set-up excluded on both sides).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from mcpclient_auth.adapters.langchain_mcp_adapters import SessionMode, run_tools
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import Ledger
from mcpclient_auth.run import AgentRun

from ._common import Config, Row

__all__ = ["held_sessions"]

Scope = MutableMapping[str, Any]
ASGI = Callable[[Scope, Any, Any], Awaitable[None]]
_SETUP_KINDS = frozenset({"mandate", "record", "seal"})


class _Counting:
    """ASGI wrapper counting the HTTP requests that reach the app."""

    def __init__(self, app: ASGI) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests += 1
        await self.app(scope, receive, send)


async def _round(
    mode: SessionMode, calls: int, make_run: Callable[[Path], AgentRun], counter: _Counting, tmp: Path
) -> tuple[float, float, float]:
    """(requests per call, ledger entries per call, median µs per call) of one round."""
    path = tmp / f"{mode}-{time.monotonic_ns()}.jsonl"
    before = counter.requests
    latencies: list[float] = []
    async with make_run(path) as run, run_tools(run, sessions=mode) as tools:
        tool = next(t for t in tools if t.name == "get_office_locations")
        for _ in range(calls):
            start = time.perf_counter_ns()
            answer = await tool.ainvoke({})
            latencies.append((time.perf_counter_ns() - start) / 1000)
            if "Lisbon" not in str(answer):
                raise RuntimeError(f"unexpected answer in {mode} mode: {answer!r}")
    await asyncio.sleep(0.05)  # let the closing DELETE reach the counter
    entries = [e for e in Ledger.open(path).entries() if e.kind not in _SETUP_KINDS]
    return (counter.requests - before) / calls, len(entries) / calls, statistics.median(latencies)


def held_sessions(config: Config) -> list[Row]:
    from mcpclient_auth.demo.hr import hr_app
    from mcpclient_auth.demo.serving import free_port, running
    from tests.support.trust import trust_for

    user, agent = Identity.generate("ES256", name="alice"), Identity.generate("ES256", name="agent")
    trust = trust_for(issuers=[user], agents=[agent])
    calls = max(5, config.e2e_calls // 10)
    rounds = max(1, config.e2e_rounds)
    results: dict[str, list[tuple[float, float, float]]] = {"held": [], "per-call": []}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        port = free_port()
        url = f"http://127.0.0.1:{port}/mcp"
        counter = _Counting(hr_app(trust, audience=url))
        with running(counter, port):

            def make_run(path: Path) -> AgentRun:
                return AgentRun(
                    agent=agent,
                    issuer=user,
                    purpose="benchmark",
                    capabilities=["mcp.get_office_locations"],
                    endpoint=url,
                    ledger=path,
                    durability="flush",
                )

            modes: tuple[SessionMode, ...] = ("held", "per-call")

            async def main() -> None:
                for mode in modes:  # warm-up, excluded
                    await _round(mode, 2, make_run, counter, tmp)
                for _ in range(rounds):
                    for mode in modes:
                        results[mode].append(await _round(mode, calls, make_run, counter, tmp))

            asyncio.run(main())

    def median(mode: str, index: int) -> float:
        return statistics.median(sample[index] for sample in results[mode])

    extra = {"tool_calls_per_round": calls, "rounds": rounds}
    baseline = "per-call sessions"
    return [
        Row("9", "held session: HTTP requests per tool call", median("held", 0), "requests/call",
            baseline, median("per-call", 0), "", extra),
        Row("9", "held session: ledger entries per tool call", median("held", 1), "entries/call",
            baseline, median("per-call", 1), "", extra),
        Row("9", "held session: latency per tool call (median)", median("held", 2), "µs/call",
            baseline, median("per-call", 2), "", extra),
    ]  # fmt: skip
