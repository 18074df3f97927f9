"""The trust model (issue 12, finding 1): roles in the trust store; who may sign which mandate.

Every forged mandate here verified on the main branch before roles existed (``Mandate.verify``
accepted a signature by any key in the store): the agent key alone minting a salary mandate for maria,
erik's key minting one in maria's name, and delegations that widen, drop a constraint, outlive their
parent, go too deep or are signed by a key the parent does not bind.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from mcpclient_auth import jose
from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import ExecutionRecord, Mandate, verify_delegation_chain
from mcpclient_auth.cli import app
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import (
    ConfigurationError,
    DelegationError,
    IssuerNotAuthorized,
    KeyBindingMismatch,
    KeyFormatError,
    McpClientAuthError,
    PrivilegeEscalation,
    TrustRoleConflict,
    TrustRolesMissing,
)
from mcpclient_auth.httpsig import RequestSigner
from mcpclient_auth.keys import ROLES_MEMBER, Identity, TrustStore
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import IncomingHeaders, IncomingRequest, McpRequestVerifier, Rejection
from tests.support.trust import trust_for

AUD = "https://hr.example/mcp"
NOW = 1_800_000_000.0
SALARY = "mcp.get_employee_salary"
OFFICES = "mcp.get_office_locations"

runner = CliRunner()


@pytest.fixture(scope="module")
def maria() -> Identity:
    return Identity.generate("ES256", name="maria")


@pytest.fixture(scope="module")
def erik() -> Identity:
    return Identity.generate("ES256", name="erik")


@pytest.fixture(scope="module")
def agent() -> Identity:
    return Identity.generate("ES256", name="hr-agent")


@pytest.fixture(scope="module")
def helper() -> Identity:
    return Identity.generate("EdDSA", name="hr-helper")


@pytest.fixture(scope="module")
def worker() -> Identity:
    return Identity.generate("ES256", name="hr-worker")


@pytest.fixture(scope="module")
def trust(maria: Identity, erik: Identity, agent: Identity, helper: Identity, worker: Identity) -> TrustStore:
    return trust_for(issuers=[maria, erik], agents=[agent, helper, worker])


def root_for(maria: Identity, agent: Identity, **kw: Any) -> Mandate:
    options: dict[str, Any] = {
        "agent": agent,
        "audience": AUD,
        "purpose": "HR questions",
        "capabilities": [OFFICES, {"action": SALARY, "constraints": {"max_calls": 1}}],
        "now": NOW,
    }
    options.update(kw)
    return Mandate.issue(maria, **options)


def forged_child(parent: Mandate, signer: Identity, child: Identity, **changes: Any) -> str:
    """A sub-mandate built by hand, as an attacker holding ``signer`` would build it."""
    claims: dict[str, Any] = {
        "iss": parent.sub,
        "sub": child.name,
        "aud": parent.claims["aud"],
        "iat": parent.iat,
        "exp": parent.exp,
        "jti": str(uuid.uuid4()),
        "task": parent.task,
        "cap": [{"action": OFFICES}],
        "cnf": {"jkt": child.public.thumbprint},
        "del": {
            "depth": parent.depth + 1,
            "chain": [
                *(parent.delegation or {}).get("chain", []),
                {"jti": parent.jti, "iss": parent.iss, "sub": parent.sub},
            ],
            "parent": parent.token,
            **({"max_depth": parent.max_depth} if parent.max_depth is not None else {}),
        },
    }
    claims.update(changes)
    return jose.encode(signer, jose.ACT_TYP, claims)


# --- roles on the trust store ------------------------------------------------------------------------


def test_roles_register_who_may_sign_for_whom(maria: Identity, erik: Identity, agent: Identity) -> None:
    service = Identity.generate("ES256", name="mandate-service")
    store = TrustStore()
    assert not store.has_roles
    store.add_issuer(maria)
    store.add_issuer(service, principals=["maria", "erik"])
    store.add_agent(agent)
    assert store.has_roles and len(store) == 3
    assert store.may_issue(maria.kid, "maria") and not store.may_issue(maria.kid, "erik")
    assert store.may_issue(service.kid, "erik") and not store.may_issue(service.kid, "carol")
    assert not store.may_issue(agent.kid, "hr-agent") and not store.may_issue(erik.kid, "erik")
    assert store.is_agent(agent.kid) and not store.is_agent(maria.kid) and not store.is_agent(erik.kid)
    store.add_issuer(maria, principals=["maria-admin"])  # registering again adds principals
    assert store.issuers[maria.kid] == {"maria", "maria-admin"}
    assert store.max_delegation_depth == 4
    assert "3 keys, 2 issuers, 1 agents" in repr(store)


def test_a_key_is_never_both_issuer_and_agent(maria: Identity, agent: Identity) -> None:
    store = trust_for(issuers=[maria], agents=[agent])
    with pytest.raises(TrustRoleConflict) as info:
        store.add_agent(maria)
    assert info.value.code == "trust_role_conflict"
    with pytest.raises(TrustRoleConflict):
        store.add_issuer(agent)
    assert not store.is_agent(maria.kid) and not store.may_issue(agent.kid, agent.name)


def test_bad_role_arguments_are_typed_errors(maria: Identity) -> None:
    store = TrustStore()
    for bad in ([], [""], "maria", [5]):
        with pytest.raises(ConfigurationError):
            store.add_issuer(maria, principals=bad)  # type: ignore[arg-type]
    nameless = TrustStore([maria.public_jwk() | {"name": None}]).get(maria.kid)
    nameless.name = None
    with pytest.raises(ConfigurationError):
        store.add_issuer(nameless)  # no name, no principals: whose mandates would it sign?
    for depth in (-1, 1.5, "4"):
        with pytest.raises(ConfigurationError):
            store.max_delegation_depth = depth  # type: ignore[assignment]
    assert not store.has_roles


def test_the_trust_file_round_trips_roles(
    tmp_path: Path, maria: Identity, erik: Identity, agent: Identity
) -> None:
    store = trust_for(issuers=[maria, (erik, ["erik", "payroll"])], agents=[agent], max_delegation_depth=2)
    path = store.save(tmp_path / "jwks.json")
    document = json.loads(path.read_text())
    assert all("d" not in key for key in document["keys"])
    assert document[ROLES_MEMBER] == {
        "version": 1,
        "issuers": {maria.kid: ["maria"], erik.kid: ["erik", "payroll"]},
        "agents": [agent.kid],
        "delegation": {"max_depth": 2},
    }
    loaded = TrustStore.from_jwks(path)
    assert loaded.issuers == store.issuers and loaded.agents == store.agents
    assert loaded.max_delegation_depth == 2
    # A directory of key files finds the roles in the JWKS among them.
    maria.save(tmp_path / "maria.jwk")
    from_dir = TrustStore.from_directory(tmp_path)
    assert from_dir.issuers == store.issuers and from_dir.agents == store.agents


def test_a_jwks_without_roles_still_loads_for_signature_only_uses(tmp_path: Path, agent: Identity) -> None:
    plain = {"keys": [agent.public_jwk()]}
    store = TrustStore.from_jwks(plain)
    assert agent.kid in store and not store.has_roles
    assert ROLES_MEMBER not in store.to_jwks()
    assert jose.verify(jose.encode(agent, jose.ECT_TYP, {"a": 1}), store, typs={jose.ECT_TYP}).claims == {
        "a": 1
    }


@pytest.mark.parametrize(
    "roles",
    [
        "issuers",
        {"version": 2, "issuers": {}, "agents": []},
        {"version": 1, "issuers": [], "agents": []},
        {"version": 1, "issuers": {}, "agents": {}},
        {"version": 1, "issuers": {"unknown-kid": ["maria"]}, "agents": []},
        {"version": 1, "issuers": {}, "agents": ["unknown-kid"]},
        {"version": 1, "issuers": {"KID": "maria"}, "agents": []},
        {"version": 1, "issuers": {"KID": []}, "agents": []},
        {"version": 1, "issuers": {"KID": ["maria"]}, "agents": ["KID"]},
        {"version": 1, "issuers": {}, "agents": [], "delegation": {"max_depth": -1}},
    ],
)
def test_malformed_roles_are_refused(maria: Identity, roles: Any) -> None:
    if isinstance(roles, dict):
        roles = json.loads(json.dumps(roles).replace("KID", maria.kid))
    with pytest.raises(KeyFormatError):
        TrustStore.from_jwks({"keys": [maria.public_jwk()], ROLES_MEMBER: roles})


# --- mandate paths refuse a store without roles ------------------------------------------------------


def test_mandate_paths_refuse_a_store_without_roles(tmp_path: Path, maria: Identity, agent: Identity) -> None:
    mandate = root_for(maria, agent)
    keys_only = TrustStore([maria, agent])
    with pytest.raises(TrustRolesMissing) as info:
        Mandate.verify(mandate.token, keys_only, now=NOW)
    assert info.value.code == "trust_roles_missing"
    assert "mcpclient-auth keys trust" in str(info.value) and "add_issuer" in str(info.value)
    record = ExecutionRecord.issue(agent, mandate, exec_act=None, pred=[], out_hash="A" * 43, status="failed")
    with pytest.raises(TrustRolesMissing):
        ExecutionRecord.verify(record.token, keys_only, verify_time=False)
    with pytest.raises(TrustRolesMissing):
        verify_ledger(tmp_path / "none.jsonl", keys_only)


# --- forged top-level mandates -------------------------------------------------------------------------


def test_the_agent_key_alone_cannot_mint_a_mandate(
    maria: Identity, agent: Identity, trust: TrustStore
) -> None:
    # Finding 1(a): the agent key signs {"iss": "maria", "cap": [salary]} bound to itself.
    forged = Mandate.issue(
        agent, iss="maria", agent=agent.public, audience=AUD, purpose="x", capabilities=[SALARY]
    )
    assert forged.iss == "maria" and forged.binds(agent)
    with pytest.raises(IssuerNotAuthorized) as info:
        Mandate.verify(forged.token, trust, audience=AUD)
    assert info.value.code == "agent_key_not_issuer"
    assert forged.token.split(".")[2] not in str(info.value)


def test_another_users_key_cannot_mint_for_maria(erik: Identity, agent: Identity, trust: TrustStore) -> None:
    # Finding 1(b): erik's own key signs a mandate that claims iss "maria".
    forged = Mandate.issue(erik, iss="maria", agent=agent, audience=AUD, purpose="x", capabilities=[SALARY])
    with pytest.raises(IssuerNotAuthorized) as info:
        Mandate.verify(forged.token, trust, audience=AUD)
    assert info.value.code == "issuer_not_authorized" and "'maria'" in str(info.value)
    # ... while erik's mandates for erik still verify.
    own = Mandate.issue(erik, agent=agent, audience=AUD, purpose="x", capabilities=[OFFICES])
    assert Mandate.verify(own.token, trust, audience=AUD).iss == "erik"


def test_a_mandate_service_signs_only_for_its_principals(agent: Identity) -> None:
    service = Identity.generate("ES256", name="mandate-service")
    store = trust_for(issuers=[(service, ["maria", "erik"])], agents=[agent])
    for principal in ("maria", "erik"):
        m = Mandate.issue(
            service, iss=principal, agent=agent, audience=AUD, purpose="p", capabilities=[OFFICES]
        )
        assert Mandate.verify(m.token, store).principal == principal
    carol = Mandate.issue(
        service, iss="carol", agent=agent, audience=AUD, purpose="p", capabilities=[OFFICES]
    )
    with pytest.raises(IssuerNotAuthorized):
        Mandate.verify(carol.token, store)
    own_name = Mandate.issue(service, agent=agent, audience=AUD, purpose="p", capabilities=[OFFICES])
    with pytest.raises(IssuerNotAuthorized):  # registered for maria and erik, not for itself
        Mandate.verify(own_name.token, store)


# --- delegation ---------------------------------------------------------------------------------------


def test_a_two_link_chain_verifies_from_the_leaf_alone(
    maria: Identity, agent: Identity, helper: Identity, worker: Identity, trust: TrustStore
) -> None:
    root = root_for(maria, agent)
    sub = root.delegate(agent, agent=helper, capabilities=[OFFICES, SALARY], now=NOW)
    leaf = sub.delegate(
        helper,
        agent=worker,
        capabilities=[OFFICES, {"action": SALARY, "constraints": {"max_calls": 1, "employee": "bob"}}],
        now=NOW,
    )
    assert sub.constraints(SALARY) == {"max_calls": 1}  # inherited, never dropped
    verified = Mandate.verify(leaf.token, trust, audience=AUD, now=NOW)
    assert [m.jti for m in verified.chain] == [root.jti, sub.jti, leaf.jti]
    assert verified.parent is not None and verified.parent.jti == sub.jti
    assert (verified.iss, verified.sub, verified.principal, verified.depth) == (
        "hr-helper",
        "hr-worker",
        "maria",
        2,
    )
    assert [m.jti for m in verify_delegation_chain([root.token, sub.token, leaf.token], trust, now=NOW)] == [
        root.jti,
        sub.jti,
        leaf.jti,
    ]
    with pytest.raises(DelegationError):  # the tokens given must be the leaf's own ancestry
        verify_delegation_chain([sub.token, leaf.token], trust, now=NOW)


def forged_delegations(
    maria: Identity, erik: Identity, agent: Identity, helper: Identity, worker: Identity
) -> dict[str, tuple[type[McpClientAuthError], str, str]]:
    """name -> (error class, code, token): every way a delegation may not widen its parent."""
    root = root_for(maria, agent)
    bounded = root_for(maria, agent, max_delegation_depth=1)
    sub = Mandate.decode(forged_child(bounded, agent, helper))
    unbound = root_for(maria, "hr-agent")
    fake_root = Mandate.issue(
        agent, iss="maria", agent=agent, audience=AUD, purpose="x", capabilities=[SALARY], now=NOW
    )
    return {
        "widens capabilities": (
            PrivilegeEscalation,
            "privilege_escalation",
            forged_child(root, agent, helper, cap=[{"action": OFFICES}, {"action": "mcp.delete_employee"}]),
        ),
        "drops a constraint": (
            PrivilegeEscalation,
            "privilege_escalation",
            forged_child(root, agent, helper, cap=[{"action": SALARY}]),
        ),
        "changes a constraint": (
            PrivilegeEscalation,
            "privilege_escalation",
            forged_child(root, agent, helper, cap=[{"action": SALARY, "constraints": {"max_calls": 100}}]),
        ),
        "widens the audience": (
            PrivilegeEscalation,
            "privilege_escalation",
            forged_child(root, agent, helper, aud=[AUD, "https://payroll.example/mcp"]),
        ),
        "outlives its parent": (
            DelegationError,
            "delegation_outlives_parent",
            forged_child(root, agent, helper, exp=root.exp + 3600),
        ),
        "exceeds the root's max_depth": (
            DelegationError,
            "delegation_too_deep",
            forged_child(sub, helper, worker),
        ),
        "signed by a key the parent does not bind": (
            DelegationError,
            "delegation_signer_mismatch",
            forged_child(root, helper, helper),
        ),
        "signed by another user's key": (
            DelegationError,
            "delegation_signer_mismatch",
            forged_child(root, erik, helper),
        ),
        "parent binds no agent key": (
            DelegationError,
            "delegation_unbound_parent",
            forged_child(unbound, agent, helper),
        ),
        "issuer is not the parent's subject": (
            DelegationError,
            "delegation_chain_broken",
            forged_child(root, agent, helper, iss="maria"),
        ),
        "carries no parent": (
            DelegationError,
            "delegation_chain_broken",
            forged_child(
                root,
                agent,
                helper,
                **{"del": {"depth": 1, "chain": [{"jti": root.jti, "iss": "maria", "sub": "hr-agent"}]}},
            ),
        ),
        "rests on a forged root": (
            IssuerNotAuthorized,
            "agent_key_not_issuer",
            forged_child(fake_root, agent, helper, cap=[{"action": SALARY}]),
        ),
    }


def test_forged_delegations_are_refused_by_mandate_verify(
    maria: Identity, erik: Identity, agent: Identity, helper: Identity, worker: Identity, trust: TrustStore
) -> None:
    for name, (error, code, token) in forged_delegations(maria, erik, agent, helper, worker).items():
        with pytest.raises(McpClientAuthError) as info:
            Mandate.verify(token, trust, audience=AUD, now=NOW)
        assert type(info.value) is error, (name, info.value)
        assert info.value.code == code, name
        assert token.split(".")[2] not in str(info.value)


def test_the_trust_store_bounds_the_depth_and_the_recursion(
    maria: Identity, agent: Identity, helper: Identity, worker: Identity
) -> None:
    root = root_for(maria, agent)
    sub = root.delegate(agent, agent=helper, capabilities=[OFFICES], now=NOW)
    leaf = sub.delegate(helper, agent=worker, capabilities=[OFFICES], now=NOW)
    shallow = trust_for(issuers=[maria], agents=[agent, helper, worker], max_delegation_depth=1)
    assert Mandate.verify(sub.token, shallow, now=NOW).depth == 1
    with pytest.raises(DelegationError) as info:
        Mandate.verify(leaf.token, shallow, now=NOW)
    assert info.value.code == "delegation_too_deep"
    # A depth claim that does not follow its parent's is refused before the parent's parent is read.
    skipping = forged_child(sub, helper, worker, **{"del": {**leaf.claims["del"], "depth": 3}})
    with pytest.raises(McpClientAuthError):
        Mandate.verify(skipping, trust_for(issuers=[maria], agents=[agent, helper, worker]), now=NOW)


def test_a_delegation_by_a_key_that_is_no_agent_is_refused(maria: Identity, helper: Identity) -> None:
    # The parent binds a key that the trust store does not know as an agent (here: erik-like user key).
    user_as_agent = Identity.generate("ES256", name="not-an-agent")
    store = trust_for(issuers=[maria], agents=[helper], keys=[user_as_agent])
    root = root_for(maria, user_as_agent)
    sub = root.delegate(user_as_agent, agent=helper, capabilities=[OFFICES], now=NOW)
    with pytest.raises(DelegationError) as info:
        Mandate.verify(sub.token, store, now=NOW)
    assert info.value.code == "delegation_signer_mismatch"


def test_delegate_may_add_constraints_but_never_drop_them(
    maria: Identity, agent: Identity, helper: Identity
) -> None:
    root = root_for(maria, agent)
    narrower = root.delegate(
        agent,
        agent=helper,
        capabilities=[{"action": SALARY, "constraints": {"max_calls": 1, "x": 2}}],
        now=NOW,
    )
    assert narrower.constraints(SALARY) == {"max_calls": 1, "x": 2}
    added = root.delegate(
        agent, agent=helper, capabilities=[{"action": OFFICES, "constraints": {"max_calls": 3}}]
    )
    assert added.constraints(OFFICES) == {"max_calls": 3}
    with pytest.raises(PrivilegeEscalation):
        root.delegate(
            agent, agent=helper, capabilities=[{"action": SALARY, "constraints": {"x": 2}}], now=NOW
        )


def test_a_record_must_be_signed_by_an_agent_key(maria: Identity, agent: Identity) -> None:
    # A mandate bound to no key names its agent by ``sub`` only: the record's signer must still be an agent.
    unbound = root_for(maria, "maria")
    store = trust_for(issuers=[maria], agents=[agent])
    record = ExecutionRecord.issue(maria, unbound, exec_act=None, pred=[], out_hash="A" * 43, status="failed")
    with pytest.raises(KeyBindingMismatch) as info:
        ExecutionRecord.verify(record.token, store, verify_time=False)
    assert info.value.code == "signer_not_agent"


# --- CLI: keys init / keys trust / mandate issue / token verify ----------------------------------------


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_keys_init_writes_the_roles(tmp_path: Path) -> None:
    code, out, _ = invoke("keys", "init", "--dir", str(tmp_path / "keys"), "--user-name", "maria")
    assert code == 0 and "issues mandates for 'maria'" in out
    trust = TrustStore.from_jwks(tmp_path / "keys" / "jwks.json")
    user = Identity.load(tmp_path / "keys" / "user.jwk")
    agent = Identity.load(tmp_path / "keys" / "agent.jwk")
    assert trust.may_issue(user.kid, "maria") and trust.is_agent(agent.kid)
    assert not trust.may_issue(agent.kid, "agent") and not trust.is_agent(user.kid)


def test_keys_trust_adds_roles_to_an_existing_jwks(tmp_path: Path, maria: Identity, agent: Identity) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(TrustStore([maria, agent]).to_jwks()))  # an old, role-less key set
    maria.save(tmp_path / "maria.jwk")
    (tmp_path / "agent.pub.jwk").write_text(json.dumps(agent.public_jwk()))
    code, out, err = invoke(
        "keys", "trust", str(jwks), "--issuer", str(tmp_path / "maria.jwk"), "--principal", "maria",
        "--principal", "maria-admin", "--agent", str(tmp_path / "agent.pub.jwk"), "--max-depth", "2",
    )  # fmt: skip
    assert code == 0, err
    assert "may sign for: maria, maria-admin" in out and f"agent  kid={agent.kid}" in out
    trust = TrustStore.from_jwks(jwks)
    assert trust.may_issue(maria.kid, "maria-admin") and trust.is_agent(agent.kid)
    assert trust.max_delegation_depth == 2
    assert '"d"' not in jwks.read_text()  # the private key file never leaks into the trust file
    # A kid works as well as a file; a conflicting role is a usage error.
    erik = Identity.generate("ES256", name="erik")
    (tmp_path / "erik.jwk").write_text(json.dumps(erik.public_jwk()))
    assert invoke("keys", "trust", str(jwks), "--issuer", str(tmp_path / "erik.jwk"))[0] == 0
    code, _, err = invoke("keys", "trust", str(jwks), "--agent", maria.kid)
    assert code == 2 and "trust_role_conflict" in err
    code, _, err = invoke("keys", "trust", str(jwks), "--issuer", "no-such-kid")
    assert code == 2 and "neither a key file nor the kid" in err
    code, _, err = invoke("keys", "trust", str(jwks), "--principal", "x")
    assert code == 2


def test_mandate_issue_refuses_the_agent_key_and_unregistered_issuers(
    tmp_path: Path, maria: Identity, erik: Identity, agent: Identity
) -> None:
    for identity, name in ((maria, "maria"), (erik, "erik"), (agent, "agent")):
        identity.save(tmp_path / f"{name}.jwk")
    jwks = trust_for(issuers=[maria, erik], agents=[agent]).save(tmp_path / "jwks.json")
    base = ["mandate", "issue", "--aud", AUD, "--purpose", "p", "--cap", SALARY]
    code, _, err = invoke(
        *base, "--issuer-key", str(tmp_path / "agent.jwk"), "--agent-key", str(tmp_path / "agent.jwk")
    )
    assert code == 2 and "agent never signs its own mandate" in err
    other_agent = Identity.generate("ES256", name="other")
    other_agent.save(tmp_path / "other.jwk")
    extended = trust_for(issuers=[maria, erik], agents=[agent, other_agent]).save(tmp_path / "jwks2.json")
    code, _, err = invoke(
        *base, "--issuer-key", str(tmp_path / "other.jwk"), "--agent-key", str(tmp_path / "agent.jwk"),
        "--jwks", str(extended),
    )  # fmt: skip
    assert code == 2 and "agent key" in err
    code, _, err = invoke(
        *base, "--issuer-key", str(tmp_path / "erik.jwk"), "--agent-key", str(tmp_path / "agent.jwk"),
        "--iss", "maria", "--jwks", str(jwks),
    )  # fmt: skip
    assert code == 2 and "for iss 'maria'" in err
    code, out, err = invoke(
        *base, "--issuer-key", str(tmp_path / "maria.jwk"), "--agent-key", str(tmp_path / "agent.jwk"),
        "--jwks", str(jwks),
    )  # fmt: skip
    assert code == 0, err
    token = out.strip()
    assert invoke("token", "verify", token, "--jwks", str(jwks), "--aud", AUD)[0] == 0


def test_token_verify_refuses_a_role_less_jwks_and_forged_mandates(
    tmp_path: Path, maria: Identity, erik: Identity, agent: Identity
) -> None:
    keys_only = tmp_path / "keys-only.json"
    keys_only.write_text(json.dumps(TrustStore([maria, erik, agent]).to_jwks()))
    jwks = trust_for(issuers=[maria, erik], agents=[agent]).save(tmp_path / "jwks.json")
    genuine = root_for(maria, agent, now=None).token
    code, _, err = invoke("token", "verify", genuine, "--jwks", str(keys_only))
    assert code == 2 and "mcpclient-auth keys trust" in err
    forged = Mandate.issue(
        erik, iss="maria", agent=agent, audience=AUD, purpose="x", capabilities=[SALARY]
    ).token
    code, _, err = invoke("token", "verify", forged, "--jwks", str(jwks))
    assert code == 1 and "issuer_not_authorized" in err
    assert invoke("token", "verify", genuine, "--jwks", str(jwks))[0] == 0


# --- the server verifier ----------------------------------------------------------------------------------


def _signed_ping(mandate: Mandate, signer: Identity, *, ect_iss: str | None = None) -> IncomingRequest:
    """A signed ``ping`` as AgentRun sends it; ``ect_iss`` forges the ECT's ``iss`` (the signer's name)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    ect = ExecutionContextToken.mint(
        signer, audience=[AUD], exec_act="mcp.rpc.ping", pred=[mandate.jti], wid=mandate.jti,
        inp_hash=sha256_b64url(body),
    )  # fmt: skip
    ect_token = (
        ect.token if ect_iss is None else jose.encode(signer, jose.ECT_TYP, ect.claims | {"iss": ect_iss})
    )
    request = httpx.Request(
        "POST",
        AUD,
        content=body,
        headers={
            "content-type": "application/json",
            "act-mandate": mandate.token,
            "execution-context": ect_token,
        },
    )
    RequestSigner(signer).sign(request)
    return IncomingRequest(
        request.method, str(request.url), IncomingHeaders(request.headers.raw), request.content
    )


def test_the_server_verifier_needs_roles_and_agent_signed_requests(maria: Identity, agent: Identity) -> None:
    with pytest.raises(TrustRolesMissing):
        McpRequestVerifier(TrustStore([maria, agent]), audience=AUD)
    verifier = McpRequestVerifier(trust_for(issuers=[maria], agents=[agent]), audience=AUD)
    genuine = Mandate.issue(maria, agent=agent, audience=AUD, purpose="p", capabilities=[OFFICES])
    assert not isinstance(verifier.check(_signed_ping(genuine, agent)), Rejection)
    # maria binds her own (issuer) key as the "agent" and signs the calls herself: no agent in the loop.
    self_bound = Mandate.issue(maria, agent=maria, audience=AUD, purpose="p", capabilities=[OFFICES])
    outcome = verifier.check(_signed_ping(self_bound, maria))
    assert isinstance(outcome, Rejection) and outcome.status == 401
    assert outcome.error.code == "signer_not_agent"
    forged = Mandate.issue(
        agent, iss="maria", agent=agent.public, audience=AUD, purpose="p", capabilities=[SALARY]
    )
    outcome = verifier.check(_signed_ping(forged, agent))
    assert isinstance(outcome, Rejection) and outcome.status == 401
    assert outcome.error.code == "agent_key_not_issuer" and outcome.mandate is None  # nothing to audit under


def test_worker_processes_judge_with_the_same_roles(tmp_path: Path, maria: Identity, agent: Identity) -> None:
    trust = trust_for(issuers=[maria], agents=[agent])
    path = tmp_path / "ledger.jsonl"
    genuine = AgentRun(
        agent=agent, issuer=maria, purpose="p", capabilities=[OFFICES], endpoint=AUD, ledger=path
    )
    genuine.close()
    forged = Mandate.issue(
        agent, iss="maria", agent=agent.public, audience=AUD, purpose="x", capabilities=[SALARY]
    )
    AgentRun(agent=agent, mandate=forged.token, endpoint=AUD, ledger=path).close()
    for jobs in (1, 2):  # jobs=2 ships the store to spawned workers as a JWKS: the roles must travel too
        report = verify_ledger(path, trust, jobs=jobs)
        assert report.checks() == {"issuer_not_authorized": 1}, (jobs, report.failures)
        assert report.runs[genuine.id].verified and not report.runs[forged.jti].verified


def test_an_unbound_mandates_run_is_signed_by_the_agent_it_names(
    tmp_path: Path, maria: Identity, agent: Identity, worker: Identity
) -> None:
    # A mandate that names its agent without binding a key: another agent key that puts the right
    # name into iss is still not that agent's key.
    trust = trust_for(issuers=[maria], agents=[agent, worker])
    unbound = Mandate.issue(maria, agent="hr-agent", audience=AUD, purpose="p", capabilities=[OFFICES])
    path = tmp_path / "ledger.jsonl"
    with Ledger(path) as ledger:
        ledger.append(run=unbound.jti, kind="mandate", jti=unbound.jti, token=unbound.token)
        for signer in (agent, worker):
            ect = ExecutionContextToken.mint(
                signer, audience=AUD, exec_act=OFFICES, pred=[unbound.jti], wid=unbound.jti
            )
            token = jose.encode(signer, jose.ECT_TYP, ect.claims | {"iss": "hr-agent"})
            ledger.append(
                run=unbound.jti, kind="ect", jti=ect.jti, token=token, meta={"method": "tools/call"}
            )
            ledger.append(run=unbound.jti, kind="response", jti=ect.jti, meta={"status": 200})
        ledger.seal(unbound.jti, worker)
    report = verify_ledger(path, trust)
    assert report.checks() == {"ect_issuer_mismatch": 1, "seal_invalid": 1}
    assert {f.reason for f in report.failures} == {
        "the ECT is not signed by a key named as the agent",
        "the seal is not signed by a key named as the run's agent",
    }


def test_a_name_only_mandate_is_acted_on_by_the_agent_it_names(
    maria: Identity, agent: Identity, worker: Identity
) -> None:
    verifier = McpRequestVerifier(
        trust_for(issuers=[maria], agents=[agent, worker]), audience=AUD, require_key_binding=False
    )
    unbound = Mandate.issue(maria, agent="hr-agent", audience=AUD, purpose="p", capabilities=[OFFICES])
    assert not isinstance(verifier.check(_signed_ping(unbound, agent)), Rejection)
    outcome = verifier.check(_signed_ping(unbound, worker, ect_iss="hr-agent"))  # another agent, lying
    assert isinstance(outcome, Rejection) and outcome.status == 401
    assert outcome.error.code == "signature_policy_violation"
