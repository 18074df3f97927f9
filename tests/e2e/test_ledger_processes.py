"""Several real processes writing one ledger; forks; writers killed with SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from mcpclient_auth.ledger import Ledger, LedgerReader, line_hash, parse_line, verify_ledger
from mcpclient_auth.ledger.format import GENESIS_PREV
from tests.support.ledger_runs import Actors, write_run, write_runs_in_process, write_until_killed

pytestmark = pytest.mark.e2e

ENTRIES_PER_RUN = 18


def assert_whole_and_chained(path: Path) -> list[bytes]:
    """Every line parses (no interleaved bytes), seq counts 1..n, prev chains (independent of verify)."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    prev = GENESIS_PREV
    for seq, line in enumerate(lines, start=1):
        entry = parse_line(line)
        assert (entry.seq, entry.prev) == (seq, prev)
        prev = line_hash(line)
    return lines


def test_four_processes_append_to_one_ledger(tmp_path: Path) -> None:
    actors = Actors.generate()
    path = tmp_path / "shared.jsonl"
    runs_each = 6
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    user, agent = actors.private_jwks()
    workers = [
        ctx.Process(
            target=write_runs_in_process, args=(str(path), user, agent, runs_each, barrier, f"user{n}")
        )
        for n in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]

    lines = assert_whole_and_chained(path)
    assert len(lines) == 4 * runs_each * ENTRIES_PER_RUN
    report = verify_ledger(path, actors.trust, jobs=2)
    assert report.ok, report.failures[:5]
    assert len(report.runs) == 4 * runs_each
    assert all(summary.sealed and summary.verified for summary in report.runs.values())
    principals = sorted(summary.principal or "" for summary in report.runs.values())
    assert principals == sorted(f"user{n}" for n in range(4) for _ in range(runs_each))


def test_a_forked_child_shares_a_ledger_object_safely(tmp_path: Path) -> None:
    actors = Actors.generate()
    path = tmp_path / "forked.jsonl"
    ledger = Ledger(path, durability="none")
    try:
        ledger.append(run="before-fork", kind="denial")
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=_append_many, args=(ledger, "child"))
        child.start()
        _append_many(ledger, "parent")
        child.join(timeout=60)
        assert child.exitcode == 0
        write_run(ledger, actors)
    finally:
        ledger.close()
    lines = assert_whole_and_chained(path)
    writers = [parse_line(line).meta.get("writer") for line in lines]
    assert writers.count("child") == writers.count("parent") == 300


def _append_many(ledger: Ledger, writer: str) -> None:
    for i in range(300):
        ledger.append(run="forked", kind="denial", meta={"writer": writer, "i": i})


def test_writers_killed_with_sigkill_leave_a_ledger_that_opens_and_verifies(tmp_path: Path) -> None:
    actors = Actors.generate()
    path = tmp_path / "crash.jsonl"
    user, agent = actors.private_jwks()
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(3):
        before = path.stat().st_size if path.exists() else 0
        child = ctx.Process(target=write_until_killed, args=(str(path), user, agent, 500))
        child.start()
        deadline = time.monotonic() + 60
        # Kill it somewhere in the middle of its work, at a different point each round.
        while time.monotonic() < deadline and (
            not path.exists() or path.stat().st_size < before + 20_000 * (round_ + 1)
        ):
            time.sleep(0.005)
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
        assert child.exitcode == -signal.SIGKILL
        # The file always opens; a writer reopening it continues the chain (recovering a torn tail).
        with Ledger(path) as ledger:
            write_run(ledger, actors, principal=f"after-crash-{round_}")
        report = verify_ledger(path, actors.trust, allow_unsealed=True)
        assert report.ok, report.failures[:5]
        assert report.torn_tail is None
    summaries = LedgerReader(path).runs()
    assert {s.principal for s in summaries if s.sealed} >= {"after-crash-0", "after-crash-1", "after-crash-2"}
    assert_whole_and_chained(path)
