"""Replay protection: remember each signature ``nonce`` and ECT ``jti`` until nothing would accept it.

An id is a :class:`ReplayClaim`: the *partition* it is charged to (the thumbprint of the key that
signed it), a fixed-size digest of the id, and the time after which every other check would refuse
the token or signature anyway. A :class:`ReplayStore` stores every claim of a batch, or raises
(and then accepts none of them):

- :class:`~mcpclient_auth.errors.ReplayDetected` — one of the ids is already stored (a replay);
- :class:`~mcpclient_auth.errors.ReplayStoreFull` — no room: the store refuses, it never forgets an
  id that is still inside its window (that is what let a flood push a captured request back in);
- :class:`~mcpclient_auth.errors.ReplayStoreUnavailable` — a shared store did not answer (fail closed).

A raise does not always mean nothing was stored: :class:`MemoryReplayStore` is all-or-nothing (one
lock), but the Redis store's pipeline is not a transaction, so after a ``ReplayDetected`` (or a
failure mid-way) other ids of the batch may be stored. That is fail-closed -- such an id is only
burnt, later requests carrying it are refused -- and what every store guarantees is: an id is
accepted at most once within its window, and a batch is accepted only if all of its ids were new.

Verifiers only *claim* after every other check passed, so a request that fails any check never takes
room. Two implementations:

    store = MemoryReplayStore(max_entries=200_000, max_entries_per_key=50_000)   # one process
    store = RedisReplayStore("redis://cache:6379/0")      # shared by workers (mcpclient_auth.replay_redis)

:class:`MemoryReplayStore` is partitioned: each key has its own quota, so a key holder flooding the
server fills only its own share and is answered 503 ``replay_store_full``; other keys go on.
:class:`ReplayCache` is the older single-set API (``check_and_store``), kept for existing callers; it is
the same store without per-key quotas.

Thread- and task-safe: one lock, every operation is short and never awaits, so ``aclaim`` on the memory
store runs inline on the event loop.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._encoding import sha256_b64url
from .errors import ConfigurationError, ReplayDetected, ReplayStoreFull
from .keys import PublicKey

__all__ = ["MemoryReplayStore", "ReplayCache", "ReplayClaim", "ReplayStore"]

#: Claim kinds: a request signature's ``nonce`` and an ECT's ``jti`` (within its ``wid``).
NONCE = "nonce"
ECT = "ect"


@functools.lru_cache(maxsize=1024)
def key_partition(key: PublicKey) -> str:
    """The partition a key's ids are charged to: its RFC 7638 thumbprint (the same in every worker,
    whatever ``kid`` a trust file gives it)."""
    return key.thumbprint


@dataclass(frozen=True, slots=True)
class ReplayClaim:
    """One id to remember until ``expires_at`` (epoch seconds), charged to ``partition``.

    ``key`` is ``kind:digest`` — a SHA-256 digest of the id, so attacker-chosen ids have a fixed size
    in every store and never appear in a store key as sent.
    """

    partition: str
    kind: str
    key: str
    expires_at: float

    @classmethod
    def for_nonce(cls, partition: str, nonce: str, expires_at: float) -> ReplayClaim:
        digest = sha256_b64url(nonce.encode("utf-8", "surrogatepass"))[:32]
        return cls(partition, NONCE, f"n:{digest}", expires_at)

    @classmethod
    def for_ect(cls, partition: str, jti: str, wid: str | None, expires_at: float) -> ReplayClaim:
        # An ECT id is unique within its run (``wid``): the same jti in another run is another id.
        material = f"{wid or ''}\x00{jti}".encode("utf-8", "surrogatepass")
        return cls(partition, ECT, f"e:{sha256_b64url(material)[:32]}", expires_at)


@runtime_checkable
class ReplayStore(Protocol):
    """Stores every claim of a batch or raises; an id is accepted at most once (module docstring).

    After a raise, ids of the batch may have been stored (not all stores are transactional), which
    only burns them: fail closed, never a second acceptance.

    ``claim`` may block on I/O (a shared store); ``aclaim`` must not block the event loop.
    Claims already expired at ``now`` are accepted and not stored (nothing would accept them).
    """

    def claim(self, claims: Sequence[ReplayClaim], *, now: float | None = None) -> None: ...

    async def aclaim(self, claims: Sequence[ReplayClaim], *, now: float | None = None) -> None: ...


_Entry = tuple[str, str]  # (partition, key)


class MemoryReplayStore:
    """In-process store: bounded in total and per key, refuses when full; see the module docstring.

    Memory: about 300 bytes per stored id (dict slot, heap slot, key string; measured with
    tracemalloc), so the default bound of 200,000 ids is roughly 60 MB. A legitimate agent stores
    two ids per call (nonce ~120 s, ECT ~11 min with the default lifetimes), so the default
    ``max_entries_per_key`` (50,000) sustains about 60 calls/s per key.
    """

    __slots__ = ("_counter", "_counts", "_expiry", "_heap", "_lock", "max_entries", "max_entries_per_key")

    def __init__(self, max_entries: int = 200_000, max_entries_per_key: int | None = None) -> None:
        if max_entries < 1:
            raise ConfigurationError("a replay store needs room for at least one entry")
        per_key = max(1, max_entries // 4) if max_entries_per_key is None else max_entries_per_key
        if per_key < 1:
            raise ConfigurationError("max_entries_per_key must be at least 1")
        self.max_entries = max_entries
        self.max_entries_per_key = min(per_key, max_entries)
        self._expiry: dict[_Entry, float] = {}
        self._counts: dict[str, int] = {}
        # (expires_at, insertion counter, entry): the counter breaks ties without comparing entries.
        self._heap: list[tuple[float, int, _Entry]] = []
        self._counter = itertools.count()
        self._lock = threading.Lock()

    # the protocol ----------------------------------------------------------------------------------

    def claim(self, claims: Sequence[ReplayClaim], *, now: float | None = None) -> None:
        current = time.time() if now is None else now
        with self._lock:
            self._evict_expired(current)
            expiry = self._expiry
            for claim in claims:
                if (claim.partition, claim.key) in expiry:
                    raise ReplayDetected(_REPLAY_MESSAGES.get(claim.kind, _REPLAY_DEFAULT), kind=claim.kind)
            live = [c for c in claims if c.expires_at > current]
            if not live:
                return
            needed: dict[str, int] = {}
            for claim in live:
                needed[claim.partition] = needed.get(claim.partition, 0) + 1
            full = len(expiry) + len(live) > self.max_entries or any(
                self._counts.get(partition, 0) + count > self.max_entries_per_key
                for partition, count in needed.items()
            )
            if full:
                raise ReplayStoreFull(
                    "the replay store has no room for this key's ids until some expire",
                    retry_after=self._retry_after(current),
                )
            for claim in live:
                entry = (claim.partition, claim.key)
                expiry[entry] = claim.expires_at
                self._counts[claim.partition] = self._counts.get(claim.partition, 0) + 1
                heapq.heappush(self._heap, (claim.expires_at, next(self._counter), entry))

    async def aclaim(self, claims: Sequence[ReplayClaim], *, now: float | None = None) -> None:
        # Short, lock-bound, no I/O: running it inline never stalls the loop for long.
        self.claim(claims, now=now)

    # inspection ------------------------------------------------------------------------------------

    def contains(self, claim: ReplayClaim, *, now: float | None = None) -> bool:
        """Whether ``claim``'s id is currently stored (without storing it)."""
        current = time.time() if now is None else now
        with self._lock:
            self._evict_expired(current)
            return (claim.partition, claim.key) in self._expiry

    def entries_for(self, partition: str) -> int:
        with self._lock:
            return self._counts.get(partition, 0)

    def clear(self) -> None:
        with self._lock:
            self._expiry.clear()
            self._counts.clear()
            self._heap.clear()

    def __len__(self) -> int:
        return len(self._expiry)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self._expiry)}/{self.max_entries} entries, "
            f"{self.max_entries_per_key} per key)"
        )

    # internals (called with the lock held) -----------------------------------------------------------

    def _retry_after(self, now: float) -> int:
        # When the soonest-expiring id frees its slot: a cheap hint (it may belong to another key).
        soonest = self._heap[0][0] if self._heap else now + 1
        return max(1, min(3600, math.ceil(soonest - now)))

    def _evict_expired(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, entry = heapq.heappop(heap)
            del self._expiry[entry]
            partition = entry[0]
            left = self._counts[partition] - 1
            if left:
                self._counts[partition] = left
            else:
                del self._counts[partition]


_REPLAY_MESSAGES = {
    NONCE: "this signature nonce was already used",
    ECT: "this token id was already used within its validity window",
}
_REPLAY_DEFAULT = "this id was already used within its validity window"


class ReplayCache(MemoryReplayStore):
    """The original single-set API, kept for existing callers: remembers ``(scope, key)`` pairs.

        cache = ReplayCache(max_entries=100_000)
        cache.check_and_store(jti, expires_at=exp + skew, scope=wid)   # first time: fine
        cache.check_and_store(jti, expires_at=exp + skew, scope=wid)   # ReplayDetected

    Since issue 13 a full cache *refuses* (:class:`~mcpclient_auth.errors.ReplayStoreFull`) instead of
    evicting the soonest-expiring id. It is also a :class:`ReplayStore` (no per-key quota), so it can
    still be passed as ``nonce_cache=`` / ``replay=`` / ``replay_store=``.
    """

    __slots__ = ()

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ConfigurationError("ReplayCache needs room for at least one entry")
        super().__init__(max_entries=max_entries, max_entries_per_key=max_entries)

    def check_and_store(
        self, key: str, expires_at: float, *, scope: str | None = None, now: float | None = None
    ) -> None:
        """Remember ``key`` (within ``scope``) until ``expires_at``; :class:`ReplayDetected` if it is
        already remembered, :class:`ReplayStoreFull` if there is no room. An already-expired ``key``
        is not stored (nothing would accept it)."""
        self.claim([ReplayClaim(scope or "", "id", key, expires_at)], now=now)

    def seen(self, key: str, *, scope: str | None = None, now: float | None = None) -> bool:
        """Whether ``key`` is currently remembered (without storing it)."""
        return self.contains(ReplayClaim(scope or "", "id", key, 0.0), now=now)
