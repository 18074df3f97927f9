"""A bounded token cache with single-flight fetching, shared by the token sources.

    cache = TokenCache(max_entries=10_000, skew=30)
    key = CacheKey(endpoint, grant, client_id, principal.id, principal.subject_digest, ...)
    token = cache.get(key)                      # fast path: no await, no lock
    if token is None:
        token = await cache.fetch(key, lambda: request_token(...))   # one request per key at a time

Entries live ``expires_in - skew`` seconds and are evicted least-recently-used beyond
``max_entries``. Concurrent misses on one key share one in-flight request; when it fails, every
waiter sees the same error and nothing is cached, so the next call tries again. Keys hold the
SHA-256 digest of the subject token, never the token.

The cache belongs to one event loop at a time (like an ``httpx.AsyncClient``). Its dict operations
are single C-level calls on an ``OrderedDict``, so a hit needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from .base import DEFAULT_SKEW, AccessToken

__all__ = ["DEFAULT_MAX_ENTRIES", "DEFAULT_UNKNOWN_EXPIRY_TTL", "CacheKey", "TokenCache"]

DEFAULT_MAX_ENTRIES = 10_000
#: How long to keep a token whose issuer did not send ``expires_in`` (RFC 6749 makes it optional).
#: Short, because we cannot know when it dies; a 401 invalidates it earlier anyway.
DEFAULT_UNKNOWN_EXPIRY_TTL = 300.0


class CacheKey(NamedTuple):
    """Everything that makes two token requests different (DESIGN §4, plus client and actor).

    ``principal`` is the principal id (``None`` for service tokens); ``subject`` and ``actor`` are
    :func:`~mcpclient_auth.principal.token_digest` values, never tokens.
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


class TokenCache:
    """LRU + TTL cache of :class:`AccessToken` with single-flight misses.

    ``clock`` (epoch seconds) is injectable so tests can expire entries without sleeping; sources
    compute ``expires_at`` with the same clock.
    """

    __slots__ = ("_clock", "_entries", "_flights", "_skew", "_unknown_ttl", "max_entries")

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        skew: float = DEFAULT_SKEW,
        unknown_expiry_ttl: float = DEFAULT_UNKNOWN_EXPIRY_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if skew < 0 or unknown_expiry_ttl < 0:
            raise ValueError("skew and unknown_expiry_ttl must not be negative")
        self.max_entries = max_entries
        self._skew = float(skew)
        self._unknown_ttl = float(unknown_expiry_ttl)
        self._clock = clock
        # key -> (token, fresh_until). Tuples, not objects: the hit path reads two slots.
        self._entries: OrderedDict[CacheKey, tuple[AccessToken, float]] = OrderedDict()
        self._flights: dict[CacheKey, asyncio.Task[AccessToken]] = {}

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

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
        loop = asyncio.get_running_loop()
        flight = self._flights.get(key)
        if flight is None or flight.get_loop() is not loop:
            flight = loop.create_task(self._run(key, factory))
            flight.add_done_callback(_consume_exception)
            self._flights[key] = flight
        return await asyncio.shield(flight)

    async def _run(self, key: CacheKey, factory: Callable[[], Awaitable[AccessToken]]) -> AccessToken:
        me = asyncio.current_task()
        try:
            token = await factory()
            self.put(key, token)
            return token
        finally:
            if self._flights.get(key) is me:
                del self._flights[key]

    def put(self, key: CacheKey, token: AccessToken) -> None:
        """Store ``token`` until ``expires_at - skew`` (or the unknown-expiry TTL); LRU-evict."""
        now = self._clock()
        expires_at = token.expires_at
        fresh_until = now + self._unknown_ttl if expires_at is None else expires_at - self._skew
        if fresh_until <= now:
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

        In-flight requests are left alone: what they return was issued after the token being
        invalidated, and dropping them would let a burst of 401s start a burst of requests.
        """
        entry = self._entries.get(key)
        if entry is None:
            return False
        if token is not None and entry[0].token != token.token:
            return False
        return self._drop(key, entry)

    def clear(self) -> None:
        """Forget every entry (in-flight requests still complete and store their result)."""
        self._entries.clear()

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
        return (
            f"TokenCache(entries={len(self._entries)}, max_entries={self.max_entries}, "
            f"in_flight={len(self._flights)}, skew={self._skew})"
        )


def _consume_exception(task: asyncio.Task[AccessToken]) -> None:
    # Every waiter may have been cancelled; mark the exception as retrieved so asyncio does not log
    # "Task exception was never retrieved" for a failure that was already reported (or not wanted).
    if not task.cancelled():
        task.exception()
