"""replay: the bounded TTL set of seen ids."""

from __future__ import annotations

import threading

import pytest

from mcpclient_auth.errors import ConfigurationError, ReplayDetected
from mcpclient_auth.replay import ReplayCache

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


def test_full_cache_evicts_the_soonest_expiring() -> None:
    cache = ReplayCache(max_entries=3)
    cache.check_and_store("late", T + 300, now=T)
    cache.check_and_store("soon", T + 10, now=T)
    cache.check_and_store("mid", T + 100, now=T)
    cache.check_and_store("new", T + 200, now=T)
    assert len(cache) == 3
    assert not cache.seen("soon", now=T)
    assert all(cache.seen(k, now=T) for k in ("late", "mid", "new"))


def test_bounded_under_many_inserts() -> None:
    cache = ReplayCache(max_entries=50)
    for i in range(1_000):
        cache.check_and_store(f"k{i}", T + 1_000 + (i * 7919) % 500, now=T + i / 10)
        assert len(cache) <= 50
    # Heap and dict stay in step: expiring everything leaves nothing behind.
    assert not cache.seen("k0", now=T + 10_000)
    assert len(cache) == 0 and cache._heap == []


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
