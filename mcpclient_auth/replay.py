"""A bounded set of recently seen ids (ECT ``jti`` values, signature ``nonce`` values).

Each id is kept until its own expiry (the end of the validity window of the token or signature that
carried it): presenting it again before then is a replay. Expired ids are dropped as time passes;
when the cache is full, the id closest to expiry makes room.

    cache = ReplayCache(max_entries=100_000)
    cache.check_and_store(jti, expires_at=exp + skew, scope=wid)   # first time: fine
    cache.check_and_store(jti, expires_at=exp + skew, scope=wid)   # ReplayDetected

A lock makes it safe to share between threads and between the tasks of an event loop (every
operation is short and never awaits). Cost per call is O(log n) for the heap plus O(1) amortised for
expiry, since each stored id is pushed and popped once.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time

from .errors import ConfigurationError, ReplayDetected

__all__ = ["ReplayCache"]

_Key = tuple[str | None, str]


class ReplayCache:
    """Remembers ``(scope, key)`` pairs until their expiry; see the module docstring."""

    __slots__ = ("_counter", "_expiry", "_heap", "_lock", "max_entries")

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ConfigurationError("ReplayCache needs room for at least one entry")
        self.max_entries = max_entries
        self._expiry: dict[_Key, float] = {}
        # (expires_at, insertion counter, key): the counter breaks ties without comparing keys.
        self._heap: list[tuple[float, int, _Key]] = []
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def check_and_store(
        self, key: str, expires_at: float, *, scope: str | None = None, now: float | None = None
    ) -> None:
        """Remember ``key`` (within ``scope``) until ``expires_at``; :class:`ReplayDetected` if it is
        already remembered. An already-expired ``key`` is not stored (nothing would accept it)."""
        current = time.time() if now is None else now
        entry: _Key = (scope, key)
        with self._lock:
            self._evict_expired(current)
            if entry in self._expiry:
                raise ReplayDetected("this token id was already used within its validity window")
            if expires_at <= current:
                return
            while len(self._expiry) >= self.max_entries:
                self._pop()
            self._expiry[entry] = expires_at
            heapq.heappush(self._heap, (expires_at, next(self._counter), entry))

    def seen(self, key: str, *, scope: str | None = None, now: float | None = None) -> bool:
        """Whether ``key`` is currently remembered (without storing it)."""
        current = time.time() if now is None else now
        with self._lock:
            self._evict_expired(current)
            return (scope, key) in self._expiry

    def clear(self) -> None:
        with self._lock:
            self._expiry.clear()
            self._heap.clear()

    def __len__(self) -> int:
        return len(self._expiry)

    def __repr__(self) -> str:
        return f"ReplayCache({len(self._expiry)}/{self.max_entries} entries)"

    # internals (called with the lock held) --------------------------------------------------------

    def _evict_expired(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            self._pop()

    def _pop(self) -> None:
        _, _, entry = heapq.heappop(self._heap)
        del self._expiry[entry]
