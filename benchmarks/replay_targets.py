"""Target 7 (issue 13): what a shared Redis replay store costs per verified request.

    python -m benchmarks --only 7

The same requests (signed exactly as the hooks sign them) are verified by two ``McpRequestVerifier``
objects that differ only in their replay store: a :class:`~mcpclient_auth.replay.MemoryReplayStore`
(the baseline) and a :class:`~mcpclient_auth.replay_redis.RedisReplayStore` on a real
``redis-server`` on 127.0.0.1 (started here, as the tests start it). Each request is verified the
way the middleware does it: ``check_unclaimed`` and then ``await acommit`` (one pipelined round trip
with two ``SET NX PX``). Rounds alternate memory and Redis on disjoint slices of the requests, so both
sides see the same machine load. Reported, each as Redis ÷ memory: the CPU time this process spends
per verified request (robust to other load on the machine: it is what the server pays), the wall
time per request (median; includes waiting for redis-server, which on a busy machine waits for a
core), and the claim alone (two ids). Loopback Redis: a networked Redis adds its RTT to the latency,
not to the CPU figure.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mcpclient_auth.keys import Identity
from mcpclient_auth.replay import MemoryReplayStore, ReplayClaim, ReplayStore
from mcpclient_auth.replay_redis import RedisReplayStore
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import McpRequestVerifier, PendingRequest, VerifiedRequest
from mcpclient_auth.server.verify import IncomingRequest

from ._common import Config, Row
from .e2e_targets import _signed_requests

__all__ = ["replay_store_cost"]

_URL = "http://127.0.0.1:9/mcp"  # never contacted: the requests are verified in process


async def _verify_all(verifier: McpRequestVerifier, requests: list[IncomingRequest]) -> tuple[float, float]:
    """Median wall µs per request of check_unclaimed + acommit (the middleware's path), and the mean
    CPU µs per request of this process (what the server pays, whatever else runs on the machine)."""
    samples = []
    clock = time.perf_counter_ns
    cpu_start = time.process_time_ns()
    for request in requests:
        start = clock()
        pending = verifier.check_unclaimed(request)
        if not isinstance(pending, PendingRequest):
            raise RuntimeError(f"a correctly signed request was refused: {pending.error.code}")
        verified = await verifier.acommit(pending)
        samples.append((clock() - start) / 1000)
        if not isinstance(verified, VerifiedRequest):
            raise RuntimeError(f"a fresh request was refused at commit: {verified.error.code}")
    cpu = (time.process_time_ns() - cpu_start) / len(requests) / 1000
    return statistics.median(samples), cpu


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
    from tests.support.trust import trust_for  # trust roles set the way the tests set them

    binary = redis_binary()
    if binary is None:
        print("target 7 skipped: redis-server is not installed", file=sys.stderr)
        return []
    user, agent = Identity.generate("ES256", name="alice"), Identity.generate("ES256", name="agent")
    trust = trust_for(issuers=[user], agents=[agent])
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
            run.close()
        memory_store = MemoryReplayStore()
        redis_store = RedisReplayStore(server.url)
        memory = McpRequestVerifier(trust, audience=_URL, replay_store=memory_store)
        shared = McpRequestVerifier(trust, audience=_URL, replay_store=redis_store)

        async def main() -> dict[str, float]:
            # Warm-up (mandate cache, connection, code paths), excluded.
            await _verify_all(memory, requests[:20])
            await _verify_all(shared, requests[20:40])
            rest = requests[40:]
            wall: dict[str, list[float]] = {"memory": [], "redis": []}
            cpu: dict[str, list[float]] = {"memory": [], "redis": []}
            for r in range(rounds):
                chunk = rest[2 * r * per_round : (2 * r + 2) * per_round]
                for name, verifier, part in (
                    ("memory", memory, chunk[:per_round]),
                    ("redis", shared, chunk[per_round:]),
                ):
                    w, c = await _verify_all(verifier, part)
                    wall[name].append(w)
                    cpu[name].append(c)
            claim_memory = await _claims_only(memory_store, per_round * 2)
            claim_redis = await _claims_only(redis_store, per_round * 2)
            await redis_store.aclose()
            return {
                "memory_wall": statistics.median(wall["memory"]),
                "redis_wall": statistics.median(wall["redis"]),
                "memory_cpu": statistics.median(cpu["memory"]),
                "redis_cpu": statistics.median(cpu["redis"]),
                "claim_memory": claim_memory,
                "claim_redis": claim_redis,
            }

        figures = asyncio.run(main())
    finally:
        server.close()
    extra = {
        "requests_per_round": per_round,
        "rounds": rounds,
        "redis": "redis-server on 127.0.0.1",
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    return [
        Row("7", "CPU per verified request, Redis replay store", figures["redis_cpu"], "µs/request",
            "same requests, in-memory store (CPU µs)", figures["memory_cpu"], "", extra),
        Row("7", "latency per verified request, Redis (check + acommit)", figures["redis_wall"], "µs/request",
            "same requests, in-memory store (µs)", figures["memory_wall"], "", extra),
        Row("7", "replay claim of 2 ids (aclaim), Redis round trip", figures["claim_redis"], "µs/claim",
            "in-memory aclaim (µs)", figures["claim_memory"], "", extra),
    ]  # fmt: skip
