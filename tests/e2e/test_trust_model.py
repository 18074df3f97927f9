"""The trust model end to end (issue 12, finding 1; acceptance 1 and 2) against the demo's HR server.

The keys are laid out as the demo lays them out: maria (manager) and erik (employee) each hold an
issuer key for themselves; ``hr-agent`` and its sub-agent ``hr-helper`` hold agent keys. Each forged
mandate is refused four times over — by ``AgentRun(trust=...)``, by the middleware (401 with a problem
code), by ``verify_ledger`` and by ``mcpclient-auth ledger verify`` (exit 1, a named check) — while a
valid chain maria -> hr-agent -> hr-helper calls the salary tool through the middleware and verifies.
On main before roles, every one of these forged mandates was accepted: 200 and ``ledger verify`` 0.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from typer.testing import CliRunner

from mcpclient_auth import jose
from mcpclient_auth.act import Mandate
from mcpclient_auth.cli import app as cli_app
from mcpclient_auth.demo.hr import hr_app
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.errors import (
    ConfigurationError,
    DelegationError,
    IssuerNotAuthorized,
    McpClientAuthError,
    PrivilegeEscalation,
    TrustRolesMissing,
)
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import PROBLEM_TYPE_PREFIX
from tests.support.trust import trust_for

pytestmark = pytest.mark.e2e

SALARY = "mcp.get_employee_salary"
OFFICES = "mcp.get_office_locations"
ACCEPT = "application/json, text/event-stream"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
SALARY_CALL = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "get_employee_salary", "arguments": {"employee": "carol"}},
}


@dataclass
class Hr:
    url: str
    maria: Identity
    erik: Identity
    agent: Identity
    helper: Identity
    trust: TrustStore
    jwks: Path
    server_ledger: Path

    def root(self, **kw: Any) -> Mandate:
        """maria's genuine mandate for hr-agent: offices, and salary at most once."""
        options: dict[str, Any] = {
            "agent": self.agent,
            "audience": self.url,
            "purpose": "HR questions for maria",
            "capabilities": [OFFICES, {"action": SALARY, "constraints": {"max_calls": 1}}],
        }
        options.update(kw)
        return Mandate.issue(self.maria, **options)


@pytest.fixture(scope="module")
def hr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hr]:
    maria = Identity.generate("ES256", name="maria")
    erik = Identity.generate("ES256", name="erik")
    agent = Identity.generate("ES256", name="hr-agent")
    helper = Identity.generate("ES256", name="hr-helper")
    trust = trust_for(issuers=[maria, erik], agents=[agent, helper])
    directory = tmp_path_factory.mktemp("trust-model")
    jwks = trust.save(directory / "jwks.json")
    server_ledger = directory / "server-ledger.jsonl"
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with running(hr_app(trust, audience=url, ledger=server_ledger), port):
        yield Hr(url, maria, erik, agent, helper, trust, jwks, server_ledger)


def child_of(parent: Mandate, signer: Identity, child: Identity, **changes: Any) -> str:
    """A sub-mandate built by hand, as whoever holds ``signer`` would build it."""
    claims: dict[str, Any] = {
        "iss": parent.sub,
        "sub": child.name,
        "aud": parent.claims["aud"],
        "iat": int(time.time()),
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


@dataclass(frozen=True)
class Forgery:
    token: str
    #: The agent key the forged mandate binds (it signs the requests).
    holder: Identity
    error: type[McpClientAuthError]
    code: str
    #: The ledger check ``verify_ledger`` names.
    check: str


def forgeries(hr: Hr) -> dict[str, Forgery]:
    root = hr.root()
    salary_once = [{"action": SALARY, "constraints": {"max_calls": 1}}]  # every forgery wants the salary
    bounded_sub = Mandate.decode(
        child_of(hr.root(max_delegation_depth=1), hr.agent, hr.helper, cap=salary_once)
    )
    return {
        # 1(a): the agent key alone mints maria's salary mandate, bound to itself.
        "agent key signs iss maria": Forgery(
            Mandate.issue(
                hr.agent,
                iss="maria",
                agent=hr.agent.public,
                audience=hr.url,
                purpose="x",
                capabilities=[SALARY],
            ).token,
            hr.agent,
            IssuerNotAuthorized,
            "agent_key_not_issuer",
            "issuer_not_authorized",
        ),
        # 1(b): erik's own key signs a mandate that claims to be maria's.
        "erik's key signs iss maria": Forgery(
            Mandate.issue(
                hr.erik, iss="maria", agent=hr.agent, audience=hr.url, purpose="x", capabilities=[SALARY]
            ).token,
            hr.agent,
            IssuerNotAuthorized,
            "issuer_not_authorized",
            "issuer_not_authorized",
        ),
        # 1(c): delegations that widen their parent in every way there is.
        "delegation widens capabilities": Forgery(
            child_of(hr.root(capabilities=[OFFICES]), hr.agent, hr.helper, cap=[{"action": SALARY}]),
            hr.helper,
            PrivilegeEscalation,
            "privilege_escalation",
            "delegation_invalid",
        ),
        "delegation drops a constraint": Forgery(
            child_of(root, hr.agent, hr.helper, cap=[{"action": SALARY}]),
            hr.helper,
            PrivilegeEscalation,
            "privilege_escalation",
            "delegation_invalid",
        ),
        "delegation outlives its parent": Forgery(
            child_of(root, hr.agent, hr.helper, exp=root.exp + 3600, cap=salary_once),
            hr.helper,
            DelegationError,
            "delegation_outlives_parent",
            "delegation_invalid",
        ),
        "delegation exceeds the depth": Forgery(
            child_of(bounded_sub, hr.helper, hr.agent, cap=salary_once),
            hr.agent,
            DelegationError,
            "delegation_too_deep",
            "delegation_invalid",
        ),
        "delegation signed by a key the parent does not bind": Forgery(
            child_of(root, hr.helper, hr.helper, cap=salary_once),
            hr.helper,
            DelegationError,
            "delegation_signer_mismatch",
            "delegation_invalid",
        ),
    }


FORGERIES = [
    "agent key signs iss maria",
    "erik's key signs iss maria",
    "delegation widens capabilities",
    "delegation drops a constraint",
    "delegation outlives its parent",
    "delegation exceeds the depth",
    "delegation signed by a key the parent does not bind",
]


def problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    document = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert (document["code"], document["type"]) == (code, PROBLEM_TYPE_PREFIX + code)


def cli_verify(ledger: Path, jwks: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli_app, ["ledger", "verify", str(ledger), "--jwks", str(jwks), *extra])
    return result.exit_code, result.stdout


@pytest.mark.parametrize("name", FORGERIES)
def test_a_forged_mandate_is_refused_everywhere(hr: Hr, tmp_path: Path, name: str) -> None:
    forgery = forgeries(hr)[name]

    # 1. Mandate.verify, and AgentRun given the trust store: refused before anything is sent.
    with pytest.raises(forgery.error) as info:
        Mandate.verify(forgery.token, hr.trust, audience=hr.url)
    assert info.value.code == forgery.code
    with pytest.raises(forgery.error):
        AgentRun(
            agent=forgery.holder,
            mandate=forgery.token,
            endpoint=hr.url,
            ledger=tmp_path / "x.jsonl",
            trust=hr.trust,
        )

    # 2. The middleware, when a client sends it anyway (an AgentRun that was not given the trust store).
    ledger = tmp_path / "client.jsonl"
    run = AgentRun(agent=forgery.holder, mandate=forgery.token, endpoint=hr.url, ledger=ledger)
    with httpx.Client(timeout=10) as http:
        run.install(http)
        problem(http.post(hr.url, json=INIT, headers={"accept": ACCEPT}), 401, forgery.code)
        problem(http.post(hr.url, json=SALARY_CALL, headers={"accept": ACCEPT}), 401, forgery.code)
    run.close()
    # A forged mandate never reaches the server's audit ledger (it cannot open a run there).
    if hr.server_ledger.exists():
        assert all(e.run != run.id for e in Ledger.open(hr.server_ledger).entries())

    # 3. verify_ledger over the client's own, self-consistent ledger: the mandate's check fails.
    report = verify_ledger(ledger, hr.trust)
    assert not report.ok
    assert forgery.check in report.checks(), report.failures
    assert next(f.reason for f in report.failures if f.check == forgery.check).startswith(
        f"mandate: {forgery.code}"
    )
    assert report.checks().get("token_invalid") is None

    # 4. mcpclient-auth ledger verify: exit 1, the named check.
    code, out = cli_verify(ledger, hr.jwks)
    assert code == 1, out
    assert f"FAIL {forgery.check}" in out


def test_agent_run_refuses_the_agent_key_as_issuer_and_unregistered_issuers(hr: Hr, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        AgentRun(
            agent=hr.agent,
            issuer=hr.agent,
            purpose="p",
            capabilities=[SALARY],
            endpoint=hr.url,
            ledger=tmp_path / "a",
        )
    assert "agent's own key" in str(info.value)
    # erik's key, labelled "maria": iss says maria, the trust store says the key is erik's.
    erik_as_maria = Identity.from_jwk(hr.erik.private_jwk() | {"name": "maria"})
    with pytest.raises(IssuerNotAuthorized):
        AgentRun(
            agent=hr.agent,
            issuer=erik_as_maria,
            purpose="p",
            capabilities=[SALARY],
            endpoint=hr.url,
            ledger=tmp_path / "b",
            trust=hr.trust,
        )
    with pytest.raises(TrustRolesMissing):
        AgentRun(
            agent=hr.agent,
            issuer=hr.maria,
            purpose="p",
            capabilities=[OFFICES],
            endpoint=hr.url,
            ledger=tmp_path / "c",
            trust=TrustStore([hr.maria, hr.agent]),
        )
    stranger = Identity.generate("ES256", name="stranger")
    with pytest.raises(ConfigurationError) as info:
        AgentRun(
            agent=stranger,
            issuer=hr.maria,
            purpose="p",
            capabilities=[OFFICES],
            endpoint=hr.url,
            ledger=tmp_path / "d",
            trust=hr.trust,
        )
    assert "not a registered agent key" in str(info.value)


async def test_a_two_link_chain_works_end_to_end_and_verifies(hr: Hr, tmp_path: Path) -> None:
    # maria -> hr-agent (her own mandate) -> hr-helper (a narrower sub-mandate: salary, once, for bob).
    root = hr.root()
    sub = root.delegate(
        hr.agent,
        agent=hr.helper,
        capabilities=[OFFICES, {"action": SALARY, "constraints": {"max_calls": 1}}],
        purpose="Look up Bob's salary for maria",
        ttl=300,
    )
    ledger = tmp_path / "helper.jsonl"
    run = AgentRun(agent=hr.helper, mandate=sub.token, endpoint=hr.url, ledger=ledger, trust=hr.trust)
    assert [m.sub for m in run.mandate.chain] == ["hr-agent", "hr-helper"]
    assert run.principal.id == "maria"  # the chain's root: on whose behalf the sub-agent acts
    async with (
        run,
        run.httpx_client_factory()() as http,
        streamable_http_client(hr.url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        offices = await session.call_tool("get_office_locations", {})
        salary = await session.call_tool("get_employee_salary", {"employee": "bob"})
    assert not offices.isError and not salary.isError
    assert salary.structuredContent == {"employee": "bob", "salary": 98_000, "asked_by": "maria"}

    report = verify_ledger(ledger, hr.trust)
    assert report.ok, report.failures
    assert report.runs[run.id].principal == "maria"
    assert cli_verify(ledger, hr.jwks)[0] == 0
    # This server has no ledger_key: nothing signs its ledger, all of it is the (accepted) tail.
    server = verify_ledger(hr.server_ledger, hr.trust, allow_unsealed=True, allow_unsealed_tail=True)
    assert server.ok, server.failures
    server_entries = [e for e in Ledger.open(hr.server_ledger).entries() if e.run == run.id]
    assert server_entries[0].kind == "mandate" and server_entries[0].token == sub.token
    assert {e.meta.get("principal") for e in server_entries if e.kind == "ect"} == {"maria"}


def test_a_ledger_verified_with_a_role_less_jwks_is_a_usage_error(hr: Hr, tmp_path: Path) -> None:
    keys_only = tmp_path / "keys-only.json"
    keys_only.write_text(json.dumps(TrustStore([hr.maria, hr.agent]).to_jwks()))
    ledger = tmp_path / "l.jsonl"
    AgentRun(
        agent=hr.agent, issuer=hr.maria, purpose="p", capabilities=[OFFICES], endpoint=hr.url, ledger=ledger
    ).close()
    code, _ = cli_verify(ledger, keys_only)
    assert code == 2
    result = CliRunner().invoke(cli_app, ["ledger", "verify", str(ledger), "--jwks", str(keys_only)])
    assert "mcpclient-auth keys trust" in result.stderr
    assert cli_verify(ledger, hr.jwks)[0] == 0
