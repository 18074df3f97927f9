"""verify_ledger (issue 12): a call outside its mandate (any method, not only tools/call), a budget
exceeded, and a mandate with an unknown constraint are each flagged by a named check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.ledger.verify import CHECKS
from tests.support.trust import trust_for

URL = "http://127.0.0.1:8000/mcp"
USER = Identity.generate("ES256", name="alice")
AGENT = Identity.generate("ES256", name="agent-1")
TRUST = trust_for(issuers=[USER], agents=[AGENT])


def write(path: Path, caps: list[Any], actions: list[str]) -> None:
    """One sealed run whose agent sent one ECT per action (the client's own checks bypassed)."""
    mandate = Mandate.issue(USER, agent=AGENT, audience=URL, purpose="HR", capabilities=caps)
    with Ledger(path) as ledger:
        ledger.append(run=mandate.jti, kind="mandate", jti=mandate.jti, token=mandate.token, meta={})
        for number, action in enumerate(actions):
            ect = ExecutionContextToken.mint(
                AGENT,
                audience=URL,
                exec_act=action,
                pred=[mandate.jti],
                wid=mandate.jti,
                inp_hash=sha256_b64url(str(number).encode()),
            )
            ledger.append(run=mandate.jti, kind="ect", jti=ect.jti, token=ect.token, meta={"action": action})
        ledger.seal(mandate.jti, AGENT)


def checks(path: Path) -> list[str]:
    return [failure.check for failure in verify_ledger(path, TRUST).failures]


def test_non_tool_calls_outside_the_mandate_are_cap_violations(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    plumbing = [
        "mcp.rpc.initialize",
        "mcp.rpc.notifications.initialized",
        "mcp.rpc.tools.list",
        "mcp.rpc.ping",
    ]
    data = ["mcp.rpc.resources.read", "mcp.prompt.salary_report", "mcp.rpc.completion.complete"]
    write(path, ["mcp.get_office_locations"], [*plumbing, *data])
    report = verify_ledger(path, TRUST)
    assert [f.check for f in report.failures] == ["cap_violation"] * 3
    assert [a for a in data if any(a in f.reason for f in report.failures)] == data


def test_granted_non_tool_calls_verify(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    write(
        path,
        ["mcp.rpc.resources.read", "mcp.prompt.welcome"],
        ["mcp.rpc.resources.read", "mcp.prompt.welcome"],
    )
    assert checks(path) == []


def test_more_calls_than_max_calls_is_a_constraint_violation(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    salary = {"action": "mcp.get_employee_salary", "constraints": {"max_calls": 2}}
    write(path, [salary, "mcp.search"], ["mcp.get_employee_salary", "mcp.search", "mcp.get_employee_salary"])
    assert checks(path) == []
    write(path2 := tmp_path / "l2.jsonl", [salary], ["mcp.get_employee_salary"] * 3)
    report = verify_ledger(path2, TRUST)
    assert [f.check for f in report.failures] == ["constraint_violation"]
    assert "max_calls 2" in report.failures[0].reason
    assert "constraint_violation" in CHECKS


def test_a_mandate_with_an_unknown_constraint_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    write(path, [{"action": "mcp.get_employee_salary", "constraints": {"employee": "bob"}}], [])
    assert checks(path) == ["constraint_unknown"]
