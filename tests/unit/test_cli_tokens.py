"""CLI: keys init / show, mandate issue, token decode / verify (CliRunner and the real console script)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import ExecutionRecord, Mandate
from mcpclient_auth.cli import app
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.keys import Identity

AUD = "http://127.0.0.1:8000/mcp"
runner = CliRunner()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def change_one_char(token: str, index: int) -> str:
    return token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    result = runner.invoke(app, ["keys", "init", "--dir", str(tmp_path / "keys")])
    assert result.exit_code == 0, result.output
    return tmp_path / "keys"


def issue(keydir: Path, *extra: str) -> str:
    args = [
        "mandate",
        "issue",
        "--issuer-key",
        str(keydir / "user.jwk"),
        "--agent-key",
        str(keydir / "agent.jwk"),
    ]
    args += [
        "--aud",
        AUD,
        "--purpose",
        "Answer HR questions",
        "--cap",
        "mcp.search",
        "--cap",
        "mcp.fetch",
        *extra,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


# --- keys -----------------------------------------------------------------------------------------


def test_keys_init_writes_private_keys_0600_and_a_public_jwks(keydir: Path) -> None:
    assert mode(keydir / "user.jwk") == 0o600 and mode(keydir / "agent.jwk") == 0o600
    assert mode(keydir) == 0o700
    user, agent = Identity.load(keydir / "user.jwk"), Identity.load(keydir / "agent.jwk")
    assert (user.name, agent.name, user.alg) == ("user", "agent", "ES256")
    jwks = json.loads((keydir / "jwks.json").read_text())
    assert {k["kid"] for k in jwks["keys"]} == {user.kid, agent.kid}
    assert all("d" not in k for k in jwks["keys"])


def test_keys_init_refuses_to_overwrite_unless_forced(keydir: Path) -> None:
    before = (keydir / "agent.jwk").read_text()
    result = runner.invoke(app, ["keys", "init", "--dir", str(keydir)])
    assert result.exit_code == 2 and "--force" in result.stderr
    assert (keydir / "agent.jwk").read_text() == before
    result = runner.invoke(app, ["keys", "init", "--dir", str(keydir), "--force", "--alg", "EdDSA"])
    assert result.exit_code == 0
    assert (keydir / "agent.jwk").read_text() != before
    assert Identity.load(keydir / "agent.jwk").alg == "EdDSA" and mode(keydir / "agent.jwk") == 0o600


def test_keys_init_usage_errors(tmp_path: Path) -> None:
    assert runner.invoke(app, ["keys", "init", "--dir", str(tmp_path), "--alg", "HS256"]).exit_code == 2
    assert runner.invoke(app, ["keys", "init"]).exit_code == 2
    same = ["keys", "init", "--dir", str(tmp_path), "--user-name", "x", "--agent-name", "x"]
    assert runner.invoke(app, same).exit_code == 2


def test_keys_show_prints_public_information_only(keydir: Path, tmp_path: Path) -> None:
    private = json.loads((keydir / "agent.jwk").read_text())
    result = runner.invoke(app, ["keys", "show", str(keydir / "agent.jwk")])
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    assert shown["private"] is True and shown["kid"] == private["kid"] and shown["name"] == "agent"
    assert "d" not in shown["public_jwk"] and private["d"] not in result.output
    listed = json.loads(runner.invoke(app, ["keys", "show", str(keydir / "jwks.json")]).stdout)
    assert [k["name"] for k in listed] == ["user", "agent"]
    agent = Identity.load(keydir / "agent.jwk")
    pem = tmp_path / "agent.pub.pem"
    pem.write_bytes(agent.public.key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    from_pem = json.loads(runner.invoke(app, ["keys", "show", str(pem)]).stdout)
    assert from_pem["kid"] == agent.kid and from_pem["private"] is False
    garbage = tmp_path / "garbage.jwk"
    garbage.write_text("{not json")
    assert runner.invoke(app, ["keys", "show", str(garbage)]).exit_code == 2
    assert runner.invoke(app, ["keys", "show", str(tmp_path / "missing.jwk")]).exit_code == 2


# --- mandate issue + token verify / decode -----------------------------------------------------------


def test_issue_then_verify_round_trip(keydir: Path) -> None:
    token = issue(keydir, "--ttl", "120")
    mandate = Mandate.decode(token)
    assert mandate.capabilities == ["mcp.search", "mcp.fetch"] and mandate.exp - mandate.iat == 120
    assert mandate.binds(Identity.load(keydir / "agent.jwk"))
    result = runner.invoke(
        app, ["token", "verify", "-", "--jwks", str(keydir / "jwks.json")], input=token + "\n"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["valid"] is True and report["kind"] == "mandate" and report["claims"]["jti"] == mandate.jti
    as_arg = runner.invoke(app, ["token", "verify", token, "--jwks", str(keydir / "jwks.json"), "--aud", AUD])
    assert as_arg.exit_code == 0


@pytest.mark.parametrize("where", ["header", "payload", "signature"])
def test_one_changed_character_fails_with_exit_1(keydir: Path, where: str) -> None:
    token = issue(keydir)
    header, payload, _ = token.split(".")
    index = {"header": 20, "payload": len(header) + 30, "signature": len(header) + len(payload) + 15}[where]
    bad = change_one_char(token, index)
    result = runner.invoke(app, ["token", "verify", "-", "--jwks", str(keydir / "jwks.json")], input=bad)
    assert result.exit_code == 1
    assert result.stderr.startswith("invalid: ")
    assert bad not in result.output and token not in result.output
    assert all(part not in result.output for part in bad.split("."))


def test_verify_reports_the_error_code(keydir: Path, tmp_path: Path) -> None:
    token = issue(keydir)
    jwks = str(keydir / "jwks.json")
    wrong_aud = runner.invoke(app, ["token", "verify", token, "--jwks", jwks, "--aud", "https://evil/mcp"])
    assert wrong_aud.exit_code == 1 and "audience_mismatch" in wrong_aud.stderr
    other = tmp_path / "other"
    runner.invoke(app, ["keys", "init", "--dir", str(other)])
    unknown = runner.invoke(app, ["token", "verify", token, "--jwks", str(other / "jwks.json")])
    assert unknown.exit_code == 1 and "unknown_key" in unknown.stderr
    malformed = runner.invoke(app, ["token", "verify", "abc.def", "--jwks", jwks])
    assert malformed.exit_code == 1 and "token_malformed" in malformed.stderr


def test_verify_usage_errors(keydir: Path, tmp_path: Path) -> None:
    token = issue(keydir)
    assert runner.invoke(app, ["token", "verify", token]).exit_code == 2  # no --jwks
    missing = runner.invoke(app, ["token", "verify", token, "--jwks", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and token not in missing.output
    assert (
        runner.invoke(
            app, ["token", "verify", "-", "--jwks", str(keydir / "jwks.json")], input="  \n"
        ).exit_code
        == 2
    )


def test_verify_ect_and_execution_record(keydir: Path) -> None:
    agent = Identity.load(keydir / "agent.jwk")
    mandate = Mandate.decode(issue(keydir))
    jwks = str(keydir / "jwks.json")
    ect = ExecutionContextToken.mint(
        agent, audience=AUD, exec_act="mcp.search", pred=[mandate.jti], wid=mandate.jti
    )
    result = runner.invoke(app, ["token", "verify", ect.token, "--jwks", jwks, "--aud", AUD])
    assert result.exit_code == 0 and json.loads(result.stdout)["kind"] == "ect"
    record = ExecutionRecord.issue(
        agent,
        mandate,
        exec_act="mcp.fetch",
        pred=[ect.jti],
        out_hash=sha256_b64url(b"done"),
        status="completed",
    )
    with_mandate = ["--mandate", mandate.token]
    result = runner.invoke(app, ["token", "verify", record.token, "--jwks", jwks, "--aud", AUD, *with_mandate])
    assert result.exit_code == 0 and json.loads(result.stdout)["kind"] == "execution_record"
    wrong = runner.invoke(
        app, ["token", "verify", record.token, "--jwks", jwks, "--aud", "https://x/mcp", *with_mandate]
    )
    assert wrong.exit_code == 1 and "audience_mismatch" in wrong.stderr
    # Without its mandate a record proves nothing about iss/cap: refused with a clear code.
    alone = runner.invoke(app, ["token", "verify", record.token, "--jwks", jwks])
    assert alone.exit_code == 1 and "record_mandate_missing" in alone.stderr


def test_verify_refuses_other_token_kinds(keydir: Path) -> None:
    from mcpclient_auth import jose

    user = Identity.load(keydir / "user.jwk")
    seal = jose.encode(user, "JWT", {"iss": "user"})
    result = runner.invoke(app, ["token", "verify", seal, "--jwks", str(keydir / "jwks.json")])
    assert result.exit_code == 1 and "token_type_invalid" in result.stderr


def test_issue_usage_errors(keydir: Path) -> None:
    base = [
        "mandate",
        "issue",
        "--issuer-key",
        str(keydir / "user.jwk"),
        "--agent-key",
        str(keydir / "agent.jwk"),
    ]
    bad_cap = runner.invoke(app, [*base, "--aud", AUD, "--purpose", "p", "--cap", "mcp..x"])
    assert bad_cap.exit_code == 2 and "claims_invalid" in bad_cap.stderr
    assert runner.invoke(app, [*base, "--aud", AUD, "--purpose", "p"]).exit_code == 2  # no --cap
    public_issuer = [
        *base[:3],
        str(keydir / "jwks.json"),
        *base[4:],
        "--aud",
        AUD,
        "--purpose",
        "p",
        "--cap",
        "mcp.a",
    ]
    assert runner.invoke(app, public_issuer).exit_code == 2


def test_issue_accepts_the_agents_public_jwk(keydir: Path, tmp_path: Path) -> None:
    agent = Identity.load(keydir / "agent.jwk")
    public = tmp_path / "agent.pub.jwk"
    public.write_text(json.dumps(agent.public_jwk()))
    args = ["mandate", "issue", "--issuer-key", str(keydir / "user.jwk"), "--agent-key", str(public)]
    result = runner.invoke(app, [*args, "--aud", AUD, "--purpose", "p", "--cap", "mcp.a"])
    assert result.exit_code == 0
    assert Mandate.decode(result.stdout.strip()).binds(agent)


def test_decode_is_marked_unverified(keydir: Path) -> None:
    token = issue(keydir)
    result = runner.invoke(app, ["token", "decode", "-"], input=token)
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    assert shown["verified"] is False and shown["header"]["typ"] == "act+jwt"
    assert shown["claims"]["task"]["purpose"] == "Answer HR questions"
    assert "NOT verified" in result.stderr
    bad = runner.invoke(app, ["token", "decode", "x.y.z"])
    assert bad.exit_code == 1 and "token_malformed" in bad.stderr


# --- the real console script --------------------------------------------------------------------------


def _console_script() -> str:
    beside = Path(sys.executable).with_name("mcpclient-auth")
    found = str(beside) if beside.exists() else shutil.which("mcpclient-auth")
    if found is None:
        pytest.fail("the mcpclient-auth console script is not installed (pip install -e .)")
    return found


def test_console_script_round_trip(tmp_path: Path) -> None:
    exe = _console_script()
    keys = tmp_path / "D"
    env = {**os.environ, "COLUMNS": "200"}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True, timeout=60, env=env)

    assert run("keys", "init", "--dir", str(keys)).returncode == 0
    assert mode(keys / "user.jwk") == 0o600 and mode(keys / "agent.jwk") == 0o600
    issued = run(
        "mandate", "issue", "--issuer-key", str(keys / "user.jwk"), "--agent-key", str(keys / "agent.jwk"),
        "--aud", AUD, "--purpose", "Answer HR questions", "--cap", "mcp.search",
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    ok = run("token", "verify", "-", "--jwks", str(keys / "jwks.json"), stdin=token + "\n")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["claims"]["cap"] == [{"action": "mcp.search"}]
    bad = change_one_char(token, len(token) // 2)
    failed = run("token", "verify", "-", "--jwks", str(keys / "jwks.json"), stdin=bad)
    assert failed.returncode == 1
    assert failed.stderr.startswith("invalid: ") and bad not in failed.stdout + failed.stderr
    assert run("token", "verify", "-", stdin=token).returncode == 2
