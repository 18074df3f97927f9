"""act: mandates (phase 1), delegation chains and execution records (phase 2)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from mcpclient_auth import jose
from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import ExecutionRecord, Mandate, verify_delegation_chain
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import (
    AudienceMismatch,
    CapabilityNotGranted,
    ClaimsInvalid,
    DelegationError,
    InvalidTokenType,
    KeyBindingMismatch,
    McpClientAuthError,
    PhaseError,
    PrivilegeEscalation,
    TokenExpired,
    TokenNotYetValid,
    TokenSignatureInvalid,
)
from mcpclient_auth.keys import Identity, PublicKey, TrustStore
from tests.support.trust import trust_for

AUD = "https://mcp.example/mcp"
NOW = 1_800_000_000.0
OUT = sha256_b64url(b"final answer")


@pytest.fixture(scope="module")
def user() -> Identity:
    return Identity.generate("ES256", name="alice")


@pytest.fixture(scope="module")
def agent() -> Identity:
    return Identity.generate("ES256", name="agent-1")


@pytest.fixture(scope="module")
def helper() -> Identity:
    return Identity.generate("EdDSA", name="helper-2")


@pytest.fixture(scope="module")
def worker() -> Identity:
    return Identity.generate("ES256", name="worker-3")


@pytest.fixture(scope="module")
def trust(user: Identity, agent: Identity, helper: Identity, worker: Identity) -> TrustStore:
    return trust_for(issuers=[user], agents=[agent, helper, worker])


def issue(user: Identity, agent: Identity | PublicKey | str, **kw: Any) -> Mandate:
    args: dict[str, Any] = {
        "agent": agent,
        "audience": AUD,
        "purpose": "Answer HR questions",
        "capabilities": ["mcp.search", {"action": "mcp.fetch", "constraints": {"max": 3}, "x-note": "kept"}],
        "now": NOW,
    }
    args.update(kw)
    return Mandate.issue(user, **args)


def assert_no_token(exc: BaseException, token: str) -> None:
    text = str(exc)
    assert token not in text
    for part in token.split("."):
        assert len(part) < 8 or part not in text


# --- issue + verify ------------------------------------------------------------------------------


def test_issue_sets_every_claim(user: Identity, agent: Identity, trust: TrustStore) -> None:
    m = issue(user, agent, wid="run-1", oversight={"approve": "human"}, pred=[])
    claims = Mandate.verify(m.token, trust, audience=AUD, now=NOW).claims
    assert claims["iss"] == "alice" and claims["sub"] == "agent-1"
    assert claims["aud"] == AUD
    assert claims["iat"] == int(NOW) and claims["exp"] == int(NOW) + 900
    assert uuid.UUID(claims["jti"]).version == 4
    assert claims["task"] == {"purpose": "Answer HR questions"}
    assert claims["cap"] == [
        {"action": "mcp.search"},
        {"action": "mcp.fetch", "constraints": {"max": 3}, "x-note": "kept"},
    ]
    assert claims["cnf"] == {"jkt": agent.public.thumbprint}
    assert claims["wid"] == "run-1" and claims["oversight"] == {"approve": "human"} and claims["pred"] == []
    header = jose.decode(m.token).header
    assert header == {"alg": "ES256", "typ": "act+jwt", "kid": user.kid} == m.header


def test_accessors(user: Identity, agent: Identity, trust: TrustStore) -> None:
    m = Mandate.verify(issue(user, agent).token, trust, now=NOW)
    assert (m.iss, m.sub, m.aud, m.purpose) == ("alice", "agent-1", [AUD], "Answer HR questions")
    assert m.capabilities == ["mcp.search", "mcp.fetch"]
    assert m.allows("mcp.search") and m.allows("mcp.fetch")
    assert not m.allows("mcp.delete") and not m.allows("mcp") and not m.allows("mcp.search.x")
    assert m.constraints("mcp.fetch") == {"max": 3} and m.constraints("mcp.search") is None
    assert m.agent_kid == agent.kid and m.binds(agent) and not m.binds(user)
    assert m.signer is not None and m.signer.kid == user.kid
    assert m.delegation is None and m.depth == 0
    assert m.token not in repr(m) and "agent-1" in repr(m)


def test_unknown_members_round_trip(user: Identity, agent: Identity, trust: TrustStore) -> None:
    m = issue(user, agent, task={"priority": "high", "ticket": {"id": 7}}, **{"x-vendor": {"a": [1, 2]}})
    verified = Mandate.verify(m.token, trust, now=NOW)
    assert verified.claims["x-vendor"] == {"a": [1, 2]}
    assert verified.task == {"purpose": "Answer HR questions", "priority": "high", "ticket": {"id": 7}}
    assert verified.cap[1]["x-note"] == "kept"


def test_audience_list_and_agent_given_as_name(user: Identity, trust: TrustStore) -> None:
    m = issue(user, "bot-7", audience=[AUD, "https://other.example/mcp"])
    v = Mandate.verify(m.token, trust, audience="https://other.example/mcp", now=NOW)
    assert v.claims["aud"] == [AUD, "https://other.example/mcp"]
    assert v.sub == "bot-7" and v.agent_kid is None and "cnf" not in v.claims


def test_agent_given_as_public_key_binds_it(user: Identity, agent: Identity, trust: TrustStore) -> None:
    m = issue(user, agent.public)
    assert Mandate.verify(m.token, trust, now=NOW).binds(agent)


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_both_algorithms(alg: str) -> None:
    issuer, bot = Identity.generate(alg, name="u"), Identity.generate(alg, name="b")
    m = Mandate.issue(issuer, agent=bot, audience=AUD, purpose="p", capabilities=["mcp.a"])
    assert Mandate.verify(m.token, trust_for(issuers=[issuer]), audience=AUD).allows("mcp.a")


def test_decode_is_unverified_but_validates(user: Identity, agent: Identity) -> None:
    m = issue(user, agent)
    assert Mandate.decode(m.token).jti == m.jti
    with pytest.raises(InvalidTokenType):
        Mandate.decode(ExecutionContextToken.mint(agent, audience=AUD, exec_act="mcp.a", pred=[]).token)


@pytest.mark.parametrize(
    "action",
    ["", "1abc", "mcp..search", "mcp.", ".mcp", "mcp.sea rch", "mcp.ä", "mcp.*", "mcp/search", "mcp.1x"],
)
def test_invalid_action_names_are_refused(user: Identity, agent: Identity, action: str) -> None:
    with pytest.raises(ClaimsInvalid):
        issue(user, agent, capabilities=[action])


@pytest.mark.parametrize("action", ["mcp", "mcp.search", "mcp.get_office-locations", "A.b9.c_d-e"])
def test_valid_action_names(user: Identity, agent: Identity, action: str) -> None:
    assert issue(user, agent, capabilities=[action]).allows(action)


@pytest.mark.parametrize(
    "kw",
    [
        {"capabilities": ["mcp.a", "mcp.a"]},
        {"capabilities": [{"action": "mcp.a", "constraints": "none"}]},
        {"capabilities": [{"constraints": {}}]},
        {"ttl": 0},
        {"purpose": ""},
        {"audience": []},
        {"jti": "not-a-uuid"},
        {"sub": "someone-else"},
        {"exec_act": "mcp.search"},
        {"status": "completed"},
        {"oversight": {1, 2}},
        {"oversight": float("nan")},
    ],
)
def test_issue_refuses_bad_input(user: Identity, agent: Identity, kw: dict[str, Any]) -> None:
    with pytest.raises(ClaimsInvalid):
        issue(user, agent, **kw)


# --- negative verification: each a distinct typed error ------------------------------------------


def test_negative_cases_have_distinct_error_classes(
    user: Identity, agent: Identity, helper: Identity, trust: TrustStore
) -> None:
    m = issue(user, agent)
    header, payload, sig = m.token.split(".")
    other_payload = issue(user, agent, purpose="something else").token.split(".")[1]
    tampered_payload = f"{header}.{other_payload}.{sig}"
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    cases: dict[str, tuple[type[McpClientAuthError], Any]] = {
        "tampered payload": (TokenSignatureInvalid, lambda: Mandate.verify(tampered_payload, trust, now=NOW)),
        "tampered signature": (
            TokenSignatureInvalid,
            lambda: Mandate.verify(f"{header}.{payload}.{flipped}", trust, now=NOW),
        ),
        "expired": (TokenExpired, lambda: Mandate.verify(m.token, trust, now=NOW + 900 + 60)),
        "future iat": (TokenNotYetValid, lambda: Mandate.verify(m.token, trust, now=NOW - 61)),
        "audience": (
            AudienceMismatch,
            lambda: Mandate.verify(m.token, trust, audience="https://evil/mcp", now=NOW),
        ),
        "typ ECT as mandate": (
            InvalidTokenType,
            lambda: Mandate.verify(
                ExecutionContextToken.mint(agent, audience=AUD, exec_act="mcp.a", pred=[]).token, trust
            ),
        ),
        "record as mandate": (
            PhaseError,
            lambda: Mandate.verify(
                ExecutionRecord.issue(
                    agent, m, exec_act=None, pred=[], out_hash=OUT, status="completed", now=NOW
                ).token,
                trust,
                now=NOW,
            ),
        ),
    }
    for name, (error, call) in cases.items():
        with pytest.raises(error) as info:
            call()
        assert type(info.value) is error, name
        assert_no_token(info.value, m.token)


def test_time_checks_allow_the_skew(user: Identity, agent: Identity, trust: TrustStore) -> None:
    m = issue(user, agent)
    Mandate.verify(m.token, trust, now=NOW - 59)  # iat 59 s ahead of our clock: fine
    Mandate.verify(m.token, trust, now=NOW + 900 + 59)  # expired 59 s ago: within skew
    Mandate.verify(m.token, trust, now=NOW + 10_000, verify_time=False)
    with pytest.raises(TokenExpired):
        Mandate.verify(m.token, trust, now=NOW + 905, skew=0)


def test_crafted_mandates_with_bad_claims(user: Identity, agent: Identity, trust: TrustStore) -> None:
    base = issue(user, agent).claims
    changes: list[dict[str, Any]] = [
        {"iat": "1800000000"},
        {"exp": int(NOW) - 1},
        {"exp": True},
        {"jti": "123"},
        {"task": "do it"},
        {"task": {}},
        {"cap": "mcp.search"},
        {"cap": [{"action": "bad action"}]},
        {"aud": []},
        {"aud": 5},
        {"iss": ""},
        {"cnf": {"jkt": 1}},
        {"del": {"depth": 1, "chain": []}},
        {"pred": "x"},
    ]
    for change in changes:
        token = jose.encode(user, jose.ACT_TYP, base | change)
        with pytest.raises(ClaimsInvalid):
            Mandate.verify(token, trust, now=NOW)
    missing = {k: v for k, v in base.items() if k != "sub"}
    with pytest.raises(ClaimsInvalid):
        Mandate.verify(jose.encode(user, jose.ACT_TYP, missing), trust, now=NOW)


# --- delegation -----------------------------------------------------------------------------------


def test_delegate_and_verify_chain(
    user: Identity, agent: Identity, helper: Identity, trust: TrustStore
) -> None:
    root = issue(user, agent, oversight={"mode": "audit"}, wid="run-9")
    sub = root.delegate(agent, agent=helper, capabilities=["mcp.fetch"], ttl=300, now=NOW + 10)
    assert sub.iss == root.sub == "agent-1" and sub.sub == "helper-2"
    assert sub.header["kid"] == agent.kid
    assert sub.capabilities == ["mcp.fetch"] and sub.constraints("mcp.fetch") == {"max": 3}
    assert sub.exp == int(NOW) + 10 + 300
    assert sub.delegation == {
        "depth": 1,
        "chain": [{"jti": root.jti, "iss": "alice", "sub": "agent-1"}],
        "parent": root.token,  # the ancestry travels with the sub-mandate
    }
    assert sub.claims["oversight"] == {"mode": "audit"} and sub.wid == "run-9"
    assert sub.purpose == root.purpose and sub.binds(helper)
    chain = verify_delegation_chain([root.token, sub.token], trust, audience=AUD, now=NOW + 20)
    assert [m.jti for m in chain] == [root.jti, sub.jti]


def test_two_hop_chain_and_depth_limit(
    user: Identity, agent: Identity, helper: Identity, worker: Identity, trust: TrustStore
) -> None:
    root = issue(user, agent)
    sub = root.delegate(agent, agent=helper, capabilities=["mcp.search", "mcp.fetch"], now=NOW)
    leaf = sub.delegate(helper, agent=worker, capabilities=["mcp.search"], purpose="narrower", now=NOW)
    assert leaf.depth == 2 and [link["jti"] for link in leaf.delegation["chain"]] == [root.jti, sub.jti]  # type: ignore[index]
    assert (
        verify_delegation_chain([root.token, sub.token, leaf.token], trust, now=NOW)[-1].purpose == "narrower"
    )
    with pytest.raises(DelegationError):
        verify_delegation_chain([root.token, sub.token, leaf.token], trust, now=NOW, max_depth=1)


def test_delegate_clamps_expiry_to_the_parent(user: Identity, agent: Identity, helper: Identity) -> None:
    root = issue(user, agent, ttl=100)
    assert (
        root.delegate(agent, agent=helper, capabilities=["mcp.search"], ttl=10_000, now=NOW).exp == root.exp
    )
    with pytest.raises(DelegationError):
        root.delegate(agent, agent=helper, capabilities=["mcp.search"], now=NOW + 100)


def test_delegate_refuses_escalation(user: Identity, agent: Identity, helper: Identity) -> None:
    root = issue(user, agent)
    with pytest.raises(PrivilegeEscalation) as info:
        root.delegate(agent, agent=helper, capabilities=["mcp.search", "mcp.delete"], now=NOW)
    assert info.value.code == "privilege_escalation"
    with pytest.raises(PrivilegeEscalation):
        root.delegate(agent, agent=helper, capabilities=[{"action": "mcp.fetch", "constraints": {"max": 99}}])
    with pytest.raises(PrivilegeEscalation):
        root.delegate(agent, agent=helper, capabilities=["mcp.search"], audience="https://elsewhere/mcp")


def test_only_the_holder_can_delegate(user: Identity, agent: Identity, helper: Identity) -> None:
    root = issue(user, agent)
    with pytest.raises(DelegationError):
        root.delegate(helper, agent=helper, capabilities=["mcp.search"], now=NOW)
    unbound = issue(user, "agent-1")  # no cnf: no key may delegate it, not even one named agent-1
    with pytest.raises(DelegationError) as info:
        unbound.delegate(agent, agent=helper, capabilities=["mcp.search"], now=NOW)
    assert info.value.code == "delegation_unbound_parent"


def test_max_delegation_depth_from_the_issuer(
    user: Identity, agent: Identity, helper: Identity, worker: Identity, trust: TrustStore
) -> None:
    root = issue(user, agent, max_delegation_depth=1)
    assert root.max_depth == 1 and root.depth == 0
    sub = root.delegate(agent, agent=helper, capabilities=["mcp.search"], now=NOW)
    assert sub.max_depth == 1
    verify_delegation_chain([root.token, sub.token], trust, now=NOW)
    with pytest.raises(DelegationError):
        sub.delegate(helper, agent=worker, capabilities=["mcp.search"], now=NOW)


def _forged_sub(parent: Mandate, signer: Identity, child: Identity, **changes: Any) -> str:
    """A sub-mandate built by hand (as an attacker would), signed by ``signer``."""
    claims: dict[str, Any] = {
        "iss": parent.sub,
        "sub": child.name,
        "aud": parent.claims["aud"],
        "iat": parent.iat,
        "exp": parent.exp,
        "jti": str(uuid.uuid4()),
        "task": parent.task,
        "cap": [{"action": "mcp.search"}],
        "cnf": {"jkt": child.public.thumbprint},
        "del": {
            "depth": 1,
            "chain": [{"jti": parent.jti, "iss": parent.iss, "sub": parent.sub}],
            "parent": parent.token,
        },
    }
    claims.update(changes)
    return jose.encode(signer, jose.ACT_TYP, claims)


def test_chain_verification_catches_forged_links(
    user: Identity, agent: Identity, helper: Identity, trust: TrustStore
) -> None:
    root = issue(user, agent)
    ok = _forged_sub(root, agent, helper)
    verify_delegation_chain([root.token, ok], trust, now=NOW)
    cases: dict[str, tuple[type[Exception], str]] = {
        "cap escalation": (
            PrivilegeEscalation,
            _forged_sub(root, agent, helper, cap=[{"action": "mcp.delete"}]),
        ),
        "constraint loosened": (
            PrivilegeEscalation,
            _forged_sub(root, agent, helper, cap=[{"action": "mcp.fetch", "constraints": {"max": 1000}}]),
        ),
        "audience widened": (
            PrivilegeEscalation,
            _forged_sub(root, agent, helper, aud=[AUD, "https://x/mcp"]),
        ),
        "outlives parent": (DelegationError, _forged_sub(root, agent, helper, exp=root.exp + 1)),
        "issuer not parent's sub": (DelegationError, _forged_sub(root, agent, helper, iss="mallory")),
        "signed by another key": (DelegationError, _forged_sub(root, helper, helper)),
        "chain names another parent": (
            DelegationError,
            _forged_sub(
                root,
                agent,
                helper,
                **{
                    "del": {
                        "depth": 1,
                        "chain": [{"jti": str(uuid.uuid4()), "iss": "alice", "sub": "agent-1"}],
                        "parent": root.token,
                    }
                },
            ),
        ),
        "depth skips": (
            DelegationError,
            _forged_sub(
                root,
                agent,
                helper,
                **{
                    "del": {
                        "depth": 2,
                        "chain": [{"jti": root.jti, "iss": "alice", "sub": "agent-1"}] * 2,
                        "parent": root.token,
                    }
                },
            ),
        ),
        "issued before parent": (DelegationError, _forged_sub(root, agent, helper, iat=root.iat - 3600)),
    }
    for name, (error, token) in cases.items():
        with pytest.raises(error) as info:
            verify_delegation_chain([root.token, token], trust, now=NOW)
        assert type(info.value) is error, name
        assert_no_token(info.value, token)


def test_chain_must_start_at_a_root(
    user: Identity, agent: Identity, helper: Identity, trust: TrustStore
) -> None:
    root = issue(user, agent)
    sub = root.delegate(agent, agent=helper, capabilities=["mcp.search"], now=NOW)
    with pytest.raises(DelegationError):
        verify_delegation_chain([sub.token], trust, now=NOW)
    with pytest.raises(DelegationError):
        verify_delegation_chain([], trust)
    with pytest.raises(DelegationError):
        verify_delegation_chain(root.token, trust)  # a str is a Sequence, but not a chain


def test_chain_checks_audience_of_the_leaf(
    user: Identity, agent: Identity, helper: Identity, trust: TrustStore
) -> None:
    root = issue(user, agent, audience=[AUD, "https://b/mcp"])
    sub = root.delegate(agent, agent=helper, capabilities=["mcp.search"], audience="https://b/mcp", now=NOW)
    verify_delegation_chain([root.token, sub.token], trust, audience="https://b/mcp", now=NOW)
    with pytest.raises(AudienceMismatch):
        verify_delegation_chain([root.token, sub.token], trust, audience=AUD, now=NOW)


# --- execution records --------------------------------------------------------------------------------


def test_record_issue_and_verify(user: Identity, agent: Identity, trust: TrustStore) -> None:
    m = issue(user, agent)
    r = ExecutionRecord.issue(
        agent, m, exec_act="mcp.search", pred=["a", "b"], out_hash=OUT, status="completed", now=NOW + 30
    )
    v = ExecutionRecord.verify(r.token, trust, mandate=m, now=NOW + 30)
    assert (
        v.jti == m.jti and v.header["kid"] == agent.kid and v.signer is not None and v.signer.kid == agent.kid
    )
    assert (v.exec_act, v.pred, v.status, v.out_hash) == ("mcp.search", ["a", "b"], "completed", OUT)
    assert v.inp_hash == sha256_b64url(b"Answer HR questions")
    assert v.iat == int(NOW) + 30
    for name in ("iss", "sub", "aud", "exp", "task", "cap", "cnf"):
        assert v.claims[name] == m.claims[name]
    assert ExecutionRecord.decode(r.token).status == "completed"


def test_record_without_tool_call_and_after_mandate_expiry(
    user: Identity, agent: Identity, trust: TrustStore
) -> None:
    m = issue(user, agent)
    late = NOW + 7200  # long after the mandate expired: a record is evidence, still verifiable
    r = ExecutionRecord.issue(
        agent, m, exec_act=None, pred=[m.jti], out_hash=OUT, status="cancelled", now=late
    )
    v = ExecutionRecord.verify(r.token, trust, mandate=m, now=late)
    assert v.exec_act is None and "exec_act" not in v.claims and v.status == "cancelled"


def test_record_errors(user: Identity, agent: Identity, helper: Identity, trust: TrustStore) -> None:
    m = issue(user, agent)
    with pytest.raises(CapabilityNotGranted) as info:
        ExecutionRecord.issue(agent, m, exec_act="mcp.delete", pred=[], out_hash=OUT, status="completed")
    assert info.value.code == "capability_not_granted"
    with pytest.raises(KeyBindingMismatch):
        ExecutionRecord.issue(helper, m, exec_act=None, pred=[], out_hash=OUT, status="completed")
    for bad in ({"status": "done"}, {"out_hash": "sha-256:" + OUT}, {"pred": "a"}):
        args: dict[str, Any] = {"exec_act": None, "pred": [], "out_hash": OUT, "status": "completed"} | bad
        with pytest.raises(ClaimsInvalid):
            ExecutionRecord.issue(agent, m, **args)


def _forged_record(m: Mandate, signer: Identity, **changes: Any) -> str:
    claims = dict(m.claims) | {
        "iat": int(NOW),
        "exec_act": "mcp.search",
        "pred": [],
        "inp_hash": sha256_b64url(m.purpose.encode()),
        "out_hash": OUT,
        "status": "completed",
    }
    claims.update(changes)
    return jose.encode(signer, jose.ACT_TYP, {k: v for k, v in claims.items() if v is not None})


def test_forged_records_are_refused(
    user: Identity, agent: Identity, helper: Identity, trust: TrustStore
) -> None:
    m = issue(user, agent)
    ExecutionRecord.verify(_forged_record(m, agent), trust, mandate=m, now=NOW)  # the control case
    cases: dict[str, tuple[type[Exception], str]] = {
        "exec_act outside cap": (CapabilityNotGranted, _forged_record(m, agent, exec_act="mcp.delete")),
        "signed by a non-agent key": (KeyBindingMismatch, _forged_record(m, helper)),
        "cap widened in the record": (
            ClaimsInvalid,
            _forged_record(m, agent, cap=[*m.cap, {"action": "mcp.delete"}], exec_act="mcp.delete"),
        ),
        "other jti": (ClaimsInvalid, _forged_record(m, agent, jti=str(uuid.uuid4()))),
        "inp_hash not of the purpose": (ClaimsInvalid, _forged_record(m, agent, inp_hash=OUT)),
        "no status": (ClaimsInvalid, _forged_record(m, agent, status=None)),
        "iat in the future": (TokenNotYetValid, _forged_record(m, agent, iat=int(NOW) + 3600)),
    }
    for name, (error, token) in cases.items():
        with pytest.raises(error) as info:
            ExecutionRecord.verify(token, trust, mandate=m, now=NOW)
        assert type(info.value) is error, name
        assert_no_token(info.value, token)


def test_phase_confusion(user: Identity, agent: Identity, trust: TrustStore) -> None:
    m = issue(user, agent)
    with pytest.raises(PhaseError) as info:
        ExecutionRecord.verify(m.token, trust, now=NOW)
    assert info.value.code == "phase_invalid"
    with pytest.raises(PhaseError):
        ExecutionRecord.decode(m.token)
    r = ExecutionRecord.issue(agent, m, exec_act=None, pred=[], out_hash=OUT, status="failed", now=NOW)
    with pytest.raises(PhaseError):
        Mandate.decode(r.token)


def test_real_clock_defaults(user: Identity, agent: Identity, trust: TrustStore) -> None:
    m = Mandate.issue(user, agent=agent, audience=AUD, purpose="p", capabilities=["mcp.a"])
    assert abs(m.iat - time.time()) < 5
    assert Mandate.verify(m.token, trust, audience=AUD).jti == m.jti


def test_acceptance_negatives_each_raise_a_typed_error_without_the_token(
    user: Identity, agent: Identity, helper: Identity, trust: TrustStore
) -> None:
    """Issue 2, acceptance 4: one row per failure kind; the error is typed, coded and token-free."""
    import base64
    import hashlib
    import hmac
    import json

    from cryptography.hazmat.primitives import serialization

    from mcpclient_auth.errors import AlgorithmNotAllowed, ExtensionTooLarge, MalformedToken, UnknownKey

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    m = issue(user, agent)
    h, p, s = m.token.split(".")
    ect = ExecutionContextToken.mint(agent, audience=AUD, exec_act="mcp.search", pred=[m.jti], now=NOW)
    stranger = Identity.generate(name="stranger")
    pem = user.public.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    none_header = b64(json.dumps({"alg": "none", "typ": "act+jwt", "kid": user.kid}).encode())
    hs_header = b64(json.dumps({"alg": "HS256", "typ": "act+jwt", "kid": user.kid}).encode())
    hs_sig = b64(hmac.new(pem, f"{hs_header}.{p}".encode(), hashlib.sha256).digest())
    wrong_key_trust = trust_for(issuers=[(PublicKey.from_jwk(stranger.public_jwk() | {"kid": user.kid}), ["alice"])])
    escalated = _forged_sub(m, agent, helper, cap=[{"action": "mcp.delete"}])
    bad_record = _forged_record(m, agent, exec_act="mcp.delete")
    big_ext = jose.encode(
        agent, jose.ECT_TYP, dict(ect.claims) | {"jti": str(uuid.uuid4()), "ect_ext": {"x": "y" * 5000}}
    )
    rows: list[tuple[str, type[McpClientAuthError], str, Any]] = [
        (
            "tampered payload",
            TokenSignatureInvalid,
            f"{h}.{issue(user, agent, purpose='x').token.split('.')[1]}.{s}",
            None,
        ),
        (
            "tampered signature",
            TokenSignatureInvalid,
            f"{h}.{p}.{s[:-3]}{'AAA' if s[-3:] != 'AAA' else 'BBB'}",
            None,
        ),
        ("wrong key", TokenSignatureInvalid, m.token, wrong_key_trust),
        ("unknown kid", UnknownKey, jose.encode(stranger, jose.ACT_TYP, m.claims), None),
        ("alg none", AlgorithmNotAllowed, f"{none_header}.{p}.{s}", None),
        ("alg HS256, public key as secret", AlgorithmNotAllowed, f"{hs_header}.{p}.{hs_sig}", None),
        ("typ swapped ECT->ACT", InvalidTokenType, ect.token, None),
        ("expired", TokenExpired, m.token, NOW + 3600),
        ("iat in the future", TokenNotYetValid, m.token, NOW - 3600),
        ("audience mismatch", AudienceMismatch, m.token, "https://evil/mcp"),
        ("malformed", MalformedToken, f"{h}.{p}", None),
    ]
    for name, error, token, extra in rows:
        kwargs: dict[str, Any] = {"now": NOW}
        if isinstance(extra, TrustStore):
            store = extra
        else:
            store = trust
            if isinstance(extra, float):
                kwargs["now"] = extra
            elif isinstance(extra, str):
                kwargs["audience"] = extra
        with pytest.raises(McpClientAuthError) as info:
            Mandate.verify(token, store, **kwargs)
        assert type(info.value) is error, name
        assert_no_token(info.value, token)
        assert token not in repr(info.value) and token not in json.dumps(info.value.to_dict())
    checks: list[tuple[str, type[McpClientAuthError], str, Any]] = [
        (
            "typ swapped ACT->ECT",
            InvalidTokenType,
            m.token,
            lambda t: ExecutionContextToken.verify(t, trust, now=NOW),
        ),
        (
            "cap escalation",
            PrivilegeEscalation,
            escalated,
            lambda t: verify_delegation_chain([m.token, t], trust, now=NOW),
        ),
        (
            "record exec_act outside cap",
            CapabilityNotGranted,
            bad_record,
            lambda t: ExecutionRecord.verify(t, trust, now=NOW),
        ),
        (
            "ect_ext over limits",
            ExtensionTooLarge,
            big_ext,
            lambda t: ExecutionContextToken.verify(t, trust, now=NOW),
        ),
    ]
    for name, error, token, call in checks:
        with pytest.raises(McpClientAuthError) as info:
            call(token)
        assert type(info.value) is error, name
        assert_no_token(info.value, token)
    codes = {error.code for _, error, _, _ in rows + checks}
    assert len(codes) == 11  # the 3 signature rows share one code, as do the 2 alg rows and the 2 typ rows


def test_verified_parents_verify_a_shared_ancestor_once_and_never_a_different_token(
    user: Identity, agent: Identity, helper: Identity, worker: Identity, trust: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An offline verifier (ledger) keeps one memo per pass: runs delegated from one mandate verify
    # that mandate once. Keyed by the whole token text: another token with the same jti is verified.
    root = issue(user, agent)
    first = root.delegate(agent, agent=helper, capabilities=["mcp.search"], now=NOW)
    second = root.delegate(agent, agent=worker, capabilities=["mcp.search"], now=NOW)
    verified_tokens: list[str] = []
    real_verify = jose.verify

    def counting(token: str, *args: Any, **kwargs: Any) -> jose.DecodedJWS:
        verified_tokens.append(token)
        return real_verify(token, *args, **kwargs)

    monkeypatch.setattr(jose, "verify", counting)
    memo: dict[str, Mandate] = {}
    for sub in (first, second, first):
        verified = Mandate.verify(sub.token, trust, verify_time=False, verified_parents=memo)
        assert [m.jti for m in verified.chain] == [root.jti, sub.jti]
    assert verified_tokens.count(root.token) == 1
    assert verified_tokens.count(first.token) == 2  # the mandate itself is always verified
    assert list(memo) == [root.token]
    # The same root claims and jti signed by a key that is no issuer: verified, and refused.
    forged_root = Mandate._sign(agent, dict(root.claims))
    assert forged_root.jti == root.jti and forged_root.token != root.token
    forged_sub = forged_root.delegate(agent, agent=helper, capabilities=["mcp.search"], now=NOW)
    with pytest.raises(McpClientAuthError):
        Mandate.verify(forged_sub.token, trust, verify_time=False, verified_parents=memo)
    assert verified_tokens.count(forged_root.token) == 1
    assert list(memo) == [root.token]  # failures are never stored
    # With time checks the memo is not used (they depend on the clock).
    verified_tokens.clear()
    Mandate.verify(first.token, trust, now=NOW + 5, verified_parents=memo)
    assert verified_tokens.count(root.token) == 1
