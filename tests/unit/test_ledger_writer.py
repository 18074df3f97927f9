"""The ledger writer: file mode, chaining across writers, seals, durability, crash recovery."""

from __future__ import annotations

import asyncio
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mcpclient_auth import jose
from mcpclient_auth.errors import ConfigurationError, LedgerError, LedgerFormatError
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import GENESIS_PREV, Ledger, LedgerReader, line_hash, parse_line, verify_ledger
from mcpclient_auth.ledger.format import RECOVERY_CODE
from tests.support.ledger_runs import Actors, write_run

RUN = "6e74f774-5a88-4ad3-9c2f-80a45096a4be"


def chain_of(path: Path) -> list[bytes]:
    """The file's lines, asserted (independently of the verifier) to be whole, contiguous and chained."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    prev = GENESIS_PREV
    for number, line in enumerate(lines, start=1):
        entry = parse_line(line)
        assert entry.seq == number
        assert entry.prev == prev
        prev = line_hash(line)
    return lines


def test_file_is_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    for index, umask in enumerate((0o022, 0o077, 0o277, 0o000)):
        old = os.umask(umask)
        try:
            path = tmp_path / f"ledger-{index}.jsonl"
            with Ledger(path) as ledger:
                ledger.append(run=RUN, kind="denial", meta={"code": "mandate_denied"})
        finally:
            os.umask(old)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(umask)


def test_appends_are_whole_lines_chained_from_genesis(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:
        first = ledger.append(run=RUN, kind="denial", meta={"code": "mandate_denied"})
        second = ledger.append(run=RUN, kind="error", meta={"code": "upstream_unavailable"})
    assert (first.seq, first.prev) == (1, GENESIS_PREV)
    lines = chain_of(path)
    assert second.seq == 2 and second.prev == line_hash(lines[0])
    assert parse_line(lines[1]) == second


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:
        for _ in range(3):
            ledger.append(run=RUN, kind="denial")
    with Ledger(path) as ledger:
        assert ledger.seq == 3
        entry = ledger.append(run=RUN, kind="denial")
    assert entry.seq == 4
    assert len(chain_of(path)) == 4


def test_two_writers_on_one_file_interleave_and_stay_chained(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    a, b = Ledger(path), Ledger(path)
    try:
        for i in range(20):
            (a if i % 3 else b).append(run=RUN, kind="denial", meta={"i": i})
    finally:
        a.close()
        b.close()
    lines = chain_of(path)
    assert [parse_line(line).meta["i"] for line in lines] == list(range(20))


def test_threads_share_one_writer(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path, durability="none") as ledger, ThreadPoolExecutor(max_workers=4) as pool:

        def work(worker: int) -> None:
            for i in range(250):
                ledger.append(run=RUN, kind="denial", meta={"worker": worker, "i": i})

        list(pool.map(work, range(4)))
    lines = chain_of(path)
    assert len(lines) == 1000
    seen = {(parse_line(line).meta["worker"], parse_line(line).meta["i"]) for line in lines}
    assert len(seen) == 1000


async def test_async_tasks_share_one_writer(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:

        async def task(n: int) -> None:
            for i in range(10):
                ledger.append(run=RUN, kind="denial", meta={"task": n, "i": i})
                await asyncio.sleep(0)

        await asyncio.gather(*(task(n) for n in range(10)))
    assert len(chain_of(path)) == 100


def test_durability_modes(tmp_path: Path) -> None:
    for mode in ("none", "flush", "fsync"):
        path = tmp_path / f"{mode}.jsonl"
        with Ledger(path, durability=mode) as ledger:
            assert ledger.durability == mode
            for _ in range(3):
                ledger.append(run=RUN, kind="denial")
        assert len(chain_of(path)) == 3
    with pytest.raises(ConfigurationError):
        Ledger(tmp_path / "x.jsonl", durability="sometimes")


def test_seal_signs_count_and_last_hash_of_its_run(tmp_path: Path) -> None:
    agent = Identity.generate("ES256", name="agent-1")
    other = "0e5d686c-c09d-4753-a2fd-653edff020dc"
    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:
        ledger.append(run=RUN, kind="denial")
        ledger.append(run=other, kind="denial")  # another run's entries do not count
        ledger.append(run=RUN, kind="error", meta={"code": "x"})
        assert ledger.count(RUN) == 2
        seal = ledger.seal(RUN, agent)
        assert ledger.count(RUN) == 0
    lines = chain_of(path)
    assert seal.kind == "seal" and seal.seq == 4 and seal.meta == {"count": 2}
    assert seal.token is not None
    jws = jose.verify(seal.token, TrustStore([agent]), typs={jose.SEAL_TYP})
    assert jws.header["typ"] == "ledger-seal+jwt"
    assert jws.claims["run"] == RUN and jws.claims["count"] == 2
    assert jws.claims["last"] == seal.prev == line_hash(lines[2])
    assert isinstance(jws.claims["iat"], int)


def test_refusals(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    ledger = Ledger(path)
    with pytest.raises(LedgerFormatError):
        ledger.append(run=RUN, kind="seal")
    with pytest.raises(LedgerFormatError):
        ledger.append(run=RUN, kind="gossip")
    with pytest.raises(LedgerFormatError):
        ledger.append(run=RUN, kind="denial", meta={"x": object()})
    with pytest.raises(LedgerFormatError):
        ledger.seal("", Identity.generate())
    assert path.read_bytes() == b"" and ledger.seq == 0  # nothing half-written
    ledger.close()
    ledger.close()  # idempotent
    assert ledger.closed
    with pytest.raises(LedgerError):
        ledger.append(run=RUN, kind="denial")
    with pytest.raises(LedgerError):
        Ledger(tmp_path)  # a directory


def test_open_returns_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:
        ledger.append(run=RUN, kind="denial", meta={"code": "mandate_denied"})
    reader = Ledger.open(path)
    assert isinstance(reader, LedgerReader)
    assert [e.meta["code"] for e in reader.entries()] == ["mandate_denied"]


# --- crash recovery ----------------------------------------------------------------------------------


def _recovery_of(path: Path, torn: bytes, last_good_seq: int) -> None:
    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]
    torn_index = lines.index(torn)
    recovery = parse_line(lines[torn_index + 1])
    assert recovery.kind == "error" and recovery.run == ""
    assert recovery.meta["code"] == RECOVERY_CODE
    assert recovery.meta["torn_bytes"] == len(torn)
    assert recovery.meta["torn_hash"] == line_hash(torn) == recovery.prev
    # Only what the writer can vouch for; a keyless writer signs nothing.
    assert set(recovery.meta) == {"code", "torn_bytes", "torn_hash"} and recovery.token is None
    assert recovery.seq == last_good_seq + 1


def test_torn_tail_is_closed_and_recorded_on_open(tmp_path: Path) -> None:
    actors = Actors.generate()
    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:
        written = write_run(ledger, actors)
    good = len(written.entries)
    torn = b'{"v":1,"seq":19,"ts":"2026-11-05T09:3'  # a writer died mid-write
    with open(path, "ab") as stream:
        stream.write(torn)
    with Ledger(path) as ledger:
        assert len(ledger.recoveries) == 1
        after = write_run(ledger, actors).entries[0]  # the next run chains on
    _recovery_of(path, torn, good)
    assert after.seq == good + 2
    report = verify_ledger(path, actors.trust)
    assert report.ok, report.failures
    assert report.torn_tail is None
    assert [(r.line, r.torn_bytes, r.last_good_seq) for r in report.recoveries] == [
        (good + 1, len(torn), good)
    ]


def test_unparsable_complete_last_line_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:
        ledger.append(run=RUN, kind="denial")
    with open(path, "ab") as stream:
        stream.write(b"garbage\n")
    with Ledger(path) as ledger:
        assert len(ledger.recoveries) == 1
    _recovery_of(path, b"garbage", 1)


def test_complete_line_missing_only_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:
        ledger.append(run=RUN, kind="denial")
        ledger.append(run=RUN, kind="denial")
    path.write_bytes(path.read_bytes()[:-1])
    last = path.read_bytes().split(b"\n")[-1]
    with Ledger(path) as ledger:
        entry = ledger.append(run=RUN, kind="denial")
    _recovery_of(path, last, 2)  # the line itself was whole: it counts as good
    assert entry.seq == 4
    assert len(chain_of(path)) == 4


def test_a_live_writer_repairs_a_tail_torn_by_another(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path) as ledger:
        ledger.append(run=RUN, kind="denial")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b'{"v":1,"se')  # another process died here
        os.close(fd)
        entry = ledger.append(run=RUN, kind="denial")
        assert len(ledger.recoveries) == 1
    _recovery_of(path, b'{"v":1,"se', 1)
    assert entry.seq == 3


def test_files_that_are_only_damage(tmp_path: Path) -> None:
    for index, content in enumerate((b"\n", b"\x00\x01\x02", b"not json\nnor this")):
        path = tmp_path / f"d{index}.jsonl"
        path.write_bytes(content)
        with Ledger(path) as ledger:
            assert len(ledger.recoveries) == 1
            entry = ledger.append(run=RUN, kind="denial")
        # Nothing parsable before the damage: numbering restarts after the recovery record.
        assert entry.seq == 2
        reader = LedgerReader(path)
        assert [e.kind for e in reader.entries()] == ["error", "denial"]
