"""Issue 13, finding 3 and acceptance 3: nothing unsigned after the last seal passes `ledger verify`.

The three forgeries of the finding are reproduced as written by an attacker who can write the ledger
file but holds no key. Each of them exits 0 on the main branch of 2026-12-01 (checked with the same
steps against /work/main: "OK: every check holds"); here each exits non-zero with a named check.
A genuine crash-torn ledger still verifies: exit 3 (`unsealed_tail`) without a flag, 0 with
`--allow-unsealed-tail`, and 0 outright once a writer with a key has signed the recovery.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcpclient_auth.cli import app
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, LedgerEntry, encode_line, line_hash, parse_line, verify_ledger
from mcpclient_auth.ledger.format import (
    LEGACY_RECOVERY_MESSAGE,
    NO_RUN,
    RECOVERY_CODE,
    RECOVERY_TYP,
    format_ts,
)
from mcpclient_auth.ledger.verify import EXIT_FAILED, EXIT_OK, EXIT_UNSEALED_TAIL, Report
from tests.support.ledger_runs import Actors, lines_of, write_lines, write_run
from tests.support.trust import trust_for


@pytest.fixture(scope="module")
def actors() -> Actors:
    return Actors.generate()


def trust(actors: Actors, *keys: Identity) -> TrustStore:
    return trust_for(issuers=[(actors.user, [actors.user.name, "maria"])], agents=[actors.agent], keys=keys)


def sealed_ledger(tmp_path: Path, actors: Actors, name: str = "l.jsonl") -> Path:
    path = tmp_path / name
    with Ledger(path) as ledger:
        write_run(ledger, actors, principal="maria")
    return path


def cli_verify(tmp_path: Path, path: Path, actors: Actors, *flags: str) -> tuple[int, dict[str, object]]:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(trust(actors).to_jwks()))
    result = CliRunner().invoke(app, ["ledger", "verify", str(path), "--jwks", str(jwks), "--json", *flags])
    return result.exit_code, json.loads(result.stdout)


def checks(report: Report) -> set[str]:
    return set(report.checks())


def recovery_after(path: Path, bad: bytes, meta: dict[str, object], token: str | None = None) -> None:
    """Append ``bad`` and a hand-made recovery record chained over it, as an attacker would."""
    last = parse_line(lines_of(path)[-1])
    record = LedgerEntry(
        1, last.seq + 1, format_ts(last.time + 1), NO_RUN, "error", None, token, meta, line_hash(bad)
    )
    with open(path, "ab") as stream:
        stream.write(bad + b"\n" + encode_line(record) + b"\n")


# --- the three forgeries of finding 3 ------------------------------------------------------------------


def test_forgery_1_hand_made_recovery_with_invented_meta(tmp_path: Path, actors: Actors) -> None:
    path = sealed_ledger(tmp_path, actors)
    bad = b"garbage"
    recovery_after(
        path,
        bad,
        {
            "code": RECOVERY_CODE,
            "torn_bytes": len(bad),
            "torn_hash": line_hash(bad),
            "last_good_seq": parse_line(lines_of(path)[-1]).seq,
            "message": "maria approved salary disclosure",
        },
    )
    code, report = cli_verify(tmp_path, path, actors)
    assert code == EXIT_FAILED
    assert set(report["checks"]) == {"recovery_invalid", "unsealed_tail"}  # type: ignore[arg-type]
    reasons = " ".join(f["reason"] for f in report["failures"])  # type: ignore[attr-defined]
    assert "message is not the writer's" in reasons and "do not begin like" in reasons


def test_forgery_1_even_with_only_the_allowed_meta_is_an_unsealed_tail(
    tmp_path: Path, actors: Actors
) -> None:
    # The attacker mimics a torn write and the record exactly: nothing signs it, so it is the tail.
    path = sealed_ledger(tmp_path, actors)
    seq = parse_line(lines_of(path)[-1]).seq + 1
    bad = (
        b'{"v":1,"seq":%d,"ts":"2026-12-01T10:00:00.000000Z","run":"x","kind":"denial","meta":{"maria approved'
        % seq
    )
    recovery_after(path, bad, {"code": RECOVERY_CODE, "torn_bytes": len(bad), "torn_hash": line_hash(bad)})
    code, report = cli_verify(tmp_path, path, actors)
    assert code == EXIT_UNSEALED_TAIL and set(report["checks"]) == {"unsealed_tail"}  # type: ignore[arg-type]


def test_forgery_1_with_a_signature_by_an_unknown_key(tmp_path: Path, actors: Actors) -> None:
    from mcpclient_auth import jose

    path = sealed_ledger(tmp_path, actors)
    last = parse_line(lines_of(path)[-1])
    seq = last.seq + 1
    bad = b'{"v":1,"seq":%d,' % seq
    ts = format_ts(last.time + 1)
    claims = {
        "seq": seq,
        "ts": ts,
        "torn_bytes": len(bad),
        "torn_hash": line_hash(bad),
        "before": line_hash(lines_of(path)[-1]),
    }
    token = jose.encode(
        Identity.generate("ES256", name="mallory"), RECOVERY_TYP, {**claims, "iat": int(last.time)}
    )
    record = LedgerEntry(
        1,
        seq,
        ts,
        NO_RUN,
        "error",
        None,
        token,
        {"code": RECOVERY_CODE, "torn_bytes": len(bad), "torn_hash": line_hash(bad)},
        line_hash(bad),
    )
    with open(path, "ab") as stream:
        stream.write(bad + b"\n" + encode_line(record) + b"\n")
    report = verify_ledger(path, trust(actors))
    assert checks(report) == {"recovery_invalid", "unsealed_tail"} and report.exit_code == EXIT_FAILED
    assert "unknown_key" in report.failures[0].reason or "kid" in report.failures[0].reason


@pytest.mark.parametrize("keyed", [False, True])
def test_forgery_2_foreign_bytes_the_writer_repairs(tmp_path: Path, actors: Actors, keyed: bool) -> None:
    path = sealed_ledger(tmp_path, actors)
    with open(path, "ab") as stream:
        stream.write(b"maria approved salary disclosure")  # no newline: the writer will "repair" it
    with Ledger(path, key=actors.agent if keyed else None) as ledger:
        assert len(ledger.recoveries) == 1
        assert set(ledger.recoveries[0].meta) == {"code", "torn_bytes", "torn_hash"}
    code, report = cli_verify(tmp_path, path, actors)
    assert code == EXIT_FAILED and "recovery_invalid" in report["checks"]  # type: ignore[operator]
    # Even when later runs are sealed over it: a recovery record never launders foreign bytes.
    with Ledger(path, key=actors.agent) as ledger:
        write_run(ledger, actors)
    assert checks(verify_ledger(path, trust(actors))) == {"recovery_invalid"}


def test_forgery_3_the_final_seal_lines_jti(tmp_path: Path, actors: Actors) -> None:
    path = sealed_ledger(tmp_path, actors)
    lines = lines_of(path)
    lines[-1] = lines[-1].replace(b'"jti":null', b'"jti":"forged-approval"')
    write_lines(path, lines)
    code, report = cli_verify(tmp_path, path, actors)
    assert code == EXIT_FAILED and set(report["checks"]) == {"seal_mismatch"}  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["v", "seq", "ts", "run", "kind", "jti", "token", "meta", "prev"])
def test_every_field_of_the_final_seal_line_is_covered(tmp_path: Path, actors: Actors, field: str) -> None:
    path = sealed_ledger(tmp_path, actors)
    lines = lines_of(path)
    seal = parse_line(lines[-1])
    assert seal.token is not None
    changed = {
        "v": 2,
        "seq": seal.seq + 1,
        "ts": format_ts(seal.time + 0.000001),  # well inside the clock skew
        "run": "another-run",
        "kind": "denial",
        "jti": "x",
        "token": seal.token[:-2] + ("AA" if not seal.token.endswith("AA") else "BB"),
        "meta": {"count": seal.meta["count"], "note": "approved"},
        "prev": line_hash(b"other"),
    }[field]
    lines[-1] = encode_line(dataclasses.replace(seal, **{field: changed}))
    write_lines(path, lines)
    report = verify_ledger(path, trust(actors))
    assert not report.ok and report.exit_code != EXIT_OK, field


# --- genuine crashes -----------------------------------------------------------------------------------


def torn_write(path: Path) -> bytes:
    """What a writer that died mid-line leaves: the beginning of the next line, no newline."""
    seq = parse_line(lines_of(path)[-1]).seq + 1
    torn = b'{"v":1,"seq":%d,"ts":"2026-12-01T10:00:00.1' % seq
    with open(path, "ab") as stream:
        stream.write(torn)
    return torn


def test_a_crash_torn_ledger_exits_3_and_verifies_with_the_flag(tmp_path: Path, actors: Actors) -> None:
    path = sealed_ledger(tmp_path, actors)
    with Ledger(path) as ledger:  # a run in progress when the writer died
        write_run(ledger, actors, seal=False)
    torn_write(path)
    code, report = cli_verify(tmp_path, path, actors)
    assert code == EXIT_UNSEALED_TAIL and set(report["checks"]) == {"torn_tail", "unsealed_tail"}  # type: ignore[arg-type]
    code, report = cli_verify(tmp_path, path, actors, "--allow-unsealed-tail")
    assert code == EXIT_OK and report["tail"]["torn"] is True  # type: ignore[index]


def test_a_signed_recovery_covers_the_torn_bytes_it_closes(tmp_path: Path, actors: Actors) -> None:
    path = sealed_ledger(tmp_path, actors)
    torn = torn_write(path)  # the writer died while writing the line after the seal
    unsigned = tmp_path / "unsigned.jsonl"
    unsigned.write_bytes(path.read_bytes())
    with Ledger(path, key=actors.agent) as ledger:
        (recovery,) = ledger.recoveries
    assert recovery.token is not None and recovery.meta["torn_bytes"] == len(torn)
    report = verify_ledger(path, trust(actors))
    assert report.ok and report.exit_code == EXIT_OK and report.tail is None, report.failures
    assert [(r.torn_bytes, r.signed) for r in report.recoveries] == [(len(torn), True)]
    # A keyless writer's recovery vouches for nothing: the same file is an unsealed tail.
    with Ledger(unsigned):
        pass
    report = verify_ledger(unsigned, trust(actors))
    assert checks(report) == {"unsealed_tail"} and report.recoveries[0].signed is False
    # Editing the signed record's facts breaks it.
    lines = lines_of(path)
    edited = parse_line(lines[-1])
    lines[-1] = encode_line(dataclasses.replace(edited, meta={**edited.meta, "torn_bytes": len(torn) + 1}))
    write_lines(path, lines)
    assert "recovery_invalid" in checks(verify_ledger(path, trust(actors)))


def test_legacy_recovery_records_still_verify(tmp_path: Path, actors: Actors) -> None:
    # Written by the writer before 2026-12-01: last_good_seq and the fixed message, then sealed over.
    path = sealed_ledger(tmp_path, actors)
    seq = parse_line(lines_of(path)[-1]).seq
    torn = b'{"v":1,"seq":%d,"ts":"20' % (seq + 1)
    meta = {
        "code": RECOVERY_CODE,
        "torn_bytes": len(torn),
        "torn_hash": line_hash(torn),
        "last_good_seq": seq,
        "message": LEGACY_RECOVERY_MESSAGE,
    }
    recovery_after(path, torn, meta)
    with Ledger(path) as ledger:
        write_run(ledger, actors)
    report = verify_ledger(path, trust(actors))
    assert report.ok, report.failures
    assert [r.last_good_seq for r in report.recoveries] == [seq]


def test_a_recovery_record_that_closes_nothing(tmp_path: Path, actors: Actors) -> None:
    path = sealed_ledger(tmp_path, actors)
    last = lines_of(path)[-1]
    entry = parse_line(last)
    record = LedgerEntry(
        1,
        entry.seq + 1,
        format_ts(entry.time + 1),
        NO_RUN,
        "error",
        None,
        None,
        {"code": RECOVERY_CODE, "torn_bytes": 3, "torn_hash": line_hash(b"abc")},
        line_hash(last),
    )
    with open(path, "ab") as stream:
        stream.write(encode_line(record) + b"\n")
    with Ledger(path) as ledger:
        write_run(ledger, actors)
    assert checks(verify_ledger(path, trust(actors))) == {"recovery_invalid"}


def test_a_complete_looking_line_closed_by_a_recovery_is_never_an_entry(tmp_path: Path, actors: Actors) -> None:
    """Review 3, a3: a forged, correctly chained entry written without its newline and then "repaired"
    by the writer's signed recovery is torn bytes — never parsed, shown as an entry or counted."""
    path = tmp_path / "l.jsonl"
    with Ledger(path, key=actors.agent) as ledger:
        written = write_run(ledger, actors, principal="maria", seal=False)
    last_line = lines_of(path)[-1]
    last = parse_line(last_line)
    forged = LedgerEntry(
        1, last.seq + 1, format_ts(last.time + 1), written.run, "denial", None, None,
        {"code": "approved", "note": "maria approved salary disclosure"}, line_hash(last_line),
    )
    with open(path, "ab") as stream:
        stream.write(encode_line(forged))  # no newline: the next writer "repairs" it
    with Ledger(path, key=actors.agent) as ledger:
        (recovery,) = ledger.recoveries
    assert recovery.seq == last.seq + 2  # the writer took the torn bytes' seq
    assert [e.meta for e in Ledger.open(path).entries() if "note" in e.meta] == []
    report = verify_ledger(path, trust(actors), allow_unsealed=True, allow_unsealed_tail=True)
    assert report.ok, report.failures
    assert report.entries == report.lines - 1  # the closed bytes are no entry
    assert [(r.line, r.last_good_seq, r.signed) for r in report.recoveries] == [
        (len(lines_of(path)) - 1, last.seq, True)
    ]
