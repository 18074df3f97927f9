"""``RunJournal``: the request path's ledger writes and the exactly-once outcome claim, no network."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mcpclient_auth._journal import InFlight, RunJournal
from mcpclient_auth.dag import Frontier
from mcpclient_auth.errors import MandateDenied, NoTokenForPrincipal, RunClosed
from mcpclient_auth.jsonrpc import Call
from mcpclient_auth.ledger import Ledger

TOOL_CALL = Call("request", "tools/call", 7, "search")


def journal(tmp_path: Path) -> tuple[RunJournal, Path]:
    path = tmp_path / "l.jsonl"
    return RunJournal(Ledger(path), run_id="run-1", principal_id="alice", frontier=Frontier("run-1")), path


def flight(jti: str = "ect-1", call: Call = TOOL_CALL) -> InFlight:
    return InFlight(None, call, "mcp.search", jti, ["run-1"], "http://h/mcp", "tok")  # type: ignore[arg-type]


def kinds(path: Path) -> list[str]:
    return [entry.kind for entry in Ledger.open(path).entries()]


def test_a_call_is_sent_then_answered_exactly_once(tmp_path: Path) -> None:
    j, path = journal(tmp_path)
    item = flight()
    j.sent(item)
    assert j.response(item, status=200, out_hash="h", nbytes=3, completed=True) is not None
    # A late transport error or a second response is not written: one outcome per call.
    assert j.error(item, "transport_error", "ReadError") is None
    assert j.response(item, status=200, out_hash="h", nbytes=3, completed=True) is None
    assert kinds(path) == ["ect", "response"]
    ect = next(Ledger.open(path).entries(kind="ect"))
    assert ect.meta["principal"] == "alice" and ect.meta["tool"] == "search" and ect.jti == "ect-1"
    # The completed tool call joined the DAG frontier and is the record's exec_act.
    assert j.frontier.current() == ["ect-1"] and j.last_action == "mcp.search"


def test_a_failed_or_incomplete_answer_does_not_join_the_frontier(tmp_path: Path) -> None:
    j, _ = journal(tmp_path)
    before = j.frontier.current()
    first, second = flight("ect-1"), flight("ect-2")
    j.sent(first)
    j.sent(second)
    j.response(first, status=500, out_hash="h", nbytes=0, completed=True)
    j.response(second, status=200, out_hash="h", nbytes=0, completed=False)
    assert j.frontier.current() == before and j.last_action is None


def test_the_claim_is_exactly_once_under_contention(tmp_path: Path) -> None:
    j, _ = journal(tmp_path)
    item = flight()
    j.sent(item)
    wins: list[bool] = []
    threads = [threading.Thread(target=lambda: wins.append(j.claim(item))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_a_denial_or_an_unavailable_token_is_recorded_by_kind(tmp_path: Path) -> None:
    j, path = journal(tmp_path)
    j.denial(TOOL_CALL, "mcp.search", MandateDenied("no", action="mcp.search"))
    j.denial(TOOL_CALL, None, NoTokenForPrincipal("none for alice"))
    entries = list(Ledger.open(path).entries())
    assert [e.kind for e in entries] == ["denial", "error"]
    assert entries[0].meta["code"] == "mandate_denied" and entries[0].meta["principal"] == "alice"


def test_stop_writes_incomplete_errors_and_refuses_later_calls(tmp_path: Path) -> None:
    j, path = journal(tmp_path)
    open_call, answered = flight("ect-1"), flight("ect-2")
    j.sent(open_call)
    j.sent(answered)
    j.response(answered, status=200, out_hash="h", nbytes=0, completed=True)
    j.stop()
    assert j.closed
    with pytest.raises(RunClosed):
        j.sent(flight("ect-3"))
    assert j.response(open_call, status=200, out_hash="h", nbytes=0, completed=True) is None
    errors = list(Ledger.open(path).entries(kind="error"))
    assert [(e.jti, e.meta["code"]) for e in errors] == [("ect-1", "incomplete")]
    assert kinds(path) == ["ect", "ect", "response", "error"]
