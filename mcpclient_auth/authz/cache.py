"""A bounded token cache with single-flight fetching, shared by the token sources.

    cache = TokenCache(max_entries=10_000, skew=30)
    key = CacheKey(endpoint, grant, client_id, principal.id, principal.subject_digest, ...)
    token = cache.get(key)                      # fast path: no await, no lock
    if token is None:
        token = await cache.fetch(key, lambda: request_token(...))   # one request per key at a time
        token = await cache.join(key, request_token, ...)             # the same, without a closure

Entries live ``expires_in - skew`` seconds and are evicted least-recently-used beyond
``max_entries``. Concurrent misses on one key share one in-flight request; when it fails, every
waiter sees the same error and nothing is cached, so the next call tries again. Keys hold the
SHA-256 digest of the subject token, never the token.

A hit needs no lock: the dict operations are single C-level calls on an ``OrderedDict``. Misses may
come from several event loops (an async client's loop, and the token loop where sync clients' token
work runs, :mod:`~mcpclient_auth.authz._blocking`): a miss joins the request in flight for its key on
*any* loop that is running, except a loop whose thread is blocked waiting for sync token work (its own
caller's, or any other thread's: that request could not finish before the wait ends, and two such
waits could wait for each other), so single-flight holds across sync and async callers. A lock
guards only the choice "join or start" of a miss.

Behind the in-process entries sits a :class:`TokenStore`: where a miss goes. The default,
:class:`InProcessTokenStore`, calls the token endpoint directly (nothing is shared beyond this
process). :class:`~mcpclient_auth.authz.redis_store.RedisTokenStore` shares tokens between agent worker
processes (encrypted, one fetch per key across the fleet); the in-process entries then act as a local
layer in front of Redis with the same expiry, so a hit still never leaves the process:

    cache = TokenCache(store=RedisTokenStore(url, encryption_key=key))
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol, runtime_checkable

from .. import _telemetry
from .._context import blocked_loop
from ..errors import ConfigurationError, TokenExchangeUnavailable
from ._blocking import is_blocked
from .base import DEFAULT_SKEW, AccessToken

__all__ = [
    "ANY_TOKEN",
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_UNKNOWN_EXPIRY_TTL",
    "CacheKey",
    "InProcessTokenStore",
    "TokenCache",
    "TokenFactory",
    "TokenStore",
]

DEFAULT_MAX_ENTRIES = 10_000
#: How long to keep a token whose issuer did not send ``expires_in`` (RFC 6749 makes it optional).
#: Short, because we cannot know when it dies; a 401 invalidates it earlier anyway.
DEFAULT_UNKNOWN_EXPIRY_TTL = 300.0


class CacheKey(NamedTuple):
    """Everything that makes two token requests different (DESIGN §4, plus client and actor).

    ``principal`` is the principal id (``None`` for service tokens); ``subject`` and ``actor`` are
    :func:`~mcpclient_auth.principal.token_digest` values, never tokens. The token types (RFC 8693)
    are part of the request too: a source asking for an ID-JAG must never be handed an access token
    another source cached for the same user, audience and scopes. ``dpop`` is the RFC 7638
    thumbprint of the DPoP key a token is bound to (RFC 9449; ``None``: a bearer token): a bound token
    is never handed to a bearer caller or to a caller proving with another key, and the reverse.
    """

    endpoint: str
    grant: str
    client: str | None
    principal: str | None
    subject: str | None
    actor: str | None
    audience: tuple[str, ...]
    resource: tuple[str, ...]
    scopes: tuple[str, ...]
    requested_token_type: str | None = None
    subject_token_type: str | None = None
    actor_token_type: str | None = None
    dpop: str | None = None

    def bound_to(self, jkt: str | None) -> CacheKey:
        """This key for a token bound to the DPoP key with thumbprint ``jkt`` (``None``: bearer)."""
        return self._replace(dpop=jkt)


#: What a miss runs to get a fresh token from the token endpoint.
TokenFactory = Callable[[], Awaitable[AccessToken]]

#: ``stale=ANY_TOKEN``: whatever token a shared store holds for the key must not be reused.
#: (Fingerprints are base64url, so ``"*"`` never collides with one.)
ANY_TOKEN = "*"


@runtime_checkable
class TokenStore(Protocol):
    """Where a :class:`TokenCache` miss goes: the tier behind the cache's in-process entries.

    ``fetch`` returns ``(token, fresh_until)``: a token for ``key`` that is fresh (by
    ``fresh_until(token)``, epoch seconds) -- one the store already holds, or one it got by awaiting
    ``factory()`` (at most once per call). ``stale`` is the fingerprint of a token the caller saw
    rejected (or :data:`ANY_TOKEN`): the store must not hand that one out again. ``shared`` says whether
    tokens outlive this process (then :meth:`TokenCache.invalidate` tells the store about rejections).
    Failures are typed :class:`~mcpclient_auth.errors.AuthorizationError` subclasses; a store never
    returns a token for another key, an expired one, or one marked ``stale``.
    """

    @property
    def shared(self) -> bool: ...

    async def fetch(
        self,
        key: CacheKey,
        factory: TokenFactory,
        *,
        fresh_until: Callable[[AccessToken], float],
        stale: str | None = None,
    ) -> tuple[AccessToken, float]: ...

    async def aclose(self) -> None: ...


class InProcessTokenStore:
    """The default store: nothing beyond the cache's own entries; a miss asks the token endpoint."""

    __slots__ = ()

    @property
    def shared(self) -> bool:
        return False

    async def fetch(
        self,
        key: CacheKey,
        factory: TokenFactory,
        *,
        fresh_until: Callable[[AccessToken], float],
        stale: str | None = None,
    ) -> tuple[AccessToken, float]:
        token = await factory()
        return token, fresh_until(token)

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return "InProcessTokenStore()"


_IN_PROCESS = InProcessTokenStore()


class TokenCache:
    """LRU + TTL cache of :class:`AccessToken` with single-flight misses.

    ``clock`` (epoch seconds) is injectable so tests can expire entries without sleeping; sources
    compute ``expires_at`` with the same clock.

    ``store`` is where misses go (default: :class:`InProcessTokenStore`). With a shared store,
    ``local=False`` turns the in-process entries off, so every ``get_token`` asks the store (a token
    invalidated by one worker then disappears for all at once, at the price of a round trip per call).
    """

    __slots__ = (
        "_clock",
        "_detached",
        "_entries",
        "_flight_lock",
        "_flights",
        "_local",
        "_skew",
        "_stale",
        "_store",
        "_unknown_ttl",
        "max_entries",
    )

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        skew: float = DEFAULT_SKEW,
        unknown_expiry_ttl: float = DEFAULT_UNKNOWN_EXPIRY_TTL,
        clock: Callable[[], float] = time.time,
        store: TokenStore | None = None,
        local: bool = True,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if skew < 0 or unknown_expiry_ttl < 0:
            raise ValueError("skew and unknown_expiry_ttl must not be negative")
        if store is not None and not isinstance(store, TokenStore):
            raise ConfigurationError("store must implement the TokenStore protocol")
        self._store: TokenStore = _IN_PROCESS if store is None else store
        if not local and not self._store.shared:
            raise ConfigurationError("local=False needs a shared store: otherwise nothing would be cached")
        self._local = bool(local)
        self.max_entries = max_entries
        self._skew = float(skew)
        self._unknown_ttl = float(unknown_expiry_ttl)
        self._clock = clock
        # key -> (token, fresh_until). Tuples, not objects: the hit path reads two slots.
        self._entries: OrderedDict[CacheKey, tuple[AccessToken, float]] = OrderedDict()
        # key -> (the running request, the fingerprint it told the store to refuse, its waiters).
        self._flights: dict[CacheKey, _Flight] = {}
        self._flight_lock = threading.Lock()
        # Flights an invalidation made too old to join (they may bring back the token just rejected);
        # they finish for the callers already waiting on them but store nothing here.
        self._detached: set[asyncio.Task[AccessToken]] = set()
        # key -> fingerprint (or ANY_TOKEN) of a token invalidated here that a shared store may still
        # hold; the next miss on the key tells the store, so the fleet does not hand it out again.
        self._stale: dict[CacheKey, str] = {}

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def store(self) -> TokenStore:
        """Where misses go (:class:`InProcessTokenStore` unless one was given)."""
        return self._store

    @property
    def local(self) -> bool:
        """Whether fresh tokens are kept in this process (the hit path)."""
        return self._local

    @property
    def skew(self) -> float:
        return self._skew

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def in_flight(self) -> int:
        """How many requests are running now."""
        return len(self._flights)

    # --- hit path ---------------------------------------------------------------------------------

    def get(self, key: CacheKey) -> AccessToken | None:
        """The cached token if it is still fresh, else ``None`` (an expired entry is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            self._drop(key, entry)
            return None
        # KeyError: dropped concurrently by another thread; the token itself is still fresh.
        with contextlib.suppress(KeyError):
            self._entries.move_to_end(key)
        return entry[0]

    # --- miss path --------------------------------------------------------------------------------

    async def fetch(self, key: CacheKey, factory: Callable[[], Awaitable[AccessToken]]) -> AccessToken:
        """Return ``get(key)`` or run ``factory()`` once for all concurrent callers of this key.

        The request runs in its own task, so a caller that is cancelled does not cancel it for the
        others. Failures propagate to every waiter and are never cached.
        """
        token = self.get(key)
        if token is not None:
            return token
        return await self.join(key, factory)

    def join(
        self, key: CacheKey, factory: Callable[..., Awaitable[AccessToken]], *args: object
    ) -> Awaitable[AccessToken]:
        """:meth:`fetch` without its coroutine: what to await for ``key`` — the cached token, or this
        caller's own future on the one request in flight (``factory(*args)`` starts it if none is).

            token = await cache.join(key, self._request, key, principal)

        For 1,000 callers on a cold key, each joining caller costs one future here: no coroutine
        frame of ``fetch`` and no closure over the factory's arguments (the factory runs once, so
        its arguments are bound only then). The semantics are :meth:`fetch`'s.
        """
        token = self.get(key)
        loop = asyncio.get_running_loop()
        if token is not None:
            done: asyncio.Future[AccessToken] = loop.create_future()
            done.set_result(token)
            return done
        _telemetry.token_miss(self._store.shared)  # marks the token span, if any
        with self._flight_lock:
            flight = self._flights.get(key)
            if flight is None or not _joinable(flight[0], loop):
                stale = self._stale.pop(key, None)
                start = functools.partial(factory, *args) if args else factory
                task = loop.create_task(self._run(key, _telemetry.fetching(start), stale))
                waiters: list[asyncio.Future[AccessToken]] = []
                # One callback settles every waiter (a shield per caller would schedule one callback,
                # and two closures, per caller: 1,000 callers on a cold key pay that 1,000 times).
                task.add_done_callback(functools.partial(_settle, waiters))
                flight = self._flights[key] = (task, stale, waiters)
        if flight[0].get_loop() is not loop:
            return _join_elsewhere(flight[0])  # a sync caller's request, or one on another loop
        # Each caller awaits its own future, never the task: a cancelled caller cancels only its
        # future, and the request goes on for the others (what asyncio.shield gave, per caller).
        if flight[0].done():  # pragma: no cover - a finished flight has left _flights already
            return flight[0]
        waiter: asyncio.Future[AccessToken] = loop.create_future()
        flight[2].append(waiter)
        return waiter

    async def _run(
        self, key: CacheKey, factory: Callable[[], Awaitable[AccessToken]], stale: str | None
    ) -> AccessToken:
        me = asyncio.current_task()
        try:
            token, fresh_until = await self._store.fetch(
                key, factory, fresh_until=self.fresh_until, stale=stale
            )
            if me not in self._detached:
                self._put(key, token, fresh_until)
            return token
        except BaseException:
            if stale is not None and key not in self._stale:  # not settled: the next try refuses it too
                self._mark_stale(key, stale)
            raise
        finally:
            self._detached.discard(me)
            with self._flight_lock:
                flight = self._flights.get(key)
                if flight is not None and flight[0] is me:
                    del self._flights[key]

    def fresh_until(self, token: AccessToken) -> float:
        """Until when ``token`` may be reused (epoch seconds): ``expires_at - skew``, or now + the
        unknown-expiry TTL when the issuer did not say."""
        expires_at = token.expires_at
        return self._clock() + self._unknown_ttl if expires_at is None else expires_at - self._skew

    def put(self, key: CacheKey, token: AccessToken) -> None:
        """Store ``token`` until ``expires_at - skew`` (or the unknown-expiry TTL); LRU-evict.

        Only this process's entries: a shared store is written by :meth:`fetch` alone.
        """
        self._put(key, token, self.fresh_until(token))

    def _put(self, key: CacheKey, token: AccessToken, fresh_until: float) -> None:
        if not self._local or fresh_until <= self._clock():
            return  # too short-lived to reuse: hand it to the waiting callers only
        entries = self._entries
        entries[key] = (token, fresh_until)
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            try:
                entries.popitem(last=False)
            except KeyError:  # pragma: no cover - emptied concurrently
                break

    # --- invalidation -----------------------------------------------------------------------------

    def invalidate(self, key: CacheKey, *, token: AccessToken | None = None) -> bool:
        """Forget ``key`` (only if it still holds ``token``, when given). True when something went.

        In-flight requests are left alone with the in-process store: what they return was issued after
        the token being invalidated, and dropping them would let a burst of 401s start a burst of
        requests.

        With a shared store, the next miss on ``key`` also tells the store not to hand out the
        invalidated token (``token``, else the one this process held, else whatever the store holds).
        A flight started before this call may be reading that very token from the store, so it is
        not joined any more (unless it already refuses the same token): the next miss starts a new
        one, and what the old one returns is not cached here.
        """
        entry = self._entries.get(key)
        if self._store.shared:
            rejected: str | None = None
            if entry is None:
                rejected = token.fingerprint if token is not None else ANY_TOKEN
            elif token is None or entry[0].token == token.token:
                rejected = entry[0].fingerprint
            if rejected is not None:
                self._mark_stale(key, rejected)
                with self._flight_lock:
                    flight = self._flights.get(key)
                    if flight is not None and flight[1] not in (rejected, ANY_TOKEN):
                        del self._flights[key]
                        self._detached.add(flight[0])
        if entry is None:
            return False
        if token is not None and entry[0].token != token.token:
            return False
        return self._drop(key, entry)

    def clear(self) -> None:
        """Forget every entry here (in-flight requests still complete and store their result).

        A shared store keeps its entries: they expire there, or :meth:`invalidate` marks them.
        """
        self._entries.clear()

    def _mark_stale(self, key: CacheKey, fingerprint: str) -> None:
        stale = self._stale
        stale.pop(key, None)
        stale[key] = fingerprint
        while len(stale) > self.max_entries:  # bounded like the entries: oldest marks go first
            del stale[next(iter(stale))]

    def _drop(self, key: CacheKey, entry: tuple[AccessToken, float]) -> bool:
        # Only drop the entry we looked at; a fresher one may have replaced it meanwhile.
        if self._entries.get(key) is entry:
            try:
                del self._entries[key]
            except KeyError:  # pragma: no cover - dropped concurrently
                return False
            return True
        return False

    def __repr__(self) -> str:
        shared = f", store={self._store!r}, local={self._local}" if self._store.shared else ""
        return (
            f"TokenCache(entries={len(self._entries)}, max_entries={self.max_entries}, "
            f"in_flight={len(self._flights)}, skew={self._skew}{shared})"
        )


#: A request in flight: its task, the fingerprint it told the store to refuse, the callers' futures.
_Flight = tuple["asyncio.Task[AccessToken]", "str | None", "list[asyncio.Future[AccessToken]]"]


def _settle(waiters: list[asyncio.Future[AccessToken]], task: asyncio.Task[AccessToken]) -> None:
    """Hand the flight's outcome to every caller still waiting (cancelled callers are skipped).

    Retrieving the exception here also keeps asyncio from logging "Task exception was never
    retrieved" when every waiter was cancelled."""
    if task.cancelled():
        for waiter in waiters:
            if not waiter.done():
                waiter.cancel()
        return
    error = task.exception()
    for waiter in waiters:
        if waiter.done():
            continue
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(task.result())
    waiters.clear()


def _joinable(task: asyncio.Task[AccessToken], loop: asyncio.AbstractEventLoop) -> bool:
    """May a miss on ``loop`` wait for ``task``? Yes on the same loop; on another loop only while it
    runs and its thread is not blocked waiting for sync token work — neither the waiting caller's
    own (:func:`~mcpclient_auth._context.blocked_loop`: that request could never finish) nor any
    other thread's (:func:`~._blocking.is_blocked`: two threads each needing the key in flight on
    the other's loop would wait for each other until the timeout)."""
    other = task.get_loop()
    if other is loop:
        return True
    return (
        other.is_running()
        and not other.is_closed()
        and other is not blocked_loop()
        and not is_blocked(other)
    )


async def _join_elsewhere(task: asyncio.Task[AccessToken]) -> AccessToken:
    """Wait on this loop for a request in flight on another loop (thread-safe hand-over)."""
    outcome: concurrent.futures.Future[AccessToken] = concurrent.futures.Future()

    def copy(done: asyncio.Task[AccessToken]) -> None:
        if outcome.cancelled():  # the caller stopped waiting (cancelled, or its wait timed out)
            return
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled just now
            if done.cancelled():  # its loop shut down: no token from it, try again later
                outcome.set_exception(
                    TokenExchangeUnavailable("the token request was cancelled with its loop", retryable=True)
                )
            elif (exc := done.exception()) is not None:
                outcome.set_exception(exc)
            else:
                outcome.set_result(done.result())

    try:
        task.get_loop().call_soon_threadsafe(task.add_done_callback, copy)
    except RuntimeError:  # that loop closed meanwhile
        raise TokenExchangeUnavailable(
            "the token request's event loop closed before it finished", retryable=True
        ) from None
    return await asyncio.wrap_future(outcome)
