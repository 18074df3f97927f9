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
    max_delegation_depth: int | None = None,
) -> TrustStore:
    store = TrustStore()
    for entry in issuers:
        if isinstance(entry, tuple):
            key: Any = entry[0]
            store.add_issuer(key, principals=list(entry[1]))
        else:
            store.add_issuer(entry)
    for key in agents:
        store.add_agent(key)
    for key in keys:
        store.add(key)
    if max_delegation_depth is not None:
        store.max_delegation_depth = max_delegation_depth
    return store
