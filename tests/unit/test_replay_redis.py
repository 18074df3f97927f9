"""RedisReplayStore against a real redis-server (fixture ``redis_server``): atomic, namespaced,
expiring, fail-closed."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from mcpclient_auth.errors import ConfigurationError, ReplayDetected, ReplayStoreFull, ReplayStoreUnavailable
from mcpclient_auth.replay import ReplayClaim, ReplayStore
from mcpclient_auth.replay_redis import DEFAULT_PREFIX, RedisReplayStore
from tests.support.redis_server import RedisServer


def command(server: RedisServer, *args: str) -> bytes:
    """One raw RESP command (so the checks do not go through the code under test)."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as conn:
        conn.sendall(payload.encode())
        time.sleep(0.05)
        return conn.recv(65536)


def nonce(value: str, ttl: float = 60, partition: str = "thumb-a") -> ReplayClaim:
    return ReplayClaim.for_nonce(partition, value, time.time() + ttl)


def test_claims_are_set_nx_with_expiry_under_the_prefix(redis_server: RedisServer) -> None:
    store = RedisReplayStore(redis_server.url, clock_margin=0)  # exact TTLs; the margin is tested below
    assert isinstance(store, ReplayStore)
    claim = nonce("n-1", ttl=30)
    store.claim([claim])
    key = f"{DEFAULT_PREFIX}thumb-a:{claim.key}"
    assert command(redis_server, "EXISTS", key) == b":1\r\n"
    ttl_ms = int(command(redis_server, "PTTL", key)[1:].strip())
    assert 25_000 < ttl_ms <= 30_000
    with pytest.raises(ReplayDetected) as info:
        store.claim([claim])
    assert info.value.details["kind"] == "nonce"
    # Another key's identical nonce is another id; an already-expired id is not stored.
    store.claim([nonce("n-1", partition="thumb-b")])
    store.claim([nonce("old", ttl=-1)])
    assert command(redis_server, "DBSIZE") == b":2\r\n"
    store.close()


def test_a_worker_whose_clock_runs_ahead_cannot_shorten_the_window_elsewhere(
    redis_server: RedisServer,
) -> None:
    # Worker A's clock is 30 s ahead. Without a margin its ids lived 30 s less in Redis than a
    # correct-clock worker keeps accepting them: a replay window at that worker.
    store = RedisReplayStore(redis_server.url)  # default margin: the verifier's default skew (60 s)
    real = time.time()
    claim = ReplayClaim.for_nonce("thumb-a", "ahead", real + 120)
    store.claim([claim], now=real + 30)
    ttl_ms = int(command(redis_server, "PTTL", f"{DEFAULT_PREFIX}thumb-a:{claim.key}")[1:].strip())
    assert ttl_ms / 1000 >= claim.expires_at - time.time()
    # An id A already considers expired (its clock is 30 s ahead of the expiry) is still stored.
    late = ReplayClaim.for_nonce("thumb-a", "late", real)
    store.claim([late], now=real + 30)
    with pytest.raises(ReplayDetected):
        store.claim([late], now=real)
    with pytest.raises(ConfigurationError):
        RedisReplayStore(redis_server.url, clock_margin=-1)
    store.close()


def test_a_refused_batch_may_burn_its_new_ids_but_never_accepts_one_twice(redis_server: RedisServer) -> None:
    # What the protocol promises for a non-transactional store (ReplayStore docstring): fail closed.
    store = RedisReplayStore(redis_server.url)
    used_ect = ReplayClaim.for_ect("thumb-a", "jti-1", "run", time.time() + 600)
    fresh_nonce = nonce("fresh")
    store.claim([used_ect])
    with pytest.raises(ReplayDetected):
        store.claim([fresh_nonce, used_ect])
    with pytest.raises(ReplayDetected):  # burnt, not accepted later
        store.claim([fresh_nonce])
    store.close()


def test_threads_racing_on_one_id_let_exactly_one_through(redis_server: RedisServer) -> None:
    store = RedisReplayStore(redis_server.url)
    claims = [nonce(f"race-{i}") for i in range(50)]
    barrier = threading.Barrier(6)
    wins: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=10)
        for i, claim in enumerate(claims):
            try:
                store.claim([claim])
            except ReplayDetected:
                continue
            with lock:
                wins.append(i)

    pool = [threading.Thread(target=worker) for _ in range(6)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=30)
    assert sorted(wins) == list(range(50))


async def test_aclaim_races_on_the_event_loop(redis_server: RedisServer) -> None:
    store = RedisReplayStore(redis_server.url)
    claim = nonce("async-once")

    async def attempt() -> bool:
        try:
            await store.aclaim([claim])
        except ReplayDetected:
            return False
        return True

    results = await asyncio.gather(*(attempt() for _ in range(10)))
    assert results.count(True) == 1
    # The sync and async clients see the same store.
    with pytest.raises(ReplayDetected):
        store.claim([claim])
    await store.aclose()


async def test_unreachable_redis_fails_closed_fast_without_leaking_the_url(redis_server: RedisServer) -> None:
    url = redis_server.url.replace("redis://", "redis://:hunter2-secret@")
    store = RedisReplayStore(url, timeout=0.2)
    assert "hunter2" not in repr(store)
    redis_server.stop()
    started = time.monotonic()
    with pytest.raises(ReplayStoreUnavailable) as info:
        store.claim([nonce("down")])
    assert time.monotonic() - started < 5  # generous: one 0.2 s connect, no retries
    assert info.value.code == "replay_store_unavailable" and info.value.retry_after == 1
    assert "hunter2" not in str(info.value) and "127.0.0.1" not in str(info.value)
    with pytest.raises(ReplayStoreUnavailable):
        await store.aclaim([nonce("down")])
    redis_server.start()
    store.claim([nonce("back")])  # reconnects once the server is back
    await store.aclaim([nonce("back-async")])


def test_out_of_memory_is_replay_store_full(redis_server: RedisServer) -> None:
    store = RedisReplayStore(redis_server.url)
    assert command(redis_server, "CONFIG", "SET", "maxmemory", "1") == b"+OK\r\n"
    try:
        with pytest.raises(ReplayStoreFull) as info:
            store.claim([nonce("no-room")])
        assert info.value.code == "replay_store_full" and info.value.retryable
    finally:
        command(redis_server, "CONFIG", "SET", "maxmemory", "0")
    store.claim([nonce("room")])


def test_needs_a_url_or_a_client() -> None:
    with pytest.raises(ConfigurationError):
        RedisReplayStore()
    with pytest.raises(ConfigurationError):
        RedisReplayStore("redis://127.0.0.1:1/0", timeout=0)



async def test_the_documented_acl_is_enough(redis_server: RedisServer) -> None:
    # docs/production.md: server workers need only SET on the replay prefix.
    reply = command(
        redis_server, "ACL", "SETUSER", "replay", "on", ">pw-replay", "resetkeys",
        f"~{DEFAULT_PREFIX}*", "-@all", "+set",
    )  # fmt: skip
    assert reply == b"+OK\r\n"
    store = RedisReplayStore(redis_server.url.replace("redis://", "redis://replay:pw-replay@"))
    store.claim([nonce("acl-sync")])
    await store.aclaim([nonce("acl-async")])
    with pytest.raises(ReplayDetected):
        await store.aclaim([nonce("acl-async")])
    # Outside the prefix the same user is refused: fail closed, not a silent pass.
    other = RedisReplayStore(
        redis_server.url.replace("redis://", "redis://replay:pw-replay@"), prefix="elsewhere:"
    )
    with pytest.raises(ReplayStoreUnavailable):
        other.claim([nonce("outside")])
    command(redis_server, "ACL", "DELUSER", "replay")


async def test_a_hung_redis_times_out_fast_and_fails_closed(redis_server: RedisServer) -> None:
    import os
    import signal

    store = RedisReplayStore(redis_server.url, timeout=0.2)
    store.claim([nonce("warm")])
    await store.aclaim([nonce("warm-async")])
    process = redis_server._process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        for attempt in ("sync", "async"):
            started = time.monotonic()
            with pytest.raises(ReplayStoreUnavailable):
                if attempt == "sync":
                    store.claim([nonce("hung")])
                else:
                    await store.aclaim([nonce("hung-async")])
            assert time.monotonic() - started < 5  # generous: 0.2 s socket timeout, no retries
    finally:
        os.kill(process.pid, signal.SIGCONT)
    store.claim([nonce("after")])
