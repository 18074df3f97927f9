"""`mcpclient-auth ledger verify` over many files: one ledger per agent worker (issue #17, fleet docs).

Each file is verified as a ledger of its own; the exit code is the worst one (1 over 3 over 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcpclient_auth.cli import app
from mcpclient_auth.ledger import Ledger
from tests.support.ledger_runs import Actors, lines_of, write_lines, write_run

runner = CliRunner()


@pytest.fixture(scope="module")
def actors() -> Actors:
    return Actors.generate()


def worker_ledgers(tmp_path: Path, actors: Actors, count: int = 3) -> tuple[list[Path], Path]:
    """``count`` worker ledgers, each with its own runs (as ``ledger-<worker>.jsonl`` files would be)."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(actors.jwks()))
    paths = []
    for worker in range(count):
        path = tmp_path / f"ledger-worker{worker}.jsonl"
        with Ledger(path) as writer:
            write_run(writer, actors, principal="alice", purpose=f"worker {worker}")
        paths.append(path)
    return paths, jwks


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout


def test_every_worker_ledger_is_verified(tmp_path: Path, actors: Actors) -> None:
    paths, jwks = worker_ledgers(tmp_path, actors)
    code, out = invoke("ledger", "verify", *map(str, paths), "--jwks", str(jwks))
    assert code == 0, out
    for path in paths:
        assert f"{path}: " in out
    assert out.count("OK: every check holds") == 3
    assert "3 ledgers, 0 failing" in out


def test_one_tampered_worker_ledger_fails_the_whole_verification(tmp_path: Path, actors: Actors) -> None:
    paths, jwks = worker_ledgers(tmp_path, actors)
    lines = lines_of(paths[1])
    write_lines(paths[1], [lines[0], *lines[2:]])  # a line deleted in the middle worker's file
    code, out = invoke("ledger", "verify", *map(str, paths), "--jwks", str(jwks))
    assert code == 1
    assert out.count("OK: every check holds") == 2
    assert "3 ledgers, 1 failing" in out
    code, out = invoke("ledger", "verify", *map(str, paths), "--jwks", str(jwks), "--json")
    document = json.loads(out)
    assert code == 1 and document["exit_code"] == 1
    assert [item["file"] for item in document["files"]] == [str(p) for p in paths]
    assert [item["report"]["ok"] for item in document["files"]] == [True, False, True]


def test_only_an_unsealed_tail_is_exit_3_and_a_failure_elsewhere_wins(tmp_path: Path, actors: Actors) -> None:
    paths, jwks = worker_ledgers(tmp_path, actors)
    with Ledger(paths[0]) as writer:  # a live worker: a run still open after its last seal
        write_run(writer, actors, principal="alice", purpose="still running", seal=False, record=False)
    code, out = invoke("ledger", "verify", *map(str, paths), "--jwks", str(jwks))
    assert code == 3, out
    code, out = invoke("ledger", "verify", *map(str, paths), "--jwks", str(jwks), "--allow-unsealed-tail")
    assert code == 0, out
    lines = lines_of(paths[2])
    write_lines(paths[2], lines[:-2] + lines[-1:])
    code, _ = invoke("ledger", "verify", *map(str, paths), "--jwks", str(jwks))
    assert code == 1


def test_a_missing_file_is_a_usage_error_before_anything_is_verified(tmp_path: Path, actors: Actors) -> None:
    paths, jwks = worker_ledgers(tmp_path, actors, count=1)
    code, out = invoke("ledger", "verify", str(paths[0]), str(tmp_path / "absent.jsonl"), "--jwks", str(jwks))
    assert code == 2 and "OK" not in out
