"""``mcpclient-auth demo``: the whole model, end to end, on one machine, offline.

    result = await run_demo(Path("/tmp/demo"))
    result.report.ok, result.ledger, result.dag_html

1. keys for two users (a manager and an employee) and one agent, plus the trust file ``keys/jwks.json``
   (each user's key may sign mandates for that user only; the agent key is an agent key);
2. the sample HR server behind :class:`~mcpclient_auth.server.McpAuthMiddleware` on a free 127.0.0.1
   port (uvicorn in a thread), with its own audit ledger;
3. the LangGraph agent (scripted model) asks the same question for each user: the manager's mandate
   grants ``mcp.get_employee_salary``, the employee's does not — the server lists to his agent only
   the tools his mandate grants, so his model is never offered the salary tool (a call to it would be
   refused locally, before anything is sent, as a ``denial`` in the ledger: ``samples/plain_session.py``);
4. both runs are closed (phase-2 record + seal), both ledgers verified, the DAG drawn to ``dag.html``.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path

from langchain_core.messages import AIMessage

from ..keys import Identity, TrustStore
from ..ledger import Ledger, verify_ledger
from ..ledger.render import build_graphs, to_html, verdicts_from
from ..ledger.verify import Report
from ..principal import Principal
from ..run import AgentRun
from .agent import AgentAnswer, ask, tool_call
from .hr import hr_app
from .serving import free_port, running

__all__ = ["QUESTION", "USERS", "DemoResult", "DemoUser", "demo_trust", "run_demo", "write_keys"]

QUESTION = "Where are our offices, and what does Bob earn?"


@dataclass(frozen=True)
class DemoUser:
    """A user of the demo and what their mandate grants."""

    name: str
    role: str
    capabilities: tuple[str, ...]
    #: The scripted model's final answer for this user.
    answer: str


USERS = (
    DemoUser(
        "maria",
        "manager",
        ("mcp.get_office_locations", "mcp.get_employee_salary"),
        "Offices: Berlin, Lisbon, Toronto. Bob earns 98,000 a year.",
    ),
    DemoUser(
        "erik",
        "employee",
        ("mcp.get_office_locations",),
        "Offices: Berlin, Lisbon, Toronto. Salaries are outside my mandate for you.",
    ),
)


@dataclass(frozen=True)
class DemoResult:
    """Where the demo left its files, and what it found."""

    out: Path
    keys: Path
    jwks: Path
    ledger: Path
    server_ledger: Path
    dag_html: Path
    report: Report
    server_report: Report
    answers: dict[str, AgentAnswer]
    runs: dict[str, str]


def demo_trust(identities: dict[str, Identity], agent: Identity) -> TrustStore:
    """The demo's trust roles: each user's key issues mandates for that user only; one agent key."""
    trust = TrustStore()
    for identity in identities.values():
        trust.add_issuer(identity)  # principals = [its name]
    trust.add_agent(agent)
    return trust


def write_keys(directory: Path, users: tuple[DemoUser, ...] = USERS) -> tuple[dict[str, Identity], Identity]:
    """Generate one key per user and one for the agent (``*.jwk``, 0600) and the trust file
    ``jwks.json`` (public keys and roles)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    identities = {user.name: Identity.generate("ES256", name=user.name) for user in users}
    agent = Identity.generate("ES256", name="hr-agent")
    for name, identity in (*identities.items(), ("agent", agent)):
        identity.save(directory / f"{name}.jwk")
    jwks = directory / "jwks.json"
    jwks.write_text(json.dumps(demo_trust(identities, agent).to_jwks(), indent=2) + "\n", encoding="utf-8")
    return identities, agent


def _script(user: DemoUser) -> list[AIMessage]:
    return [
        tool_call("get_office_locations", {}, "call-1"),
        tool_call("get_employee_salary", {"employee": "bob"}, "call-2"),
        AIMessage(content=user.answer),
    ]


async def _ask_and_close(run: AgentRun, user: DemoUser) -> AgentAnswer:
    async with run:  # leaving the block writes the phase-2 record and seals the run
        answer = await ask(run, QUESTION, script=_script(user))
        await run.aclose(output=answer.answer)
    return answer


def run_demo(out: Path) -> DemoResult:
    """Run the demo, keeping everything under ``out``; a failed verification is in the reports."""
    out.mkdir(parents=True, exist_ok=True)
    keys_dir = out / "keys"
    identities, agent = write_keys(keys_dir)
    trust = demo_trust(identities, agent)
    # The server signs its audit ledger's checkpoints with a key of its own; auditors need its
    # public half (a key with no issuer or agent role) next to the others.
    server_key = Identity.generate("ES256", name="hr-server")
    server_key.save(keys_dir / "server.jwk")
    audit_trust = demo_trust(identities, agent)
    audit_trust.add(server_key)
    (keys_dir / "jwks.json").write_text(json.dumps(audit_trust.to_jwks(), indent=2) + "\n", encoding="utf-8")
    ledger_path = out / "ledger.jsonl"
    server_ledger_path = out / "server-ledger.jsonl"
    for stale in (ledger_path, server_ledger_path):  # a rerun into the same DIR starts afresh
        if stale.exists():
            stale.unlink()

    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    server_ledger = Ledger(server_ledger_path, key=server_key)
    ledger = Ledger(ledger_path)
    answers: dict[str, AgentAnswer] = {}
    runs: dict[str, str] = {}
    try:
        with running(hr_app(trust, audience=url, ledger=server_ledger, ledger_key=server_key), port):
            for user in USERS:
                run = AgentRun(
                    agent=agent,
                    issuer=identities[user.name],
                    purpose=f"Answer HR questions for {user.name} ({user.role})",
                    capabilities=list(user.capabilities),
                    endpoint=url,
                    ledger=ledger,
                    principal=Principal(id=user.name),
                    trust=trust,  # the mandate is checked as the server will check it
                )
                answers[user.name] = asyncio.run(_ask_and_close(run, user))
                runs[user.name] = run.id
    finally:
        ledger.close()
        server_ledger.close()

    report = verify_ledger(ledger_path, trust)
    dag_html = out / "dag.html"
    # Session plumbing collapsed to one node per MCP session; the runs and their verdicts on top.
    graphs = build_graphs(Ledger.open(ledger_path).entries(), collapse=True)
    dag_html.write_text(
        to_html(graphs, title="mcpclient-auth demo", verdicts=verdicts_from(report)), encoding="utf-8"
    )
    os.chmod(dag_html, 0o600)
    return DemoResult(
        out=out,
        keys=keys_dir,
        jwks=keys_dir / "jwks.json",
        ledger=ledger_path,
        server_ledger=server_ledger_path,
        dag_html=dag_html,
        report=report,
        server_report=verify_ledger(server_ledger_path, audit_trust, allow_unsealed=True),
        answers=answers,
        runs=runs,
    )
