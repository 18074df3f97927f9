"""Issue #16: the server verifies each run's mandate once per process — and a cached mandate is
never accepted where a fresh verification would refuse it (expiry, trust changes, audience, bound)."""

from __future__ import annotations

import time

import pytest

from mcpclient_auth.act import Mandate
from mcpclient_auth.errors import DelegationError, McpClientAuthError, TokenExpired, TokenNotYetValid
from mcpclient_auth.keys import Identity
from mcpclient_auth.server import IncomingHeaders, McpRequestVerifier, Rejection
from mcpclient_auth.server._mandate_cache import MandateCache
from tests.support.trust import trust_for
from tests.unit.test_server_verify import AGENT, TRUST, URL, USER, signed_call

SKEW = 60


def mandate_headers(mandate: Mandate) -> IncomingHeaders:
    return IncomingHeaders([("ACT-Mandate", mandate.token)])


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every full mandate verification (signature and all), by token."""
    calls: list[str] = []
    verify = Mandate.verify.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Mandate], token: str, *args: object, **kwargs: object) -> Mandate:
        calls.append(token)
        return verify(cls, token, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(Mandate, "verify", classmethod(counting))
    return calls


def test_a_runs_mandate_is_verified_once_for_all_its_calls(counted: list[str]) -> None:
    verifier = McpRequestVerifier(TRUST, audience=URL)
    request, mandate = signed_call("search", ["mcp.search"])
    assert not isinstance(verifier.check(request), Rejection)
    for _ in range(3):  # later calls of the same run present the same mandate: cache hits
        assert verifier._mandate(mandate_headers(mandate), time.time()) is not None
    assert counted.count(mandate.token) == 1
    assert len(verifier.mandates) == 1


def test_an_expired_cached_mandate_is_refused(counted: list[str]) -> None:
    verifier = McpRequestVerifier(TRUST, audience=URL, skew=SKEW)
    now = time.time()
    mandate = Mandate.issue(
        USER, agent=AGENT, audience=URL, purpose="p", capabilities=["mcp.search"], ttl=120
    )
    assert verifier._mandate(mandate_headers(mandate), now) is not None
    assert verifier._mandate(mandate_headers(mandate), mandate.exp + SKEW - 1) is not None  # still valid
    with pytest.raises(TokenExpired):
        verifier._mandate(mandate_headers(mandate), mandate.exp + SKEW)
    with pytest.raises(TokenExpired):  # and the stale entry is gone, not revived
        verifier._mandate(mandate_headers(mandate), mandate.exp + SKEW + 1)
    assert len(verifier.mandates) == 0
    # a caller's clock that goes back before iat is not served from the cache either
    assert verifier._mandate(mandate_headers(mandate), now) is not None
    with pytest.raises(TokenNotYetValid):
        verifier._mandate(mandate_headers(mandate), mandate.iat - SKEW - 5)


def test_a_delegated_mandate_expires_with_its_parent_in_the_cache() -> None:
    helper = Identity.generate("ES256", name="helper")
    trust = trust_for(issuers=[USER], agents=[AGENT, helper])
    root = Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=["mcp.search"], ttl=300)
    sub = root.delegate(AGENT, agent=helper, capabilities=["mcp.search"], ttl=300)
    verifier = McpRequestVerifier(trust, audience=URL, skew=SKEW)
    assert verifier._mandate(mandate_headers(sub), time.time()) is not None
    with pytest.raises(TokenExpired):
        verifier._mandate(mandate_headers(sub), min(root.exp, sub.exp) + SKEW)


def test_a_trust_store_change_is_respected_at_the_next_request(counted: list[str]) -> None:
    helper = Identity.generate("ES256", name="helper")
    trust = trust_for(issuers=[USER], agents=[AGENT, helper])
    root = Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=["mcp.search"])
    sub = root.delegate(AGENT, agent=helper, capabilities=["mcp.search"])
    verifier = McpRequestVerifier(trust, audience=URL)
    assert verifier._mandate(mandate_headers(sub), time.time()) is not None
    assert verifier._mandate(mandate_headers(sub), time.time()) is not None
    assert counted.count(sub.token) == 1
    trust.max_delegation_depth = 0  # delegation no longer allowed: the cached verification is void
    with pytest.raises(DelegationError):
        verifier._mandate(mandate_headers(sub), time.time())
    assert counted.count(sub.token) == 2


def test_a_replaced_trust_store_or_audience_re_verifies() -> None:
    verifier = McpRequestVerifier(TRUST, audience=URL)
    mandate = Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=["mcp.search"])
    assert verifier._mandate(mandate_headers(mandate), time.time()) is not None
    verifier.trust = trust_for(issuers=[Identity.generate("ES256", name="maria")], agents=[AGENT])
    with pytest.raises(McpClientAuthError) as refused:  # maria's key in the new store is another key
        verifier._mandate(mandate_headers(mandate), time.time())
    assert refused.value.code in ("unknown_key", "issuer_not_authorized")
    verifier.trust = TRUST
    verifier.audience = "https://other.example/mcp"
    with pytest.raises(McpClientAuthError) as foreign:
        verifier._mandate(mandate_headers(mandate), time.time())
    assert foreign.value.code == "audience_mismatch"


def test_a_foreign_mandate_is_refused_every_time_and_never_cached(counted: list[str]) -> None:
    stranger = Identity.generate("ES256", name="maria")  # claims maria's name, not her registered key
    forged = Mandate.issue(stranger, agent=AGENT, audience=URL, purpose="p", capabilities=["mcp.search"])
    other_server = Mandate.issue(
        USER, agent=AGENT, audience="https://other.example/mcp", purpose="p", capabilities=["mcp.search"]
    )
    verifier = McpRequestVerifier(TRUST, audience=URL)
    for _ in range(2):
        for mandate in (forged, other_server):
            with pytest.raises(McpClientAuthError):
                verifier._mandate(mandate_headers(mandate), time.time())
    assert len(verifier.mandates) == 0
    assert counted.count(forged.token) == 2 and counted.count(other_server.token) == 2


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    cache = MandateCache(max_entries=2)
    mandates = [
        Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=["mcp.search"])
        for _ in range(3)
    ]
    now = time.time()
    for mandate in mandates[:2]:
        cache.put(mandate.token, mandate, TRUST, TRUST.generation, URL, SKEW)
    assert cache.get(mandates[0].token, TRUST, URL, now) is mandates[0]  # 0 is now the most recent
    cache.put(mandates[2].token, mandates[2], TRUST, TRUST.generation, URL, SKEW)
    assert len(cache) == 2
    assert cache.get(mandates[1].token, TRUST, URL, now) is None  # evicted
    assert cache.get(mandates[0].token, TRUST, URL, now) is mandates[0]
    assert cache.get(mandates[2].token, TRUST, URL, now) is mandates[2]
    with pytest.raises(ValueError):
        MandateCache(max_entries=0)


def test_an_entry_verified_before_a_concurrent_trust_change_is_stale() -> None:
    trust = trust_for(issuers=[USER], agents=[AGENT])
    mandate = Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=["mcp.search"])
    cache = MandateCache()
    generation = trust.generation  # read before verifying, as the verifier does
    trust.add(Identity.generate("ES256", name="someone"))  # changed while the mandate was being verified
    cache.put(mandate.token, mandate, trust, generation, URL, SKEW)
    assert cache.get(mandate.token, trust, URL, time.time()) is None
