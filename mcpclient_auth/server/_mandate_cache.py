"""Verified mandates, once per server process: a run sends the same mandate on every call.

    cache = MandateCache(max_entries=1024)
    generation = trust.generation
    mandate = cache.get(token, trust, audience, now)            # None: verify it, then
    cache.put(token, mandate, trust, generation, audience, skew)

A hit is only as good as the verification it stands for, so an entry answers only while *all* of:

- the same :class:`~mcpclient_auth.keys.TrustStore` object is asked, at the same
  :attr:`~mcpclient_auth.keys.TrustStore.generation` (any key, role or depth change since the mandate
  was verified means verifying again: trust changes are respected at the next request);
- the same audience is asked (a verifier whose audience changed re-verifies);
- ``now`` is within the validity the verification established: from the latest ``iat`` of the
  mandate's whole delegation chain minus the skew to its earliest ``exp`` plus the skew. Outside it
  the entry is dropped, and the caller's full verification decides (past ``exp``: ``token_expired``).
  A hit never extends validity.

Entries are keyed by the token text (the dict keeps its hash; equality compares the whole token), at
most ``max_entries`` (least recently used evicted), and nothing but successful verifications is
stored: a refused mandate is verified (and refused) again each time it is presented.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from ..act import Mandate
from ..keys import TrustStore

__all__ = ["MandateCache"]


@dataclass(frozen=True, slots=True)
class _Entry:
    mandate: Mandate
    trust: TrustStore
    generation: int
    audience: str
    #: the chain's latest ``iat`` minus the skew: no hit before this instant (a caller's ``now`` can go back)
    valid_from: float
    #: the chain's earliest ``exp`` plus the skew: no hit from this instant on (as check_times)
    valid_until: float


class MandateCache:
    """Bounded LRU of verified mandates (thread-safe); see the module docstring for when a hit counts."""

    def __init__(self, max_entries: int = 1024) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, trust: TrustStore, audience: str, now: float) -> Mandate | None:
        """The cached mandate for ``token`` if it still stands for a verification under these
        conditions (else ``None``, and a stale entry is dropped)."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if (
                entry.trust is not trust
                or entry.generation != trust.generation
                or entry.audience != audience
                or not entry.valid_from <= now < entry.valid_until
            ):
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry.mandate

    def put(
        self, token: str, mandate: Mandate, trust: TrustStore, generation: int, audience: str, skew: float
    ) -> None:
        """Remember a mandate just verified against ``trust`` — as it was at ``generation``, read
        *before* the verification began, so a change made meanwhile makes the entry stale — and
        ``audience``."""
        chain = mandate.chain
        valid_from = max(link.iat for link in chain) - skew
        valid_until = min(link.exp for link in chain) + skew
        entry = _Entry(mandate, trust, generation, audience, valid_from, valid_until)
        with self._lock:
            self._entries[token] = entry
            self._entries.move_to_end(token)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
