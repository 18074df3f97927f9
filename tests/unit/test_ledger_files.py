"""Issue 13, finding 5 and the anchoring hook: ledger/anchor files are never reached through a
symlink, a pre-created file's loose mode is fixed (or a foreign one refused), and every seal and
checkpoint hash reaches the anchor."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcpclient_auth.cli import app
from mcpclient_auth.errors import LedgerAnchorError, LedgerFileUnsafe
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import Ledger, line_hash, parse_line, verify_ledger
from mcpclient_auth.ledger.anchor import AnchorPoint, FileAnchor
from tests.support.ledger_runs import Actors, lines_of, write_lines, write_run
from tests.support.trust import trust_for


def test_a_symlink_at_the_ledger_path_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "victim.txt"
    target.write_bytes(b"precious\n")
    link = tmp_path / "ledger.jsonl"
    link.symlink_to(target)
    with pytest.raises(LedgerFileUnsafe) as caught:
        Ledger(link)
    assert caught.value.code == "ledger_file_unsafe" and "symbolic link" in caught.value.message
    assert target.read_bytes() == b"precious\n"
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere.jsonl")
    with pytest.raises(LedgerFileUnsafe):
        Ledger(dangling)
    assert not (tmp_path / "nowhere.jsonl").exists()


def test_a_pre_created_world_writable_ledger_is_set_to_0600(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.jsonl"
    path.touch()
    os.chmod(path, 0o666)
    with caplog.at_level(logging.WARNING, logger="mcpclient_auth.ledger"), Ledger(path) as ledger:
        ledger.append(run="r", kind="denial")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "had mode 666" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to give a file to another user")
def test_a_ledger_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.touch(mode=0o600)
    os.chown(path, 12345, 12345)
    with pytest.raises(LedgerFileUnsafe, match="another user"):
        Ledger(path)


def test_seals_and_checkpoints_reach_the_anchor(tmp_path: Path) -> None:
    actors = Actors.generate()
    server = Identity.generate("ES256", name="server")
    path, anchors = tmp_path / "l.jsonl", tmp_path / "anchors.jsonl"
    with Ledger(path, key=server, anchor=FileAnchor(anchors), anchor_name="ledger-1") as ledger:
        write_run(ledger, actors)
        ledger.checkpoint()
        write_run(ledger, actors)
    assert stat.S_IMODE(anchors.stat().st_mode) == 0o600
    points = FileAnchor.read(anchors)
    lines = lines_of(path)
    anchored = [
        (parse_line(line).seq, line_hash(line))
        for line in lines
        if parse_line(line).kind in ("seal", "checkpoint")
    ]
    assert [(p.seq, p.hash) for p in points] == anchored and {p.ledger for p in points} == {"ledger-1"}
    trust = trust_for(issuers=[actors.user], agents=[actors.agent], keys=[server])
    assert verify_ledger(path, trust, anchor=points).anchored == 3
    # The last sealed run cut off: a valid file by itself, caught by the anchor.
    cut = max(i for i, line in enumerate(lines[:-1]) if parse_line(line).kind == "checkpoint")
    write_lines(path, lines[: cut + 1])
    assert verify_ledger(path, trust).ok
    report = verify_ledger(path, trust, anchor=points)
    assert set(report.checks()) == {"anchor_missing"} and report.exit_code == 1
    # An edited anchored line is not "present".
    write_lines(path, [*lines[:cut], lines[cut].replace(b'"meta":{}', b'"meta":{"x":1}')])
    assert "anchor_mismatch" in verify_ledger(path, trust, anchor=points).checks()


def test_an_anchor_that_fails_is_a_typed_error_after_the_line_is_written(tmp_path: Path) -> None:
    class Down:
        def anchor(self, point: AnchorPoint) -> None:
            raise ConnectionError("object store unreachable")

    actors = Actors.generate()
    path = tmp_path / "l.jsonl"
    with Ledger(path, anchor=Down()) as ledger, pytest.raises(LedgerAnchorError) as caught:
        write_run(ledger, actors)
    assert caught.value.code == "ledger_anchor_failed" and "ConnectionError" in caught.value.message
    assert parse_line(lines_of(path)[-1]).kind == "seal"  # the seal itself is in the file


def test_anchor_files_are_strict(tmp_path: Path) -> None:
    link = tmp_path / "anchors.jsonl"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LedgerFileUnsafe):
        FileAnchor(link).anchor(AnchorPoint("l", 1, "a" * 43, "2026-12-01T00:00:00.000000Z"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ledger":"l","seq":1,"hash":"short","ts":"t"}\n')
    with pytest.raises(LedgerAnchorError):
        FileAnchor.read(bad)
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"ledger":"l","seq":1,"hash":"' + "a" * 43 + '","ts":"t"}\n{"ledger":"l","se')
    assert [p.seq for p in FileAnchor.read(torn)] == [1]  # a torn last record anchors nothing


def test_cli_anchor_options(tmp_path: Path) -> None:
    actors = Actors.generate()
    path, anchors, jwks = tmp_path / "l.jsonl", tmp_path / "a.jsonl", tmp_path / "jwks.json"
    jwks.write_text(json.dumps(trust_for(issuers=[actors.user], agents=[actors.agent]).to_jwks()))
    with Ledger(path, anchor=FileAnchor(anchors)) as ledger:
        write_run(ledger, actors)
        write_run(ledger, actors)
    FileAnchor(anchors).anchor(AnchorPoint("other-ledger", 1, "b" * 43, "2026-12-01T00:00:00.000000Z"))
    runner = CliRunner()
    base = ["ledger", "verify", str(path), "--jwks", str(jwks), "--anchor", str(anchors)]
    result = runner.invoke(app, base)  # two ledgers named: the default is this file's absolute path
    assert result.exit_code == 0 and "anchored: 2" in result.output, result.output
    result = runner.invoke(app, [*base, "--anchor-ledger", "nope"])
    assert result.exit_code == 2 and "no points for ledger" in result.output
    lines = lines_of(path)
    write_lines(path, lines[: len(lines) // 2 + 1])
    result = runner.invoke(app, base)
    assert result.exit_code == 1 and "anchor_missing" in result.output


def test_only_a_key_without_a_role_may_checkpoint_and_no_issuer_may_sign_a_recovery(tmp_path: Path) -> None:
    actors = Actors.generate()
    server = Identity.generate("ES256", name="server")
    trust = trust_for(issuers=[actors.user], agents=[actors.agent], keys=[server])
    for signer, ok in ((server, True), (actors.agent, False), (actors.user, False)):
        path = tmp_path / f"{signer.name}.jsonl"
        with Ledger(path) as ledger:
            write_run(ledger, actors)
            ledger.checkpoint(signer)
        report = verify_ledger(path, trust)
        assert report.ok == ok and (ok or set(report.checks()) == {"checkpoint_invalid"}), signer.name
    # A recovery: the agent's (or the server's) key, never an issuer's.
    for signer, ok in ((actors.agent, True), (server, True), (actors.user, False)):
        path = tmp_path / f"recovery-{signer.name}.jsonl"
        with Ledger(path) as ledger:
            write_run(ledger, actors)
        seq = parse_line(lines_of(path)[-1]).seq + 1
        with open(path, "ab") as stream:
            stream.write(b'{"v":1,"seq":%d,"ts":"20' % seq)
        Ledger(path, key=signer).close()
        report = verify_ledger(path, trust)
        assert report.ok == ok and (ok or "recovery_invalid" in report.checks()), signer.name
