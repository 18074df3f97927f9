"""Sync clients' token work (``authz/_blocking.py``) and the cache's single-flight across loops, without
a network: a token factory that counts its calls and waits for the test to let it finish."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mcpclient_auth._context import blocked_loop
from mcpclient_auth.authz import AccessToken
from mcpclient_auth.authz._blocking import run_blocking, token_loop
from mcpclient_auth.authz.cache import CacheKey, TokenCache
from mcpclient_auth.errors import TokenExchangeRejected, TokenExchangeUnavailable

KEY = CacheKey("https://idp.example/token", "g", "c", "alice", None, None, (), (), ())
GUARD = 20.0  # seconds: a deadlock fails the test instead of hanging it


class Factory:
    """Counts calls; each call waits until :attr:`release` is set (thread-safe)."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.started = threading.Event()

    async def __call__(self) -> AccessToken:
        self.calls += 1
        self.started.set()
        while not self.release.is_set():
            await asyncio.sleep(0.005)
        return AccessToken(f"tok-{self.calls}", scopes={"mcp.read"})


def test_run_blocking_runs_on_the_token_loop_and_returns_the_result() -> None:
    async def where() -> tuple[int | None, object]:
        return threading.get_ident(), blocked_loop()

    ident, blocked = run_blocking(where, timeout=GUARD)
    assert ident != threading.get_ident() and blocked is None  # no loop runs in this thread
    assert token_loop().is_running()


def test_run_blocking_re_raises_the_typed_error() -> None:
    async def refused() -> None:
        raise TokenExchangeRejected("no", error="invalid_grant")

    with pytest.raises(TokenExchangeRejected):
        run_blocking(refused, timeout=GUARD)


def test_a_timeout_cancels_the_work_and_fails_closed() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TokenExchangeUnavailable) as info:
        run_blocking(forever, timeout=0.05)
    assert info.value.retryable is True
    assert cancelled.wait(GUARD)  # the work did not go on in the background


async def test_a_sync_caller_joins_an_async_callers_request_in_flight() -> None:
    cache, factory = TokenCache(), Factory()
    first = asyncio.ensure_future(cache.fetch(KEY, factory))
    await asyncio.to_thread(factory.started.wait, GUARD)
    # a sync client's token work, waiting in a worker thread (this loop keeps running)
    joined = asyncio.ensure_future(asyncio.to_thread(run_blocking, lambda: cache.fetch(KEY, factory), timeout=GUARD))
    await asyncio.sleep(0.05)
    factory.release.set()
    tokens = await asyncio.wait_for(asyncio.gather(first, joined), GUARD)
    assert factory.calls == 1 and tokens[0] is tokens[1]


async def test_an_async_caller_joins_a_sync_callers_request_in_flight() -> None:
    cache, factory = TokenCache(), Factory()
    sync = asyncio.ensure_future(asyncio.to_thread(run_blocking, lambda: cache.fetch(KEY, factory), timeout=GUARD))
    await asyncio.to_thread(factory.started.wait, GUARD)
    joined = asyncio.ensure_future(cache.fetch(KEY, factory))
    await asyncio.sleep(0.05)
    factory.release.set()
    tokens = await asyncio.wait_for(asyncio.gather(sync, joined), GUARD)
    assert factory.calls == 1 and tokens[0] is tokens[1]


async def test_a_sync_caller_blocking_the_loop_never_waits_for_that_loops_request() -> None:
    """A sync client used on an event loop's own thread blocks that loop: joining the request in flight
    there could never finish. It starts its own request instead (and the first one completes later)."""
    cache, factory = TokenCache(), Factory()
    first = asyncio.ensure_future(cache.fetch(KEY, factory))
    await asyncio.to_thread(factory.started.wait, GUARD)
    second = Factory()
    second.release.set()
    # called right here, on this loop's thread: the loop is blocked until run_blocking returns
    own = run_blocking(lambda: cache.fetch(KEY, second), timeout=GUARD)
    assert second.calls == 1 and own.token == "tok-1"
    factory.release.set()
    assert (await asyncio.wait_for(first, GUARD)).token == "tok-1"
    assert factory.calls == 1


def test_two_blocked_loops_never_wait_for_each_others_requests() -> None:
    """Two threads, each running an event loop with a token request in flight, each use a sync client
    that needs the key in flight on the *other* loop. Neither loop can progress while its thread waits,
    so the token loop must not join either request: each sync wait runs its own request and returns
    (before the fix both joined the other's request and waited until the timeout)."""
    cache = TokenCache()
    keys = {name: CacheKey("https://idp.example/token", "g", "c", name, None, None, (), (), ()) for name in "ab"}
    both_in_flight = threading.Barrier(2, timeout=GUARD)
    outcomes: dict[str, str] = {}

    def worker(mine: str, theirs: str) -> None:
        async def flight() -> AccessToken:
            await asyncio.sleep(1.0)  # an IdP round trip on this loop: needs this loop to run
            return AccessToken(f"loop-{mine}", scopes={"mcp.read"})

        async def sync_request() -> AccessToken:
            return AccessToken(f"sync-{theirs}", scopes={"mcp.read"})

        async def main() -> None:
            in_flight = asyncio.ensure_future(cache.fetch(keys[mine], flight))
            await asyncio.sleep(0)  # the request is now in flight on this loop
            both_in_flight.wait()
            try:  # a sync client on this loop's thread: the loop is blocked until this returns
                outcomes[mine] = run_blocking(lambda: cache.fetch(keys[theirs], sync_request), timeout=8).token
            except TokenExchangeUnavailable as exc:
                outcomes[mine] = f"timed out: {exc.code}"
            await in_flight

        asyncio.run(main())

    threads = [threading.Thread(target=worker, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GUARD)
    assert not any(thread.is_alive() for thread in threads)
    # Each got the other key's token — from its own request, or from the other loop's request when it
    # joined that before the other thread blocked (then that loop was free to finish it) — and
    # neither waited for the timeout.
    assert outcomes["a"] in {"sync-b", "loop-b"} and outcomes["b"] in {"sync-a", "loop-a"}, outcomes
