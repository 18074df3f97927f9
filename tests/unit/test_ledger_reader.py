"""LedgerReader: streaming entries, run summaries, torn tails and garbage, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpclient_auth.ledger import Ledger, LedgerReader, line_hash
from mcpclient_auth.ledger.format import MAX_LINE_BYTES
from tests.support.ledger_runs import Actors, WrittenRun, lines_of, write_lines, write_run


@pytest.fixture(scope="module")
def actors() -> Actors:
    return Actors.generate()


@pytest.fixture
def two_runs(tmp_path: Path, actors: Actors) -> tuple[Path, WrittenRun, WrittenRun]:
    path = tmp_path / "ledger.jsonl"
    with Ledger(path) as ledger:
        first = write_run(ledger, actors, principal="alice")
        second = write_run(
            ledger,
            actors,
            principal="bob",
            parallel_tools=("search",),
            join_tool=None,
            denied_tool=None,
            record=False,
            seal=False,
        )
    return path, first, second


def test_entries_in_order_with_filters(two_runs: tuple[Path, WrittenRun, WrittenRun]) -> None:
    path, first, second = two_runs
    reader = LedgerReader(path)
    assert [e.seq for e in reader.entries()] == list(range(1, len(first.entries) + len(second.entries) + 1))
    assert list(reader) == list(reader.entries())
    assert [e.jti for e in reader.entries(run=second.run, kind="ect")] == [*second.session, *second.parallel]
    assert [e.kind for e in reader.entries(kind="seal")] == ["seal"]
    assert reader.problems == [] and reader.torn is None and reader.torn_tail() is None


def test_runs_summary(two_runs: tuple[Path, WrittenRun, WrittenRun]) -> None:
    path, first, second = two_runs
    summaries = Ledger.open(path).runs()
    assert [s.run for s in summaries] == [first.run, second.run]
    alice, bob = summaries
    assert (alice.purpose, alice.principal, alice.calls, alice.session_calls) == (
        "Answer HR questions",
        "alice",
        4,
        3,
    )
    assert (alice.responses, alice.denials, alice.status, alice.sealed) == (7, 1, "completed", True)
    assert alice.tools == {"search": 1, "lookup": 1, "fetch": 1, "summarize": 1}
    assert alice.verified is None  # the reader checks nothing
    assert (bob.principal, bob.calls, bob.denials, bob.status, bob.sealed) == ("bob", 1, 0, "open", False)
    assert alice.to_dict()["tools"] == alice.tools


def test_torn_tail_is_reported_not_raised(two_runs: tuple[Path, WrittenRun, WrittenRun]) -> None:
    path, first, second = two_runs
    complete = path.read_bytes()
    torn = b'{"v":1,"seq":99,"ts":"2026'
    path.write_bytes(complete + torn)
    reader = LedgerReader(path)
    entries = list(reader.entries())
    assert len(entries) == len(first.entries) + len(second.entries)
    assert reader.torn is not None and reader.torn.offset == len(complete) and reader.torn.length == len(torn)
    assert reader.torn.hash == line_hash(torn)
    assert reader.torn_tail() == reader.torn.__class__(len(complete), len(torn), line_hash(torn))
    assert [(p.torn, p.recovered) for p in reader.problems] == [(True, False)]
    last = list(reader.lines())[-1]
    assert not last.terminated and last.entry is None and last.data == torn


def test_malformed_middle_lines_are_skipped_and_reported(
    tmp_path: Path, two_runs: tuple[Path, WrittenRun, WrittenRun]
) -> None:
    path, _first, _second = two_runs
    lines = lines_of(path)
    write_lines(path, [lines[0], b"\x00garbage", b"", *lines[1:3], b'{"v":1}', *lines[3:]])
    reader = LedgerReader(path)
    assert len(list(reader.entries())) == len(lines)
    assert [p.number for p in reader.problems] == [2, 3, 6]
    assert all(not p.torn and not p.recovered and p.reason for p in reader.problems)


def test_recovered_lines_are_marked(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_bytes(b'{"v":1,"seq":1,"t')
    with Ledger(path) as ledger:
        ledger.append(run="r", kind="denial")
    reader = LedgerReader(path)
    assert [e.kind for e in reader.entries()] == ["error", "denial"]
    assert [(p.number, p.recovered) for p in reader.problems] == [(1, True)]
    assert [e.meta["torn_bytes"] for e in reader.recoveries()] == [17]


def test_an_oversize_line_is_hashed_not_kept(
    tmp_path: Path, two_runs: tuple[Path, WrittenRun, WrittenRun]
) -> None:
    path, _first, _ = two_runs
    lines = lines_of(path)
    huge = b"x" * (MAX_LINE_BYTES + 10)
    write_lines(path, [lines[0], huge, *lines[1:]])
    raw = list(LedgerReader(path).lines())
    assert raw[1].data == b"" and raw[1].length == len(huge) and raw[1].hash == line_hash(huge)
    assert raw[1].entry is None and "longer" in (raw[1].error or "")
    assert raw[2].entry is not None and raw[2].offset == len(lines[0]) + 1 + len(huge) + 1


def test_a_missing_file_is_a_ledger_error(tmp_path: Path) -> None:
    from mcpclient_auth.errors import LedgerError

    with pytest.raises(LedgerError):
        list(LedgerReader(tmp_path / "absent.jsonl").entries())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_any_bytes_read_without_crashing(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    reader = LedgerReader(path)
    raw = list(reader.lines())
    assert sum(line.length + line.terminated for line in raw) == len(data)
    list(reader.entries())
    reader.runs()
    torn = reader.torn_tail()
    assert (torn is not None) == (bool(data) and not data.endswith(b"\n"))
