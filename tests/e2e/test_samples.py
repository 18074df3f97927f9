"""Every sample runs offline, on 127.0.0.1 only, and exits 0 (issue 6, acceptance 3)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mcpclient_auth.demo.serving import free_port
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.run import AgentRun
from tests.support.trust import trust_for

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

pytestmark = pytest.mark.e2e


def run_sample(name: str, out: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(SAMPLES / name), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=SAMPLES,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "ledger verified: True" in done.stdout
    assert (out / "ledger.jsonl").stat().st_mode & 0o777 == 0o600
    return done.stdout


def test_plain_session(tmp_path: Path) -> None:
    out = run_sample("plain_session.py", tmp_path)
    assert "offices: " in out and "Berlin" in out
    assert "refused: the mandate does not grant 'mcp.get_employee_salary'" in out


def test_langgraph_agent(tmp_path: Path) -> None:
    out = run_sample("langgraph_agent.py", tmp_path)
    assert "tools offered to the model: ['get_office_locations', 'search']" in out
    assert "answer: Offices: Berlin, Lisbon, Toronto" in out


def test_obo_exchange(tmp_path: Path) -> None:
    out = run_sample("obo_exchange.py", tmp_path)
    assert "alice: offices:" in out
    assert "mallory: refused: the identity provider rejected the token exchange" in out
    assert "token requests at the IdP: 2" in out
    accepted = re.search(r"requests the HR server accepted with alice's own token: (\d+)", out)
    assert accepted is not None and int(accepted.group(1)) >= 3  # initialize, initialized, the tool call


def test_hr_server_refuses_a_jwks_without_roles_and_says_how_to_add_them(tmp_path: Path) -> None:
    user = Identity.generate("ES256", name="alice")
    agent = Identity.generate("ES256", name="hr-agent")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(TrustStore([user, agent]).to_jwks()))  # keys only: who may sign what?
    done = subprocess.run(
        [sys.executable, str(SAMPLES / "hr_server.py"), "--jwks", str(jwks), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=SAMPLES,
    )
    assert done.returncode != 0
    assert "trust_roles_missing" in done.stderr and "mcpclient-auth keys trust" in done.stderr
    assert "Traceback" not in done.stderr


def test_hr_server_serves_signed_calls_and_refuses_the_rest(tmp_path: Path) -> None:
    user = Identity.generate("ES256", name="alice")
    agent = Identity.generate("ES256", name="hr-agent")
    trust = trust_for(issuers=[user], agents=[agent])
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(trust.to_jwks()))
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    server_ledger = tmp_path / "server-ledger.jsonl"
    server_key = Identity.generate("ES256", name="hr-server")
    server_key.save(tmp_path / "server.jwk")
    command = [sys.executable, str(SAMPLES / "hr_server.py"), "--jwks", str(jwks), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--ledger", str(server_ledger), "--ledger-key", str(tmp_path / "server.jwk")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(timeout=5) as plain:
            for _ in range(300):  # bounded wait for the server to listen (about 15 s at most)
                try:
                    refused = plain.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
                    break
                except httpx.ConnectError:
                    assert process.poll() is None, process.communicate()
                    time.sleep(0.05)
            else:
                pytest.fail("the sample HR server did not start")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"

        run = AgentRun(
            agent=agent,
            issuer=user,
            purpose="HR",
            capabilities=["mcp.get_office_locations"],
            endpoint=url,
            ledger=tmp_path / "client.jsonl",
        )
        with httpx.Client(timeout=5) as signed:
            run.install(signed)
            opened = signed.post(
                url,
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "t", "version": "1"},
                    },
                },
                headers={"accept": "application/json, text/event-stream"},
            )
        assert opened.status_code == 200, opened.text
        run.close()
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert f"HR MCP server at {url}" in stdout
    # The mandate, the initialize ECT and the checkpoint the server wrote when SIGINT shut it down.
    report = verify_ledger(
        server_ledger, trust_for(issuers=[user], agents=[agent], keys=[server_key]), allow_unsealed=True
    )
    assert report.ok and report.entries == 3 and report.tail is None, report.failures
