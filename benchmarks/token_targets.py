"""Target 3: token cache — hit latency, and 1,000 concurrent callers on one cold key.

    python -m benchmarks --only 3

Hit: ``await TokenExchange.get_token(principal)`` with the token cached, against the baseline of
awaiting a coroutine that only looks a key up in a dict (the least an async cache can cost).
Cold key: a real RFC 8693 token endpoint (``tests.support.idp.IdP``, own process) on 127.0.0.1; one exchange on a
fresh source is the baseline; then ``concurrent_callers`` ``get_token`` calls on another fresh source
are gathered at once — they must cause exactly one token request and finish within 1.3x the single
exchange. The two alternate in order from round to round, and each sample starts from a collected heap.

Shared cache hit (issue #17): the same ``get_token`` with a :class:`RedisTokenStore` behind the cache
(a real ``redis-server`` on 127.0.0.1), once with the in-process layer in front (a hit never leaves
the process) and once with ``local=False`` (every call reads and decrypts the Redis entry), each as a
ratio to the in-process hit measured in the same rounds.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from mcpclient_auth.authz import AccessToken, RedisTokenStore, TokenCache, TokenExchange
from mcpclient_auth.authz.redis_store import generate_encryption_key
from mcpclient_auth.principal import Principal

from ._common import Config, Row

__all__ = ["token_cache"]


def _source(url: str, cache: TokenCache | None = None) -> TokenExchange:
    return TokenExchange(
        url, client_id="agent", client_secret="s3cret", audience="api://mcp", scopes=["mcp.read"], cache=cache
    )


async def _hit_us(config: Config) -> tuple[float, float]:
    source = _source("http://127.0.0.1:9/token")  # never contacted: the cache is pre-filled
    principal = Principal(id="alice", subject_token="alice-sso-token")
    key = source._key(principal, None, None)
    source.cache.put(key, AccessToken("issued", expires_at=time.time() + 3600, scopes=frozenset(key.scopes)))
    table = {key: "issued"}

    async def baseline() -> str:
        return table[key]

    calls = 2000 if config.quick else 20_000
    hits, bases = [], []
    clock = time.perf_counter_ns
    for _ in range(config.rounds + 1):  # first round is warm-up
        start = clock()
        for _ in range(calls):
            await source.get_token(principal)
        hits.append((clock() - start) / calls / 1000)
        start = clock()
        for _ in range(calls):
            await baseline()
        bases.append((clock() - start) / calls / 1000)
    return statistics.median(hits[1:]), statistics.median(bases[1:])


async def _shared_hit_us(config: Config, redis_url: str) -> tuple[float, float, float]:
    """Median µs per hit: (in-process, Redis + in-process layer, Redis only), interleaved rounds."""
    principal = Principal(id="alice", subject_token="alice-sso-token")
    store = RedisTokenStore(redis_url, encryption_key=generate_encryption_key())
    plain = _source("http://127.0.0.1:9/token")  # never contacted: the entries are pre-filled
    layered = _source("http://127.0.0.1:9/token", TokenCache(store=store))
    remote = _source("http://127.0.0.1:9/token", TokenCache(store=store, local=False))
    key = plain._key(principal, None, None)
    issued = AccessToken("issued", expires_at=time.time() + 3600, scopes=frozenset(key.scopes))
    plain.cache.put(key, issued)

    async def issue() -> AccessToken:
        return issued

    await store.fetch(key, issue, fresh_until=remote.cache.fresh_until)  # into Redis, encrypted
    for source in (layered, remote):  # both read it from Redis: no request
        if (await source.get_token(principal)).token != "issued":
            raise RuntimeError("the shared store did not return the stored token")

    local_calls = 2000 if config.quick else 20_000
    remote_calls = 200 if config.quick else 2000
    clock = time.perf_counter_ns
    samples: dict[str, list[float]] = {"plain": [], "layered": [], "remote": []}
    runs = [("plain", plain, local_calls), ("layered", layered, local_calls), ("remote", remote, remote_calls)]
    for round_ in range(config.rounds + 1):  # first round is warm-up
        # Alternate which in-process hit goes first: on a busy machine the order alone shows up.
        for name, source, calls in runs if round_ % 2 else [runs[1], runs[0], runs[2]]:
            start = clock()
            for _ in range(calls):
                await source.get_token(principal)
            samples[name].append((clock() - start) / calls / 1000)
    await store.aclose()
    plain_us, layered_us, remote_us = (statistics.median(samples[n][1:]) for n in ("plain", "layered", "remote"))
    return plain_us, layered_us, remote_us


def _shared_rows(config: Config) -> list[Row]:
    from tests.support.redis_server import RedisServer, redis_binary

    binary = redis_binary()
    if binary is None:
        print("  redis-server not installed: shared token cache rows skipped", file=sys.stderr)
        return []
    server = RedisServer(binary).start()
    try:
        plain, layered, remote = asyncio.run(_shared_hit_us(config, server.url))
    finally:
        server.close()
    note = {"store": "RedisTokenStore, AES-256-GCM, redis-server on 127.0.0.1"}
    return [
        Row("3", "shared token cache hit, Redis + in-process layer", layered, "µs",
            "in-process token cache hit (µs)", plain, "", note),
        Row("3", "shared token cache hit, Redis only (local=False)", remote, "µs",
            "in-process token cache hit (µs)", plain, "", note),
    ]  # fmt: skip


@contextmanager
def _idp_process() -> Iterator[str]:
    """Start :mod:`benchmarks._idp_server` on a free port; yield its base URL; stop it."""
    from tests.support.servers import free_port

    port = free_port()
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._idp_server", str(port)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/count", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark token endpoint did not start") from None
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait(timeout=5)


def _count(base: str) -> int:
    return int(httpx.get(f"{base}/count", timeout=5).json()["count"])


def token_cache(config: Config) -> list[Row]:
    hit, base = asyncio.run(_hit_us(config))
    rows = [
        Row("3", "token cache hit (get_token)", hit, "µs", "await of a dict lookup", base, "",
            {"absolute_goal": "<= 5 µs", "absolute_ok": hit <= 5.0}),
    ]  # fmt: skip
    with _idp_process() as base_url:
        token_url = f"{base_url}/token"
        principal = Principal(id="alice", subject_token="alice-sso-token")

        async def single() -> float:
            source = _source(token_url)
            gc.collect()  # see crowd()
            start = time.perf_counter()
            await source.get_token(principal)
            elapsed = time.perf_counter() - start
            await source.aclose()
            return elapsed

        async def crowd() -> tuple[float, int]:
            source = _source(token_url)
            before = _count(base_url)
            # Both sides start from a collected heap: otherwise whichever sample happens to trigger
            # a full collection of this (large) process pays 10-40 ms for garbage it did not make.
            # Young-generation collections during the sample still count (the crowd makes them).
            gc.collect()
            start = time.perf_counter()
            tokens = await asyncio.gather(
                *(source.get_token(principal) for _ in range(config.concurrent_callers))
            )
            elapsed = time.perf_counter() - start
            if len({t.token for t in tokens}) != 1:
                raise RuntimeError("concurrent callers got different tokens")
            await source.aclose()
            return elapsed, _count(base_url) - before

        async def floor() -> float:
            """What asyncio alone costs for the crowd: the same gather of callers, each awaiting one
            shared future (no cache, no request) — the part of the crowd no token cache can remove."""
            shared: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            async def caller() -> None:
                await shared

            gc.collect()
            start = time.perf_counter()
            gathered = asyncio.gather(*(caller() for _ in range(config.concurrent_callers)))
            asyncio.get_running_loop().call_soon(shared.set_result, None)  # after every caller's first step
            await gathered
            return time.perf_counter() - start

        async def main() -> tuple[list[float], list[float], list[int]]:
            await single()  # warm-up (connection set-up paths, imports)
            singles, crowds, requests = [], [], []
            for round_ in range(config.rounds):
                floors.append(await floor())
                if round_ % 2:  # alternate which side goes first: a drifting load hits both alike
                    elapsed, count = await crowd()
                    singles.append(await single())
                else:
                    singles.append(await single())
                    elapsed, count = await crowd()
                crowds.append(elapsed)
                requests.append(count)
            return singles, crowds, requests

        floors: list[float] = []
        singles, crowds, requests = asyncio.run(main())
    rows.append(
        Row("3", f"{config.concurrent_callers} concurrent callers, one cold key", statistics.median(crowds) * 1e3,
            "ms", "one token exchange (ms)", statistics.median(singles) * 1e3, "<= 1.3",
            {"token_requests_per_crowd": max(requests), "one_request": all(r == 1 for r in requests),
             "token_endpoint": "tests.support.idp.IdP in a separate process",
             "asyncio_gather_floor_ms": statistics.median(floors) * 1e3,
             "crowd_minus_exchange_ms": (statistics.median(crowds) - statistics.median(singles)) * 1e3})
    )  # fmt: skip
    rows.extend(_shared_rows(config))
    return rows
