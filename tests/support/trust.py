"""Build trust stores for tests in one place, so the trust model's roles are set the same way everywhere.

    trust = trust_for(issuers=[user], agents=[agent])               # user's key signs mandates for user.name
    trust = trust_for(issuers=[(service, ["maria", "erik"])], agents=[agent], keys=[server_key])

``issuers`` entries are keys (registered for their own ``name``) or ``(key, principals)`` pairs;
``agents`` are agent keys (they sign ECTs, requests, records, seals and delegations); ``keys`` are
keys with no role (signature-only uses, e.g. a server's checkpoint key).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mcpclient_auth import Identity, PublicKey, TrustStore

Key = Identity | PublicKey

__all__ = ["trust_for"]


def trust_for(
    *,
    issuers: Iterable[Key | tuple[Key, Sequence[str]]] = (),
    agents: Iterable[Key] = (),
    keys: Iterable[Key] = (),
) -> TrustStore:
    store = TrustStore()
    for entry in issuers:
        key: Any = entry[0] if isinstance(entry, tuple) else entry
        # [trust] replaces this with store.add_issuer(key, principals=...) once roles exist.
        store.add(key)
    for key in agents:
        store.add(key)
    for key in keys:
        store.add(key)
    return store
