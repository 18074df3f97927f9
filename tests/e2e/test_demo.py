"""``mcpclient-auth demo`` from a fresh process (issue 6, acceptance 1): exit 0, kept files verify."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mcpclient_auth.keys import TrustStore
from mcpclient_auth.ledger import Ledger, verify_ledger

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("mcpclient-auth")
    command = (
        [executable] if executable else [sys.executable, "-c", "from mcpclient_auth.cli import main; main()"]
    )
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_demo_keeps_a_verifying_ledger_keys_and_a_dag(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = cli("demo", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "client ledger:" in done.stdout and "OK" in done.stdout
    assert "maria's answer: Offices: Berlin, Lisbon, Toronto. Bob earns 98,000 a year." in done.stdout
    assert "erik's answer: Offices: Berlin, Lisbon, Toronto. Salaries are outside my mandate for you." in done.stdout

    # The files it promises, private ones 0600.
    for name in ("maria.jwk", "erik.jwk", "agent.jwk", "server.jwk"):
        assert (out / "keys" / name).stat().st_mode & 0o777 == 0o600
    jwks = json.loads((out / "keys" / "jwks.json").read_text())
    assert len(jwks["keys"]) == 4 and all("d" not in key for key in jwks["keys"])
    # The trust file says who may sign what: each user's key for that user only, one agent key.
    names = {key["kid"]: key["name"] for key in jwks["keys"]}
    roles = jwks["mcpclient_auth"]
    assert {names[kid]: principals for kid, principals in roles["issuers"].items()} == {
        "maria": ["maria"],
        "erik": ["erik"],
    }
    assert [names[kid] for kid in roles["agents"]] == ["hr-agent"]
    # ... plus the server key that signs the audit ledger's checkpoints, with no role.
    assert "hr-server" in names.values()
    assert "hr-server" not in {names[kid] for kid in [*roles["issuers"], *roles["agents"]]}
    assert (out / "ledger.jsonl").stat().st_mode & 0o777 == 0o600
    html = (out / "dag.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "<svg" in html

    # The CLI verifier agrees, with only the public keys.
    verified = cli("ledger", "verify", str(out / "ledger.jsonl"), "--jwks", str(out / "keys" / "jwks.json"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK: every check holds" in verified.stdout

    # What happened: the manager's salary call went through; the employee's model was never offered
    # the salary tool (the server filters tools/list to the mandate), so it was never called.
    [erik_row] = [line for line in done.stdout.splitlines() if "erik (employee)" in line]
    assert erik_row.count("get_office_locations") == 3 and "get_employee_salary" not in erik_row
    trust = TrustStore.from_jwks(out / "keys" / "jwks.json")
    report = verify_ledger(out / "ledger.jsonl", trust)
    by_principal = {s.principal: s for s in report.runs.values()}
    assert set(by_principal) == {"maria", "erik"}
    assert by_principal["maria"].tools.get("get_employee_salary") == 1 and by_principal["maria"].denials == 0
    assert "get_employee_salary" not in by_principal["erik"].tools and by_principal["erik"].denials == 0
    assert all(s.sealed and s.status == "completed" for s in report.runs.values())
    assert [e for e in Ledger.open(out / "ledger.jsonl").entries() if e.kind == "denial"] == []
    # Held sessions (issue 18): per run and server one initialize, one notifications/initialized and
    # one tools/list — the session plumbing is not repeated for every tool call.
    session_ects = Counter(
        (e.run, e.meta.get("method"))
        for e in Ledger.open(out / "ledger.jsonl").entries()
        if e.kind == "ect" and not e.meta.get("tool")
    )
    assert session_ects == Counter(
        {(run, method): 1 for run in report.runs for method in ("initialize", "notifications/initialized", "tools/list")}
    )
    # The server never saw erik's salary call: its audit ledger has one salary ECT, maria's.
    server = [e for e in Ledger.open(out / "server-ledger.jsonl").entries() if e.meta.get("tool")]
    assert [
        (e.meta["principal"], e.meta["tool"]) for e in server if e.meta["tool"] == "get_employee_salary"
    ] == [("maria", "get_employee_salary")]
    # ... and it is sealed by the server's checkpoints: the CLI verifies it with the same public keys.
    verified = cli(
        "ledger",
        "verify",
        str(out / "server-ledger.jsonl"),
        "--jwks",
        str(out / "keys" / "jwks.json"),
        "--allow-unsealed",
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_demo_without_out_leaves_nothing_behind_and_says_so(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = cli("demo", env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "files removed; use --out DIR" in done.stdout
    assert list(scratch.iterdir()) == []
