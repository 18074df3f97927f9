"""replay: the bounded TTL set of seen ids."""

from __future__ import annotations

import threading

import pytest

from mcpclient_auth.errors import ConfigurationError, ReplayDetected, ReplayStoreFull
from mcpclient_auth.replay import MemoryReplayStore, ReplayCache, ReplayClaim, ReplayStore

T = 1_000_000.0


def test_second_use_within_the_window_is_a_replay() -> None:
    cache = ReplayCache()
    cache.check_and_store("a", T + 10, now=T)
    with pytest.raises(ReplayDetected) as info:
        cache.check_and_store("a", T + 10, now=T + 5)
    assert info.value.code == "replay_detected"
    cache.check_and_store("b", T + 10, now=T)
    assert len(cache) == 2


def test_scopes_are_separate() -> None:
    cache = ReplayCache()
    cache.check_and_store("jti", T + 10, scope="run-1", now=T)
    cache.check_and_store("jti", T + 10, scope="run-2", now=T)
    cache.check_and_store("jti", T + 10, now=T)
    with pytest.raises(ReplayDetected):
        cache.check_and_store("jti", T + 10, scope="run-2", now=T)


def test_entries_expire() -> None:
    cache = ReplayCache()
    cache.check_and_store("a", T + 10, now=T)
    assert cache.seen("a", now=T + 9.9)
    assert not cache.seen("a", now=T + 10)
    assert len(cache) == 0
    cache.check_and_store("a", T + 30, now=T + 20)  # accepted again once forgotten


def test_already_expired_ids_are_not_stored() -> None:
    cache = ReplayCache()
    cache.check_and_store("old", T - 1, now=T)
    assert len(cache) == 0


def test_full_cache_refuses_instead_of_forgetting_a_live_id() -> None:
    # Until issue 13 a full cache evicted the soonest-expiring id: a flood could push a captured id out.
    cache = ReplayCache(max_entries=3)
    cache.check_and_store("late", T + 300, now=T)
    cache.check_and_store("soon", T + 10, now=T)
    cache.check_and_store("mid", T + 100, now=T)
    with pytest.raises(ReplayStoreFull) as info:
        cache.check_and_store("new", T + 200, now=T)
    assert info.value.code == "replay_store_full" and info.value.retry_after == 10
    assert len(cache) == 3
    assert all(cache.seen(k, now=T) for k in ("late", "soon", "mid"))
    with pytest.raises(ReplayDetected):
        cache.check_and_store("soon", T + 10, now=T + 1)
    # Room comes back as ids expire.
    cache.check_and_store("new", T + 200, now=T + 10)


def test_bounded_under_many_inserts() -> None:
    cache = ReplayCache(max_entries=50)
    refused = 0
    for i in range(1_000):
        try:
            cache.check_and_store(f"k{i}", T + 1_000 + (i * 7919) % 500, now=T + i / 10)
        except ReplayStoreFull:
            refused += 1
        assert len(cache) <= 50
    assert refused == 950
    # Heap, dict and per-partition counts stay in step: expiring everything leaves nothing behind.
    assert not cache.seen("k0", now=T + 10_000)
    assert len(cache) == 0 and cache._heap == [] and cache._counts == {}


def test_clear_and_repr() -> None:
    cache = ReplayCache(max_entries=10)
    cache.check_and_store("secret-jti", T + 10, now=T)
    assert "secret-jti" not in repr(cache) and "1/10" in repr(cache)
    cache.clear()
    assert len(cache) == 0
    cache.check_and_store("secret-jti", T + 10, now=T)


def test_needs_room() -> None:
    with pytest.raises(ConfigurationError):
        ReplayCache(max_entries=0)


def test_threads_racing_on_one_id_let_exactly_one_through() -> None:
    cache = ReplayCache()
    barrier = threading.Barrier(8)
    wins: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        barrier.wait(timeout=10)
        for i in range(200):
            try:
                cache.check_and_store(f"id-{i}", T + 60, now=T)
            except ReplayDetected:
                continue
            with lock:
                wins.append(f"{name}:{i}")

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert len(wins) == 200
    assert sorted(int(w.split(":")[1]) for w in wins) == list(range(200))


# --- MemoryReplayStore: partitioned, all-or-nothing, refuses when full ----------------------------------


def nonce(partition: str, value: str, ttl: float = 60) -> ReplayClaim:
    return ReplayClaim.for_nonce(partition, value, T + ttl)


def test_store_is_a_replay_store_and_claims_hash_their_ids() -> None:
    assert isinstance(MemoryReplayStore(), ReplayStore) and isinstance(ReplayCache(), ReplayStore)
    long_id = "x" * 10_000
    claim = ReplayClaim.for_nonce("key-a", long_id, T + 1)
    assert long_id not in claim.key and len(claim.key) < 40
    assert ReplayClaim.for_ect("k", "jti", "run-1", T).key != ReplayClaim.for_ect("k", "jti", "run-2", T).key
    assert ReplayClaim.for_ect("k", "a", None, T).key != ReplayClaim.for_nonce("k", "\x00a", T).key


def test_one_key_flooding_fills_only_its_own_share() -> None:
    store = MemoryReplayStore(max_entries=100, max_entries_per_key=10)
    store.claim([nonce("victim", "captured")], now=T)
    for i in range(10):
        store.claim([nonce("flooder", f"n{i}")], now=T)
    with pytest.raises(ReplayStoreFull) as info:
        store.claim([nonce("flooder", "one-more")], now=T)
    assert info.value.retryable and info.value.retry_after is not None
    assert store.entries_for("flooder") == 10
    # The victim's id is still there (a replay is refused) and the victim can go on.
    with pytest.raises(ReplayDetected) as replay:
        store.claim([nonce("victim", "captured")], now=T)
    assert replay.value.details["kind"] == "nonce"
    store.claim([nonce("victim", "next")], now=T)


def test_total_bound_refuses_too() -> None:
    store = MemoryReplayStore(max_entries=4, max_entries_per_key=3)
    store.claim([nonce("a", "1"), nonce("a", "2")], now=T)
    store.claim([nonce("b", "1"), nonce("b", "2")], now=T)
    with pytest.raises(ReplayStoreFull):
        store.claim([nonce("c", "1")], now=T)
    assert len(store) == 4 and "4/4 entries" in repr(store)


def test_a_batch_is_all_or_nothing() -> None:
    store = MemoryReplayStore()
    store.claim([nonce("k", "used")], now=T)
    fresh = nonce("k", "fresh")
    with pytest.raises(ReplayDetected):
        store.claim([fresh, nonce("k", "used")], now=T)
    assert not store.contains(fresh, now=T)  # nothing of a refused batch was stored
    full = MemoryReplayStore(max_entries=2, max_entries_per_key=2)
    full.claim([nonce("k", "1")], now=T)
    with pytest.raises(ReplayStoreFull):
        full.claim([nonce("k", "2"), nonce("k", "3")], now=T)
    assert len(full) == 1


def test_expired_claims_are_accepted_but_not_stored() -> None:
    store = MemoryReplayStore()
    store.claim([ReplayClaim.for_nonce("k", "old", T - 1)], now=T)
    assert len(store) == 0


async def test_aclaim_is_the_same_store() -> None:
    store = MemoryReplayStore()
    await store.aclaim([nonce("k", "a")], now=T)
    with pytest.raises(ReplayDetected):
        store.claim([nonce("k", "a")], now=T)


def test_store_needs_room() -> None:
    with pytest.raises(ConfigurationError):
        MemoryReplayStore(max_entries=0)
    with pytest.raises(ConfigurationError):
        MemoryReplayStore(max_entries=10, max_entries_per_key=0)
