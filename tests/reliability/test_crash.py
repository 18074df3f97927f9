"""Acceptance 2 and 3 (issue 9): writers killed with SIGKILL at random points; several processes.

Crash safety: a writer process is killed with SIGKILL, 20 times, each time after a random amount of
writing. To make the kill land *inside* a line as well as between lines, the writer's ``os.write``
is replaced (in the child only) by one that writes at most 97 bytes per call and pauses before each
call: the ledger's own short-write loop then finishes every line in many system calls, exactly as it
does when a signal or a filling disk interrupts a write. After every kill, before any writer reopens
the file:

- the file opens and reads (``Ledger.open``: entries, runs) — no exception;
- ``verify_ledger`` reports at most the uncovered tail — ``unsealed_tail`` (the run that was being
  written) and ``torn_tail``: no ``chain_broken``, ``seq_gap`` or any other failure on the complete
  lines; ``mcpclient-auth ledger verify`` exits 3 for exactly that (0 when the kill fell right after
  a seal), and 0 with ``--allow-unsealed-tail``;

then a new writer with the agent's key reopens it, records a *signed* recovery (an ``error`` entry
``ledger_recovered`` when the tail was torn), continues the chain, and the file verifies clean.

Multi-process appends (acceptance 3) are covered by
``tests/e2e/test_ledger_processes.py::test_four_processes_append_to_one_ledger`` (4 spawned
processes, 6 runs each, contiguous seq, chain checked line by line, every run verified) and
``::test_a_forked_child_shares_a_ledger_object_safely``; this module adds the byte-level check with
writers that use short writes, where interleaving would be likeliest.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mcpclient_auth.cli import app
from mcpclient_auth.errors import LedgerFormatError
from mcpclient_auth.ledger import Ledger, LedgerReader, line_hash, parse_line, verify_ledger
from mcpclient_auth.ledger.format import GENESIS_PREV, RECOVERY_CODE
from tests.support.ledger_runs import Actors, write_run

from .support import env_int

pytestmark = pytest.mark.e2e

KILLS = env_int("CRASH_KILLS", 20)
CHUNK = 97


class _ShortWrites:
    """Stands in for the ``os`` module inside the ledger writer: every ``write`` is short and slow."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: Any) -> int:
        time.sleep(0.0003)
        return os.write(fd, bytes(data[:CHUNK]))


def _use_short_writes() -> None:
    from mcpclient_auth.ledger import writer

    writer.os = _ShortWrites()  # type: ignore[assignment]


def _write_until_killed(
    path: str, user: dict[str, Any], agent: dict[str, Any], principal: str, ready: Any
) -> None:
    _use_short_writes()
    actors = Actors.from_private(user, agent)
    ledger = Ledger(path, durability="none")
    ready.set()
    for _ in range(2000):  # bounded; the parent kills us long before
        write_run(ledger, actors, principal=principal)


def _append_loop(path: str, writer_id: int, count: int, barrier: Any) -> None:
    _use_short_writes()
    ledger = Ledger(path, durability="none")
    barrier.wait(timeout=60)
    for i in range(count):
        ledger.append(
            run=f"writer-{writer_id}",
            kind="denial",
            meta={"writer": writer_id, "i": i, "pad": "x" * (i % 300)},
        )
    ledger.close()


def _complete_lines_chained(data: bytes) -> int:
    """Independently of the verifier: every complete line parses, ``seq`` counts up, ``prev`` chains;
    a line that does not parse (a torn line a later writer terminated) is directly followed by its
    recovery record. Returns the number of entries."""
    prev, seq, count = GENESIS_PREV, 0, 0
    torn_hash: str | None = None
    for line in data.split(b"\n")[:-1]:
        try:
            entry = parse_line(line)
        except LedgerFormatError:
            assert torn_hash is None, "two unreadable lines in a row"
            torn_hash = prev = line_hash(line)
            continue
        if torn_hash is not None:
            assert entry.is_recovery and entry.meta["torn_hash"] == torn_hash
            torn_hash = None
        assert entry.prev == prev and entry.seq == seq + 1
        prev, seq, count = line_hash(line), entry.seq, count + 1
    return count


def test_sigkill_at_random_points(tmp_path: Path) -> None:
    actors = Actors.generate()
    path = tmp_path / "crash.jsonl"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(actors.jwks()))
    user, agent = actors.private_jwks()
    ctx = multiprocessing.get_context("spawn")
    rng = random.Random(9)
    torn_rounds = 0
    runner = CliRunner()
    for round_ in range(KILLS):
        before = path.stat().st_size if path.exists() else 0
        target = before + rng.randint(500, 30_000)
        ready = ctx.Event()
        child = ctx.Process(
            target=_write_until_killed, args=(str(path), user, agent, f"crash-{round_}", ready)
        )
        child.start()
        assert ready.wait(60)
        deadline = time.monotonic() + 60
        while path.stat().st_size < target and time.monotonic() < deadline and child.is_alive():
            time.sleep(0.001)
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
        assert child.exitcode == -signal.SIGKILL

        data = path.read_bytes()
        torn = not data.endswith(b"\n")
        torn_rounds += torn
        # The file always opens and reads, torn tail or not.
        reader = LedgerReader(path)
        assert sum(1 for _ in reader.entries()) >= 1
        reader.runs()
        assert _complete_lines_chained(data) >= 1
        report = verify_ledger(path, actors.trust, allow_unsealed=True)
        assert set(report.checks()) <= {"torn_tail", "unsealed_tail"}, report.failures[:3]
        assert (report.torn_tail is not None) == torn
        assert report.exit_code == (3 if report.tail is not None else 0)
        assert torn <= (report.tail is not None)  # a torn line is always part of the tail
        result = runner.invoke(
            app, ["ledger", "verify", str(path), "--jwks", str(jwks), "--allow-unsealed", "--json"]
        )
        assert result.exit_code == report.exit_code, result.output
        assert set(json.loads(result.stdout)["checks"]) <= {"torn_tail", "unsealed_tail"}
        result = runner.invoke(
            app,
            ["ledger", "verify", str(path), "--jwks", str(jwks), "--allow-unsealed", "--allow-unsealed-tail"],
        )
        assert result.exit_code == 0, result.output

        # A writer reopening the file closes the torn line, records (and signs) that, and continues.
        with Ledger(path, key=actors.agent) as ledger:
            assert len(ledger.recoveries) == int(torn)
            if torn:
                recovery = ledger.recoveries[0]
                assert recovery.meta["code"] == RECOVERY_CODE and recovery.kind == "error"
                assert recovery.token is not None
            write_run(ledger, actors, principal=f"after-{round_}")
        report = verify_ledger(path, actors.trust, allow_unsealed=True)
        assert report.ok, report.failures[:3]
        assert report.torn_tail is None and report.tail is None
        assert len(report.recoveries) == torn_rounds
        assert all(r.signed for r in report.recoveries)

    sealed = {s.principal for s in LedgerReader(path).runs() if s.sealed}
    assert {f"after-{n}" for n in range(KILLS)} <= sealed
    print(
        f"\ncrash: {KILLS} SIGKILLs, {torn_rounds} left a torn tail, all recovered; {path.stat().st_size} bytes"
    )
    # The kill lands mid-line most of the time (a line takes many slow writes); the exact count varies.
    assert KILLS < 5 or torn_rounds >= 1


def test_four_processes_with_short_writes_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    count = 150
    workers = [ctx.Process(target=_append_loop, args=(str(path), n, count, barrier)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert len(lines) == 4 * count
    prev = GENESIS_PREV
    per_writer: dict[int, list[int]] = {}
    for seq, line in enumerate(lines, start=1):
        entry = parse_line(line)  # a line with another writer's bytes inside would not parse
        assert (entry.seq, entry.prev) == (seq, prev)
        prev = line_hash(line)
        per_writer.setdefault(entry.meta["writer"], []).append(entry.meta["i"])
    assert per_writer == {n: list(range(count)) for n in range(4)}
    # The writers really did run at the same time: their lines alternate somewhere.
    switches = sum(
        1
        for a, b in itertools.pairwise(lines)
        if parse_line(a).meta["writer"] != parse_line(b).meta["writer"]
    )
    assert switches >= 3
