"""TokenCache: TTL with skew, LRU bound, single-flight, failures never cached (issue [authz])."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from mcpclient_auth.authz import AccessToken, CacheKey, TokenCache
from mcpclient_auth.errors import TokenExchangeUnavailable


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def key(name: str = "alice", scopes: tuple[str, ...] = ("mcp.read",)) -> CacheKey:
    return CacheKey("https://idp/token", "grant", "client", name, f"digest-{name}", None, ("api://mcp",), (), scopes)


def token(value: str, expires_at: float | None) -> AccessToken:
    return AccessToken(value, expires_at=expires_at)


class Counting:
    """A token factory that counts calls and can be held open or made to fail."""

    def __init__(self, clock: FakeClock, *, fail: BaseException | None = None) -> None:
        self.calls = 0
        self.clock = clock
        self.fail = fail
        self.release = asyncio.Event()

    def __call__(self) -> Awaitable[AccessToken]:
        self.calls += 1
        return self._run(self.calls)

    async def _run(self, n: int) -> AccessToken:
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return token(f"tok-{n}", self.clock.now + 3600)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_hit_until_expires_at_minus_skew() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock, skew=30)
    cache.put(key(), token("t", clock.now + 100))
    clock.now += 69.9
    assert cache.get(key()) is not None
    clock.now += 0.1
    assert cache.get(key()) is None
    assert key() not in cache  # the expired entry was dropped, not kept around


def test_unknown_expiry_uses_the_unknown_expiry_ttl() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock, unknown_expiry_ttl=50)
    cache.put(key(), token("t", None))
    clock.now += 49
    assert cache.get(key()) is not None
    clock.now += 1
    assert cache.get(key()) is None


def test_a_token_living_less_than_the_skew_is_not_stored() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock, skew=30)
    cache.put(key(), token("t", clock.now + 30))
    assert len(cache) == 0


def test_lru_bound() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock, max_entries=3)
    for name in ("a", "b", "c"):
        cache.put(key(name), token(name, clock.now + 3600))
    assert cache.get(key("a")) is not None  # "a" is now the most recently used
    cache.put(key("d"), token("d", clock.now + 3600))
    assert len(cache) == 3
    assert key("b") not in cache
    assert all(k in cache for k in (key("a"), key("c"), key("d")))
    for i in range(100):
        cache.put(key(f"u{i}"), token("x", clock.now + 3600))
    assert len(cache) == 3


def test_invalidate_only_the_given_token() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    cache.put(key(), token("new", clock.now + 3600))
    assert cache.invalidate(key(), token=token("old", None)) is False
    assert cache.get(key()) is not None
    assert cache.invalidate(key(), token=token("new", None)) is True
    assert cache.get(key()) is None
    assert cache.invalidate(key()) is False


def test_different_keys_do_not_share_entries() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    cache.put(key("alice"), token("alice-token", clock.now + 3600))
    assert cache.get(key("bob")) is None
    assert cache.get(key("alice", scopes=("mcp.write",))) is None
    assert cache.get(key("alice")) == token("alice-token", clock.now + 3600)


async def test_concurrent_misses_share_one_request() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    factory = Counting(clock)
    tasks = [asyncio.create_task(cache.fetch(key(), factory)) for _ in range(100)]
    await settle()
    assert factory.calls == 1 and cache.in_flight == 1
    factory.release.set()
    results = await asyncio.gather(*tasks)
    assert {t.token for t in results} == {"tok-1"}
    assert cache.in_flight == 0
    assert (await cache.fetch(key(), factory)).token == "tok-1"  # now a hit
    assert factory.calls == 1


async def test_different_keys_fly_separately() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    factory = Counting(clock)
    factory.release.set()
    a, b = await asyncio.gather(cache.fetch(key("a"), factory), cache.fetch(key("b"), factory))
    assert factory.calls == 2 and a.token != b.token


async def test_waiters_of_a_failed_flight_all_get_the_error_and_nothing_is_cached() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    failure = TokenExchangeUnavailable("idp down")
    factory = Counting(clock, fail=failure)
    tasks = [asyncio.create_task(cache.fetch(key(), factory)) for _ in range(20)]
    await settle()
    factory.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert factory.calls == 1
    assert all(r is failure for r in results)
    assert len(cache) == 0 and cache.in_flight == 0
    factory.fail = None  # the next call tries again
    assert (await cache.fetch(key(), factory)).token == "tok-2"
    assert factory.calls == 2


async def test_a_cancelled_waiter_does_not_cancel_the_request_for_the_others() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    factory = Counting(clock)
    leader = asyncio.create_task(cache.fetch(key(), factory))
    follower = asyncio.create_task(cache.fetch(key(), factory))
    await settle()
    leader.cancel()
    await settle()
    assert leader.cancelled()
    factory.release.set()
    assert (await follower).token == "tok-1"
    assert factory.calls == 1
    assert cache.get(key()) is not None


async def test_one_flight_serves_a_crowd_with_some_cancelled_and_late_joiners() -> None:
    """Issue #16: the waiters of a flight are settled by one callback (no shield per caller);
    cancelled callers are skipped, callers joining while it flies get the same token, and a
    cancelled flight cancels its waiters instead of leaving them hanging."""
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    factory = Counting(clock)
    crowd = [asyncio.create_task(cache.fetch(key(), factory)) for _ in range(50)]
    await settle()
    for task in crowd[::5]:
        task.cancel()
    late = [asyncio.create_task(cache.fetch(key(), factory)) for _ in range(10)]
    await settle()
    assert factory.calls == 1 and cache.in_flight == 1
    factory.release.set()
    results = await asyncio.gather(*crowd, *late, return_exceptions=True)
    cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
    assert len(cancelled) == 10
    assert {r.token for r in results if not isinstance(r, BaseException)} == {"tok-1"}
    assert factory.calls == 1

    other = FakeClock()
    stuck = TokenCache(clock=other)
    never = Counting(other)  # never released: the flight is cancelled from outside
    waiters = [asyncio.create_task(stuck.fetch(key(), never)) for _ in range(3)]
    await settle()
    flight = next(iter(stuck._flights.values()))[0]
    flight.cancel()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    assert stuck.in_flight == 0


async def test_join_runs_the_factory_once_with_its_arguments_like_fetch() -> None:
    """Issue #16: the token sources call ``join(key, factory, *args)`` (no closure, no fetch
    coroutine per caller). One request for the crowd, with the first caller's arguments; a cancelled
    caller leaves alone; a failure reaches every waiter and is not cached; a hit runs nothing."""
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    calls: list[tuple[CacheKey, int]] = []
    release = asyncio.Event()
    failure: list[BaseException] = []

    async def request(k: CacheKey, who: int) -> AccessToken:
        calls.append((k, who))
        await release.wait()
        if failure:
            raise failure[0]
        return token(f"tok-{who}", clock.now + 3600)

    async def caller(who: int) -> AccessToken:
        return await cache.join(key(), request, key(), who)

    crowd = [asyncio.create_task(caller(n)) for n in range(30)]
    await settle()
    assert calls == [(key(), 0)] and cache.in_flight == 1
    crowd[3].cancel()
    await settle()
    release.set()
    results = await asyncio.gather(*crowd, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert {r.token for r in results if not isinstance(r, BaseException)} == {"tok-0"}
    assert len([r for r in results if isinstance(r, AccessToken)]) == 29
    assert (await cache.join(key(), request, key(), 99)).token == "tok-0" and len(calls) == 1  # a hit

    cache.invalidate(key())
    release.clear()
    failure.append(TokenExchangeUnavailable("idp down"))
    crowd = [asyncio.create_task(caller(n)) for n in range(10, 20)]
    await settle()
    release.set()
    outcomes = await asyncio.gather(*crowd, return_exceptions=True)
    assert all(o is failure[0] for o in outcomes) and calls[1:] == [(key(), 10)]
    assert len(cache) == 0 and cache.in_flight == 0  # never a stale token, nothing cached


async def test_a_flight_whose_waiters_all_left_still_fills_the_cache() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    factory = Counting(clock)
    waiter = asyncio.create_task(cache.fetch(key(), factory))
    await settle()
    waiter.cancel()
    factory.release.set()
    await settle()
    assert cache.get(key()) is not None and cache.in_flight == 0


async def test_invalidate_does_not_cancel_a_flight() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    factory = Counting(clock)
    first = asyncio.create_task(cache.fetch(key(), factory))
    await settle()
    cache.invalidate(key())
    second = asyncio.create_task(cache.fetch(key(), factory))
    await settle()
    factory.release.set()
    assert (await first).token == (await second).token == "tok-1"
    assert factory.calls == 1


async def test_short_lived_tokens_reach_the_waiters_but_are_not_kept() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock, skew=30)

    def factory() -> Awaitable[AccessToken]:
        async def run() -> AccessToken:
            return token("short", clock.now + 10)

        return run()

    assert (await cache.fetch(key(), factory)).token == "short"
    assert len(cache) == 0


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        TokenCache(max_entries=0)
    with pytest.raises(ValueError):
        TokenCache(skew=-1)


def test_repr_shows_counts_only() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    cache.put(key(), token("SECRET-ACCESS-TOKEN", clock.now + 3600))
    assert "SECRET-ACCESS-TOKEN" not in repr(cache)
    assert "entries=1" in repr(cache)



# --- the store behind the cache (issue #17) --------------------------------------------------------


def test_the_default_store_is_in_process_and_local_false_needs_a_shared_store() -> None:
    from mcpclient_auth.authz import InProcessTokenStore, TokenStore
    from mcpclient_auth.errors import ConfigurationError

    cache = TokenCache()
    assert isinstance(cache.store, InProcessTokenStore) and isinstance(cache.store, TokenStore)
    assert cache.local and not cache.store.shared
    with pytest.raises(ConfigurationError):
        TokenCache(local=False)  # nothing would be cached anywhere
    with pytest.raises(ConfigurationError):
        TokenCache(store=object())  # type: ignore[arg-type]


async def test_the_store_sees_each_miss_and_the_token_invalidated_before_it() -> None:
    """A shared store is told which token a worker saw rejected, once, on the next miss."""

    class RecordingStore:
        shared = True

        def __init__(self) -> None:
            self.stale: list[str | None] = []

        async def fetch(self, key, factory, *, fresh_until, stale=None):  # type: ignore[no-untyped-def]
            self.stale.append(stale)
            token = await factory()
            return token, fresh_until(token)

        async def aclose(self) -> None:
            return None

    clock = FakeClock()
    store = RecordingStore()
    cache = TokenCache(clock=clock, store=store)
    issued = iter(["t1", "t2", "t3"])

    async def factory() -> AccessToken:
        return token(next(issued), clock.now + 3600)

    first = await cache.fetch(key(), factory)
    assert (await cache.fetch(key(), factory)) is first  # a local hit: the store is not asked
    cache.invalidate(key(), token=first)
    second = await cache.fetch(key(), factory)
    cache.invalidate(key())  # no token given: the one held here
    await cache.fetch(key(), factory)
    cache.clear()
    cache.invalidate(key())  # nothing held here: whatever the store holds
    assert store.stale == [None, first.fingerprint, second.fingerprint]
    assert cache._stale == {key(): "*"}
