"""Target 7 (issue 13): what a shared Redis replay store costs per verified request.

    python -m benchmarks --only 7

The same requests (signed exactly as the hooks sign them) are verified by two ``McpRequestVerifier``
objects that differ only in their replay store: a :class:`~mcpclient_auth.replay.MemoryReplayStore`
(the baseline) and a :class:`~mcpclient_auth.replay_redis.RedisReplayStore` on a real
``redis-server`` on 127.0.0.1 (started here, as the tests start it). Each request is verified the
way the middleware does it: ``check_unclaimed`` and then ``await acommit`` (one pipelined round trip
with two ``SET NX PX``). Rounds alternate memory and Redis on disjoint slices of the requests, so both
sides see the same machine load. Reported: µs per verified request with Redis ÷ with memory, and the
claim alone (two ids) with Redis ÷ with memory. Loopback Redis: a networked Redis adds its RTT.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.replay import MemoryReplayStore, ReplayClaim, ReplayStore
from mcpclient_auth.replay_redis import RedisReplayStore
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import McpRequestVerifier, PendingRequest, VerifiedRequest
from mcpclient_auth.server.verify import IncomingRequest

from ._common import Config, Row
from .e2e_targets import _signed_requests

__all__ = ["replay_store_cost"]

_URL = "http://127.0.0.1:9/mcp"  # never contacted: the requests are verified in process


async def _verify_all(verifier: McpRequestVerifier, requests: list[IncomingRequest]) -> float:
    """Median µs per request of check_unclaimed + acommit (the middleware's path)."""
    samples = []
    clock = time.perf_counter_ns
    for request in requests:
        start = clock()
        pending = verifier.check_unclaimed(request)
        if not isinstance(pending, PendingRequest):
            raise RuntimeError(f"a correctly signed request was refused: {pending.error.code}")
        verified = await verifier.acommit(pending)
        samples.append((clock() - start) / 1000)
        if not isinstance(verified, VerifiedRequest):
            raise RuntimeError(f"a fresh request was refused at commit: {verified.error.code}")
    return statistics.median(samples)


async def _claims_only(store: ReplayStore, count: int) -> float:
    samples = []
    clock = time.perf_counter_ns
    expires = time.time() + 120
    for i in range(count):
        claims = [
            ReplayClaim.for_nonce("bench-key", f"n-{time.time_ns()}-{i}", expires),
            ReplayClaim.for_ect("bench-key", f"j-{time.time_ns()}-{i}", "run", expires),
        ]
        start = clock()
        await store.aclaim(claims)
        samples.append((clock() - start) / 1000)
    return statistics.median(samples)


def replay_store_cost(config: Config) -> list[Row]:
    from tests.support.redis_server import RedisServer, redis_binary  # the tests' real server helper

    binary = redis_binary()
    if binary is None:
        print("target 7 skipped: redis-server is not installed", file=sys.stderr)
        return []
    user, agent = Identity.generate("ES256", name="alice"), Identity.generate("ES256", name="agent")
    trust = TrustStore([user, agent])
    per_round = max(20, config.e2e_calls)
    rounds = max(2, config.rounds)
    server = RedisServer(binary).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = AgentRun(
                agent=agent,
                issuer=user,
                purpose="benchmark",
                capabilities=["mcp.echo"],
                endpoint=_URL,
                ledger=Path(tmp) / "replay.jsonl",
                durability="none",
            )
            requests = _signed_requests(run, _URL, 40 + 2 * rounds * per_round)
            run.close_sync()
        memory_store = MemoryReplayStore()
        redis_store = RedisReplayStore(server.url)
        memory = McpRequestVerifier(trust, audience=_URL, replay_store=memory_store)
        shared = McpRequestVerifier(trust, audience=_URL, replay_store=redis_store)

        async def main() -> tuple[float, float, float, float]:
            # Warm-up (mandate cache, connection, code paths), excluded.
            await _verify_all(memory, requests[:20])
            await _verify_all(shared, requests[20:40])
            rest = requests[40:]
            memory_us, redis_us = [], []
            for r in range(rounds):
                chunk = rest[2 * r * per_round : (2 * r + 2) * per_round]
                memory_us.append(await _verify_all(memory, chunk[:per_round]))
                redis_us.append(await _verify_all(shared, chunk[per_round:]))
            claim_memory = await _claims_only(memory_store, per_round * 2)
            claim_redis = await _claims_only(redis_store, per_round * 2)
            await redis_store.aclose()
            return (
                statistics.median(memory_us),
                statistics.median(redis_us),
                claim_memory,
                claim_redis,
            )

        memory_us, redis_us, claim_memory, claim_redis = asyncio.run(main())
    finally:
        server.close()
    extra = {"requests_per_round": per_round, "rounds": rounds, "redis": "redis-server on 127.0.0.1"}
    return [
        Row("7", "verified request, Redis replay store (check + acommit)", redis_us, "µs/request",
            "same requests, in-memory store (µs)", memory_us, "", extra),
        Row("7", "replay claim of 2 ids (aclaim), Redis round trip", claim_redis, "µs/claim",
            "in-memory aclaim (µs)", claim_memory, "", extra),
    ]  # fmt: skip
