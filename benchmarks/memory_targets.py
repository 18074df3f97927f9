"""Target 5: memory — RSS growth over a 10,000-call run, and the caches that must stay bounded.

    python -m benchmarks --only 5

The run drives ``memory_calls`` ``tools/call`` round trips through the run's own httpx client (hooks,
ECT, signature, ``ect`` + ``response`` ledger lines) with an in-process transport answering at once.
RSS (``/proc/self/statm``) is read after a 500-call warm-up and at the end; the figure is the growth
against the 50 MB budget. ``tracemalloc`` runs over the measured calls too (it slows them; RSS is
read outside it) and reports the Python heap still live at the end, which a pre-grown allocator
arena cannot hide. The suite runs this target first, before anything else grows the heap. The caches: the run's frontier after the run, a ``ReplayCache`` fed ten times
its ``max_entries`` fresh ids, a ``TokenCache`` fed ten times its ``max_entries`` keys.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path

from mcpclient_auth.authz import AccessToken
from mcpclient_auth.authz.cache import CacheKey, TokenCache
from mcpclient_auth.errors import ReplayStoreFull
from mcpclient_auth.replay import ReplayCache

from ._common import Config, Row, rss_bytes
from .hook_targets import _run, drive_calls

__all__ = ["memory"]

_BUDGET = 50 * 1024 * 1024
_WARMUP = 500


def memory(config: Config) -> list[Row]:
    marks: dict[str, int] = {}

    def mark(i: int) -> None:
        if i == _WARMUP - 1:
            gc.collect()
            marks["start"] = rss_bytes()
            tracemalloc.start()

    async def main() -> int:
        with tempfile.TemporaryDirectory() as tmp:
            run = _run(Path(tmp), "memory")
            async with run:
                await drive_calls(run, config.memory_calls + _WARMUP, on_call=mark)
                gc.collect()
                marks["end"] = rss_bytes()
                marks["traced"] = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
                return len(run.frontier.current())

    frontier = asyncio.run(main())
    growth = marks["end"] - marks["start"]

    replay = ReplayCache(max_entries=1000)
    later = time.time() + 3600
    refused = 0
    for i in range(10_000):
        try:  # a full replay store refuses (issue 13) rather than forgetting a live id
            replay.check_and_store(f"id-{i}", later, scope="run")
        except ReplayStoreFull:
            refused += 1
    tokens = TokenCache(max_entries=100)
    for i in range(1000):
        key = CacheKey(
            "http://127.0.0.1/token",
            "exchange",
            "agent",
            f"user-{i}",
            f"s{i}",
            None,
            ("api://mcp",),
            (),
            ("mcp.read",),
        )
        tokens.put(key, AccessToken(f"t{i}", expires_at=later, scopes=frozenset({"mcp.read"})))
    extra = {
        "calls": config.memory_calls,
        "python_heap_growth_mb": round(marks["traced"] / 2**20, 3),  # tracemalloc, live at the end
        "rss_start_mb": round(marks["start"] / 2**20, 1),
        "frontier_after_run": frontier,
        "replay_cache_len_after_10x": len(replay),
        "replay_cache_max": replay.max_entries,
        "replay_cache_refused": refused,
        "token_cache_len_after_10x": len(tokens),
        "token_cache_max": tokens.max_entries,
        "bounded": frontier <= 100
        and len(replay) <= replay.max_entries
        and len(tokens) <= tokens.max_entries,
    }
    return [
        Row("5", f"RSS growth over {config.memory_calls:,} calls", growth / 2**20, "MB", "budget (MB)",
            _BUDGET / 2**20, "<= 1.0", extra),
    ]  # fmt: skip
