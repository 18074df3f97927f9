"""Second adversarial review of the trust model (issue 12): each fix against the demo's HR server.

Every test here failed on main before its fix (the PoCs of the review, turned into assertions).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from mcpclient_auth.act import Mandate
from mcpclient_auth.cli import app as cli_app
from mcpclient_auth.demo.hr import hr_app
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.errors import KeyFormatError, TrustRoleConflict
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.run import AgentRun
from tests.support.trust import trust_for

pytestmark = pytest.mark.e2e

SALARY = "mcp.get_employee_salary"
OFFICES = "mcp.get_office_locations"
ACCEPT = "application/json, text/event-stream"
VERSION = "2025-06-18"


def init_message() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }


def salary_call(employee: str, request_id: int = 2) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "get_employee_salary", "arguments": {"employee": employee}},
    }


def body_of(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:"):
                return json.loads(line[5:])
    try:
        return response.json()
    except ValueError:
        return response.text


@dataclass
class Server:
    url: str
    directory: Path

    @property
    def ledger(self) -> Path:
        return self.directory / "server.jsonl"


def serve(trust: TrustStore, directory: Path, **options: Any) -> Iterator[Server]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with running(hr_app(trust, audience=url, ledger=directory / "server.jsonl", **options), port):
        yield Server(url, directory)


class Session:
    """One MCP session opened and driven through ``run``'s signing hooks (sync httpx)."""

    def __init__(self, run: AgentRun, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=15)
        run.install(self.http)
        response = self.http.post(url, json=init_message(), headers={"accept": ACCEPT})
        assert response.status_code == 200, response.text
        self.headers = {"accept": ACCEPT, "mcp-session-id": response.headers["mcp-session-id"],
                        "mcp-protocol-version": VERSION}
        self.http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.headers)

    def post(self, message: dict[str, Any]) -> httpx.Response:
        return self.http.post(self.url, json=message, headers=self.headers)

    def close(self) -> None:
        self.http.close()


# --- 1. key binding compares thumbprints, never a kid with cnf.jkt ----------------------------------------


def with_kid(identity: Identity, kid: str, **members: str) -> Identity:
    return Identity.from_jwk(identity.private_jwk() | {"kid": kid, **members})


def test_a_kid_spelling_another_keys_thumbprint_is_refused_by_the_trust_store() -> None:
    victim = with_kid(Identity.generate(name="victim-agent"), "victim-agent-2026")
    mallory = with_kid(Identity.generate(name="mallory"), victim.public.thumbprint)
    store = TrustStore()
    store.add_agent(victim)
    with pytest.raises(KeyFormatError):
        store.add_agent(mallory)
    # ... in either order: the squatting kid first, then the key whose thumbprint it spells.
    store = TrustStore()
    store.add_agent(mallory)
    with pytest.raises(KeyFormatError):
        store.add_agent(victim)


def test_one_key_under_two_kids_cannot_be_issuer_and_agent(tmp_path: Path) -> None:
    maria = Identity.generate(name="maria")
    as_agent = maria.public_jwk() | {"kid": "maria-agent"}
    store = TrustStore()
    store.add_issuer(maria)
    with pytest.raises(TrustRoleConflict):
        store.add_agent(as_agent)
    store = TrustStore()
    store.add_agent(as_agent)
    with pytest.raises(TrustRoleConflict):
        store.add_issuer(maria)
    # The CLI that writes trust files refuses it too.
    maria.save(tmp_path / "maria.jwk")
    (tmp_path / "maria-as-agent.jwk").write_text(json.dumps(as_agent))
    jwks = tmp_path / "jwks.json"
    first = CliRunner().invoke(cli_app, ["keys", "trust", str(jwks), "--issuer", str(tmp_path / "maria.jwk")])
    second = CliRunner().invoke(cli_app, ["keys", "trust", str(jwks), "--agent", str(tmp_path / "maria-as-agent.jwk")])
    assert first.exit_code == 0, first.stdout
    assert second.exit_code != 0
    assert not TrustStore.from_jwks(jwks).is_agent("maria-agent")


def test_an_agent_with_a_custom_kid_acts_on_its_mandate_and_verifies(tmp_path: Path) -> None:
    """The server and the ledger compare the signer's thumbprint with cnf.jkt (before: its kid, so an
    agent whose kid is not its thumbprint was refused, and a kid equal to a thumbprint was accepted)."""
    maria = Identity.generate(name="maria")
    agent = with_kid(Identity.generate(name="hr-agent"), "hr-agent-2026")
    trust = trust_for(issuers=[maria], agents=[agent])
    for server in serve(trust, tmp_path):
        mandate = Mandate.issue(maria, agent=agent, audience=server.url, purpose="HR", capabilities=[SALARY])
        run = AgentRun(agent=agent, mandate=mandate.token, endpoint=server.url, ledger=tmp_path / "agent.jsonl")
        session = Session(run, server.url)
        try:
            response = session.post(salary_call("carol"))
        finally:
            session.close()
        assert response.status_code == 200, response.text
        assert "error" not in body_of(response)
        run.close()
        report = verify_ledger(tmp_path / "agent.jsonl", trust)
        assert report.ok, report.checks()


# --- 2. max_calls bounds a mandate's delegations too ---------------------------------------------------


def budgeted(limit: int) -> list[Any]:
    return [{"action": SALARY, "constraints": {"args": {"employee": {"eq": "carol"}}, "max_calls": limit}}]


def test_self_delegation_brings_no_fresh_max_calls_budget(tmp_path: Path) -> None:
    maria = Identity.generate(name="maria")
    agent = Identity.generate(name="hr-agent")
    trust = trust_for(issuers=[maria], agents=[agent])
    for server in serve(trust, tmp_path):
        root = Mandate.issue(maria, agent=agent, audience=server.url, purpose="one lookup", capabilities=budgeted(1))
        run = AgentRun(agent=agent, mandate=root.token, endpoint=server.url, ledger=tmp_path / "root.jsonl", trust=trust)
        session = Session(run, server.url)
        assert session.post(salary_call("carol")).status_code == 200
        session.close()
        run.close()
        for index in range(3):
            child = root.delegate(agent, agent=agent, capabilities=budgeted(1))
            run = AgentRun(
                agent=agent, mandate=child.token, endpoint=server.url,
                ledger=tmp_path / f"child{index}.jsonl", trust=trust,
            )
            session = Session(run, server.url)
            response = session.post(salary_call("carol"))
            session.close()
            run.close()
            assert response.status_code == 403, response.text
            assert response.json()["code"] == "constraint_violated"


def test_verify_ledger_totals_an_ancestors_budget_across_runs(tmp_path: Path) -> None:
    """Two servers (or one restarted: budgets are per process) each accept one delegated call; the
    root allowed one: the ledger holding both runs fails ``constraint_violation``."""
    maria = Identity.generate(name="maria")
    agent = Identity.generate(name="hr-agent")
    trust = trust_for(issuers=[maria], agents=[agent])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    from mcpclient_auth.ledger import Ledger

    ledger = Ledger(tmp_path / "agent.jsonl")
    for first in serve(trust, tmp_path / "a"):
        for second in serve(trust, tmp_path / "b"):
            root = Mandate.issue(
                maria, agent=agent, audience=[first.url, second.url], purpose="one lookup", capabilities=budgeted(1)
            )
            for server in (first, second):
                child = root.delegate(agent, agent=agent, capabilities=budgeted(1))
                run = AgentRun(agent=agent, mandate=child.token, endpoint=server.url, ledger=ledger, trust=trust)
                session = Session(run, server.url)
                response = session.post(salary_call("carol"))
                session.close()
                run.close()
                assert response.status_code == 200, response.text
    ledger.close()
    report = verify_ledger(tmp_path / "agent.jsonl", trust)
    assert not report.ok
    assert [failure.check for failure in report.failures] == ["constraint_violation"]
    assert verify_ledger(tmp_path / "agent.jsonl", trust, jobs=2).checks() == report.checks()


def test_one_roots_delegations_cannot_fill_the_budget_table() -> None:
    """A per-root quota of budget slots: mallory's self-delegations fill her root's share, not the
    table, and erik's mandate still gets a budget (real McpRequestVerifier, signed requests)."""
    from mcpclient_auth._encoding import sha256_b64url
    from mcpclient_auth.ect import ExecutionContextToken
    from mcpclient_auth.httpsig import RequestSigner
    from mcpclient_auth.server.verify import IncomingHeaders, IncomingRequest, McpRequestVerifier

    audience = "https://hr.example/mcp"
    maria, erik = Identity.generate(name="maria"), Identity.generate(name="erik")
    mallory, good = Identity.generate(name="mallory-agent"), Identity.generate(name="erik-agent")
    trust = trust_for(issuers=[maria, erik], agents=[mallory, good])
    verifier = McpRequestVerifier(trust, audience=audience, budget_runs=6, budget_runs_per_root=3)
    caps: list[Any] = [{"action": "mcp.search", "constraints": {"max_calls": 100}}]

    def call(agent: Identity, mandate: Mandate) -> str:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {"q": "x"}}}
        ).encode()
        ect = ExecutionContextToken.mint(
            agent, audience=[audience], exec_act="mcp.search", pred=[mandate.jti], wid=mandate.jti,
            inp_hash=sha256_b64url(body),
        )
        request = httpx.Request(
            "POST", audience, content=body,
            headers={"content-type": "application/json", "act-mandate": mandate.token, "execution-context": ect.token},
        )
        RequestSigner(agent, audience=audience).sign(request)
        outcome = verifier.check(IncomingRequest("POST", str(request.url), IncomingHeaders(request.headers.raw), body))
        error = getattr(outcome, "error", None)
        return str(error.code) if error is not None else "accepted"

    root = Mandate.issue(maria, agent=mallory, audience=audience, purpose="p", capabilities=caps)
    outcomes = [call(mallory, root.delegate(mallory, agent=mallory, capabilities=caps)) for _ in range(4)]
    assert outcomes == ["accepted", "accepted", "budget_capacity", "budget_capacity"]
    assert call(good, Mandate.issue(erik, agent=good, audience=audience, purpose="p", capabilities=caps)) == "accepted"


# --- 3. the run's principal is the mandate's -----------------------------------------------------------


def test_a_run_cannot_carry_one_users_mandate_for_another_principal(tmp_path: Path) -> None:
    from mcpclient_auth.errors import PrincipalMismatch
    from mcpclient_auth.principal import Principal

    maria = Identity.generate(name="maria")
    agent = Identity.generate(name="hr-agent")
    trust = trust_for(issuers=[maria], agents=[agent])
    url = "http://127.0.0.1:1/mcp"
    mandate = Mandate.issue(maria, agent=agent, audience=url, purpose="p", capabilities=[SALARY])
    with pytest.raises(PrincipalMismatch) as raised:
        AgentRun(agent=agent, mandate=mandate.token, endpoint=url, ledger=tmp_path / "l.jsonl",
                 trust=trust, principal=Principal(id="erik"))
    assert raised.value.code == "principal_mismatch"
    assert not (tmp_path / "l.jsonl").exists() or (tmp_path / "l.jsonl").read_text() == ""
    # The mandate's own principal is accepted (given explicitly or by default).
    run = AgentRun(agent=agent, mandate=mandate.token, endpoint=url, ledger=tmp_path / "ok.jsonl",
                   trust=trust, principal=Principal(id="maria"))
    run.close()


def test_verify_ledger_refuses_an_entry_naming_another_principal(tmp_path: Path) -> None:
    from mcpclient_auth.ledger import Ledger

    maria = Identity.generate(name="maria")
    agent = Identity.generate(name="hr-agent")
    trust = trust_for(issuers=[maria], agents=[agent])
    url = "http://127.0.0.1:1/mcp"
    mandate = Mandate.issue(maria, agent=agent, audience=url, purpose="p", capabilities=[SALARY])
    run = AgentRun(agent=agent, mandate=mandate.token, endpoint=url, ledger=tmp_path / "genuine.jsonl", trust=trust)
    run.close()
    assert verify_ledger(tmp_path / "genuine.jsonl", trust).runs[mandate.jti].principal == "maria"
    # The same run, its mandate entry re-logged as erik's (a writer that ignored the check).
    forged = Ledger(tmp_path / "forged.jsonl")
    for entry in Ledger.open(tmp_path / "genuine.jsonl").entries():
        if entry.kind == "mandate":
            forged.append(run=entry.run, kind="mandate", jti=entry.jti, token=entry.token,
                          meta=entry.meta | {"principal": "erik"})
    forged.seal(mandate.jti, agent)
    forged.close()
    report = verify_ledger(tmp_path / "forged.jsonl", trust)
    assert "principal_mismatch" in report.checks()
    assert report.runs[mandate.jti].principal == "maria"


# --- 4. `token verify` does not vouch for forged evidence ---------------------------------------------


def test_token_verify_refuses_a_record_forged_by_the_agent_and_an_issuer_signed_ect(tmp_path: Path) -> None:
    import time
    import uuid

    from mcpclient_auth import jose
    from mcpclient_auth._encoding import sha256_b64url
    from mcpclient_auth.ect import ExecutionContextToken

    maria = Identity.generate(name="maria")
    agent = Identity.generate(name="hr-agent")
    jwks = trust_for(issuers=[maria], agents=[agent]).save(tmp_path / "jwks.json")
    now = int(time.time())
    # The agent key alone signs a "record" claiming maria granted a delete.
    claims = {
        "iss": "maria", "sub": "hr-agent", "aud": "http://hr.example/mcp", "iat": now, "exp": now + 900,
        "jti": str(uuid.uuid4()), "task": {"purpose": "p"}, "cap": [{"action": "mcp.delete_employee"}],
        "cnf": {"jkt": agent.public.thumbprint}, "exec_act": "mcp.delete_employee", "pred": [],
        "inp_hash": sha256_b64url(b"p"), "out_hash": sha256_b64url(b"x"), "status": "completed",
    }
    forged = jose.encode(agent, jose.ACT_TYP, claims)
    result = CliRunner().invoke(cli_app, ["token", "verify", forged, "--jwks", str(jwks)])
    assert result.exit_code == 1 and "record_mandate_missing" in result.stderr
    # With a genuine mandate of maria's for something else, the record does not match it.
    genuine = Mandate.issue(maria, agent=agent, audience="http://hr.example/mcp", purpose="p", capabilities=[SALARY])
    result = CliRunner().invoke(cli_app, ["token", "verify", forged, "--jwks", str(jwks), "--mandate", genuine.token])
    assert result.exit_code == 1, result.stdout
    # An ECT signed by an issuer key (not an agent): invalid once the trust file has roles.
    ect = ExecutionContextToken.mint(maria, audience=["https://hr.example/mcp"], exec_act=SALARY, pred=[genuine.jti])
    result = CliRunner().invoke(cli_app, ["token", "verify", ect.token, "--jwks", str(jwks)])
    assert result.exit_code == 1 and "signer_not_agent" in result.stderr


# --- 5. a request id pending in the session cannot be reused (list answers cannot be misrouted) --------


def test_a_request_reusing_a_pending_id_is_refused(tmp_path: Path) -> None:
    import asyncio
    import threading

    from mcpclient_auth.demo.hr import build_hr_server

    entered, release = threading.Event(), threading.Event()
    mcp = build_hr_server()

    @mcp.tool
    async def hold() -> str:
        entered.set()
        await asyncio.to_thread(release.wait, 20)
        return "released"

    maria = Identity.generate(name="maria")
    agent = Identity.generate(name="hr-agent")
    trust = trust_for(issuers=[maria], agents=[agent])
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with running(hr_app(trust, audience=url, mcp=mcp), port):
        mandate = Mandate.issue(maria, agent=agent, audience=url, purpose="p", capabilities=["mcp.hold", OFFICES])
        run = AgentRun(agent=agent, mandate=mandate.token, endpoint=url, ledger=tmp_path / "agent.jsonl")
        session = Session(run, url)
        held: list[httpx.Response] = []
        call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "hold", "arguments": {}}}
        worker = threading.Thread(target=lambda: held.append(session.post(call)))
        worker.start()
        try:
            assert entered.wait(20)
            # tools/list under id "7" while the call with id 7 is pending: the transport would route
            # both answers by "7"; refused before it reaches the server.
            colliding = session.post({"jsonrpc": "2.0", "id": "7", "method": "tools/list"})
            assert colliding.status_code == 400, colliding.text
            assert colliding.json()["code"] == "request_id_in_flight"
            other = session.post({"jsonrpc": "2.0", "id": 8, "method": "tools/list"})
            assert other.status_code == 200
            assert "get_employee_salary" not in other.text  # filtered as usual
        finally:
            release.set()
            worker.join(20)
        assert held and held[0].status_code == 200 and "released" in held[0].text
        again = session.post({"jsonrpc": "2.0", "id": "7", "method": "tools/list"})  # free again
        assert again.status_code == 200 and "get_employee_salary" not in again.text
        session.close()
        run.close()


# --- 6. a name-only mandate designates exactly one agent key ------------------------------------------


def test_a_name_only_mandate_is_refused_when_two_agent_keys_share_the_name(tmp_path: Path) -> None:
    maria = Identity.generate(name="maria")
    agent_a, agent_b = Identity.generate(name="agent"), Identity.generate(name="agent")  # two `keys init` defaults
    ambiguous = trust_for(issuers=[maria], agents=[agent_a, agent_b])
    for server in serve(ambiguous, tmp_path, require_key_binding=False):
        mandate = Mandate.issue(maria, agent="agent", audience=server.url, purpose="for A", capabilities=[SALARY])
        run = AgentRun(agent=agent_b, mandate=mandate.token, endpoint=server.url, ledger=tmp_path / "b.jsonl")
        http = httpx.Client(timeout=15)
        run.install(http)
        response = http.post(server.url, json=init_message(), headers={"accept": ACCEPT})
        http.close()
        run.close()
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "signature_policy_violation"
        report = verify_ledger(tmp_path / "b.jsonl", ambiguous)
        assert "ect_issuer_mismatch" in report.checks() and "seal_invalid" in report.checks()
    # With one key of that name the same mandate works (name-only mode stays usable).
    unique = trust_for(issuers=[maria], agents=[agent_a])
    (tmp_path / "unique").mkdir()
    for server in serve(unique, tmp_path / "unique", require_key_binding=False):
        mandate = Mandate.issue(maria, agent="agent", audience=server.url, purpose="for A", capabilities=[SALARY])
        run = AgentRun(agent=agent_a, mandate=mandate.token, endpoint=server.url, ledger=tmp_path / "a.jsonl")
        session = Session(run, server.url)
        assert session.post(salary_call("carol")).status_code == 200
        session.close()
        run.close()
        assert verify_ledger(tmp_path / "a.jsonl", unique).ok


# --- 7. an MCP session is bound to its principal, not to the leaf mandate's iss ------------------------


def test_a_session_is_bound_to_the_principal_of_the_chain(tmp_path: Path) -> None:
    """hr-agent delegates maria's and erik's mandates to the same helper: both sub-mandates have
    iss=hr-agent, sub=hr-helper and the helper's key. The helper on erik's behalf must not post into
    the session it opened on maria's behalf."""
    maria, erik = Identity.generate(name="maria"), Identity.generate(name="erik")
    agent, helper = Identity.generate(name="hr-agent"), Identity.generate(name="hr-helper")
    trust = trust_for(issuers=[maria, erik], agents=[agent, helper])
    for server in serve(trust, tmp_path):
        def delegated(user: Identity) -> Mandate:
            root = Mandate.issue(user, agent=agent, audience=server.url, purpose="HR", capabilities=[OFFICES])
            return root.delegate(agent, agent=helper, capabilities=[OFFICES])

        for_maria = AgentRun(agent=helper, mandate=delegated(maria).token, endpoint=server.url,
                             ledger=tmp_path / "maria.jsonl", trust=trust)
        for_erik = AgentRun(agent=helper, mandate=delegated(erik).token, endpoint=server.url,
                            ledger=tmp_path / "erik.jsonl", trust=trust)
        session = Session(for_maria, server.url)
        offices = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                   "params": {"name": "get_office_locations", "arguments": {}}}
        assert session.post(offices).status_code == 200
        with httpx.Client(timeout=15) as intruder:
            for_erik.install(intruder)
            response = intruder.post(server.url, json=offices | {"id": 4}, headers=session.headers)
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "session_not_yours"
        session.close()
        for_maria.close()
        for_erik.close()


# --- 8. MCP 2026-07-28: answers inside inputResponses need their capability ----------------------------

ELICITED = {"ask": {"action": "accept", "content": {"value": "123-45-6789"}}}


def test_input_responses_need_the_capability_of_the_answer_client_side() -> None:
    from mcpclient_auth.errors import MandateDenied
    from mcpclient_auth.jsonrpc import parse
    from mcpclient_auth.policy import McpActionPolicy, check_call

    maria, agent = Identity.generate(name="maria"), Identity.generate(name="hr-agent")
    retried = json.dumps({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "ask_user", "arguments": {}, "inputResponses": ELICITED},
    }).encode()
    call = parse(retried, content_type="application/json")
    only_tool = Mandate.issue(maria, agent=agent, audience="https://hr.example/mcp", purpose="p",
                              capabilities=["mcp.ask_user"])
    with pytest.raises(MandateDenied) as denied:
        check_call(McpActionPolicy(), call, only_tool)  # type: ignore[arg-type]
    assert denied.value.details["action"] == "mcp.rpc.elicitation.create"
    both = Mandate.issue(maria, agent=agent, audience="https://hr.example/mcp", purpose="p",
                         capabilities=["mcp.ask_user", "mcp.rpc.elicitation.create"])
    assert check_call(McpActionPolicy(), call, both) == "mcp.ask_user"  # type: ignore[arg-type]


def test_input_responses_need_the_capability_of_the_answer_server_side() -> None:
    """The server verifier refuses a retried request whose embedded elicitation answer the mandate does
    not grant (a client that skips its own check), with a signed request on the real verifier."""
    from mcpclient_auth._encoding import sha256_b64url
    from mcpclient_auth.ect import ExecutionContextToken
    from mcpclient_auth.httpsig import RequestSigner
    from mcpclient_auth.server.verify import IncomingHeaders, IncomingRequest, McpRequestVerifier

    audience = "https://hr.example/mcp"
    maria, agent = Identity.generate(name="maria"), Identity.generate(name="hr-agent")
    trust = trust_for(issuers=[maria], agents=[agent])
    verifier = McpRequestVerifier(trust, audience=audience)

    def outcome(capabilities: list[Any], params: dict[str, Any]) -> str:
        mandate = Mandate.issue(maria, agent=agent, audience=audience, purpose="p", capabilities=capabilities)
        body = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}).encode()
        ect = ExecutionContextToken.mint(
            agent, audience=[audience], exec_act="mcp.ask_user", pred=[mandate.jti], wid=mandate.jti,
            inp_hash=sha256_b64url(body),
        )
        request = httpx.Request(
            "POST", audience, content=body,
            headers={"content-type": "application/json", "act-mandate": mandate.token, "execution-context": ect.token},
        )
        RequestSigner(agent, audience=audience).sign(request)
        result = verifier.check(IncomingRequest("POST", audience, IncomingHeaders(request.headers.raw), body))
        error = getattr(result, "error", None)
        return str(error.code) if error is not None else "accepted"

    retried = {"name": "ask_user", "arguments": {}, "inputResponses": ELICITED}
    assert outcome(["mcp.ask_user"], retried) == "capability_not_granted"
    assert outcome(["mcp.ask_user"], {"name": "ask_user", "arguments": {}}) == "accepted"
    assert outcome(["mcp.ask_user", "mcp.rpc.elicitation.create"], retried) == "accepted"
    roots = {"name": "ask_user", "arguments": {}, "inputResponses": {"r": {"roots": []}}}
    assert outcome(["mcp.ask_user"], roots) == "capability_not_granted"
