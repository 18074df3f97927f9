"""SSE resumption recorded (SEP-1699), without a network: the watcher keeps the stream's last event id
and the answer's bytes, the scanner finds answers on a resumed GET, and the journal writes the call's
``response`` entry on whichever stream its answer arrives."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth._hooks.streams import ResponseTracker, ResumedCallTracker, ResumedStreamTracker
from mcpclient_auth._journal import InFlight, RunJournal
from mcpclient_auth.dag import Frontier
from mcpclient_auth.jsonrpc import Call
from mcpclient_auth.ledger import Ledger, LedgerEntry
from mcpclient_auth.sse import ResponseScanner, ResponseWatcher

URL = "http://127.0.0.1:9/mcp"
STREAM = (URL, "session-1")
PRIMING = b"id: 41\ndata: \nretry: 50\n\n"


def answer(request_id: object, text: str = "42") -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": {"text": text}}).encode()


def event(data: bytes, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n".encode() if event_id is not None else b""
    return head + b"event: message\ndata: " + data + b"\n\n"


def setup(tmp_path: Path) -> tuple[RunJournal, InFlight, Path]:
    path = tmp_path / "l.jsonl"
    journal = RunJournal(Ledger(path), run_id="run-1", principal_id="alice", frontier=Frontier("run-1"))
    call = Call("request", "tools/call", 7, "report")
    inflight = InFlight(SimpleNamespace(journal=journal), call, "mcp.report", "ect-7", ["run-1"], URL, "tok")  # type: ignore[arg-type]
    journal.sent(inflight)
    return journal, inflight, path


def written(path: Path, kind: str) -> list[LedgerEntry]:
    return list(Ledger.open(path).entries(kind=kind))


# --- the parser ---------------------------------------------------------------------------------------


def test_the_watcher_keeps_the_last_event_id_and_the_answer_bytes() -> None:
    watcher = ResponseWatcher(7)
    assert not watcher.feed(PRIMING)
    assert watcher.last_event_id == "41" and watcher.answer is None
    data = answer(7)
    assert watcher.feed(event(data, "42"))
    assert (watcher.last_event_id, watcher.answer) == ("42", data)
    nul = ResponseWatcher(7)
    nul.feed(b"id: a\0b\ndata: x\n\n")  # WHATWG: an id holding NULL is ignored
    assert nul.last_event_id is None


def test_the_scanner_reports_every_response_with_its_id_and_event_id() -> None:
    seen: list[tuple[object, bytes, str | None]] = []
    scanner = ResponseScanner(lambda rid, data, eid: seen.append((rid, data, eid)))
    progress = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"result": 1}})
    request = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "sampling/createMessage", "params": {}})
    stream = (
        event(progress.encode(), "1")
        + event(request.encode(), "2")
        + event(answer(7), "3")
        + event(answer("7"))
    )
    for i in range(0, len(stream), 5):  # in small chunks: events span chunk borders
        assert scanner.feed(stream[i : i + 5]) is False  # a scanner never finishes by itself
    assert seen == [(7, answer(7), "3"), ("7", answer("7"), "3")]


# --- the journal and the trackers ----------------------------------------------------------------------


def test_an_answer_on_the_resumed_stream_is_the_calls_response(tmp_path: Path) -> None:
    journal, inflight, path = setup(tmp_path)
    post = ResponseTracker(inflight, 200, ResponseWatcher(7), STREAM)
    post.feed(PRIMING)
    post.on_eof()  # the server closed the POST stream after priming: nothing written yet
    assert [e.kind for e in Ledger.open(path).entries()] == ["ect"]
    assert journal.awaited(STREAM, 7) is inflight
    assert journal.awaited(STREAM, "7") is None and journal.awaited((URL, "other"), 7) is None

    ResumedStreamTracker(journal, (URL, "other"), 200).feed(event(answer(7, "not ours")))
    assert not written(path, "response")  # same id, another session: not this call's answer
    data = answer(7)
    resumed = ResumedStreamTracker(journal, STREAM, 200)
    resumed.feed(event(b'{"jsonrpc":"2.0","method":"notifications/message","params":{}}', "42"))
    resumed.feed(event(data, "43"))
    [response] = written(path, "response")
    assert response.jti == "ect-7"
    assert response.meta["out_hash"] == sha256_b64url(data) and response.meta["bytes"] == len(data)
    assert response.meta["resumed"] is True and response.meta["status"] == 200 and "code" not in response.meta
    assert journal.frontier.current() == ["ect-7"]  # the call joined the DAG
    assert journal.awaited(STREAM, 7) is None  # answered once: a replay of the event writes nothing
    resumed.feed(event(data, "43"))
    post.on_close()
    assert len(written(path, "response")) == 1


def test_an_answer_on_the_post_stream_is_written_there_not_again_on_a_get(tmp_path: Path) -> None:
    journal, inflight, path = setup(tmp_path)
    post = ResponseTracker(inflight, 200, ResponseWatcher(7), STREAM)
    post.feed(PRIMING + event(answer(7), "42"))
    [response] = written(path, "response")
    assert "resumed" not in response.meta
    assert response.meta["out_hash"] == sha256_b64url(PRIMING + event(answer(7), "42"))  # the POST body
    ResumedStreamTracker(journal, STREAM, 200).feed(event(answer(7), "42"))
    assert len(written(path, "response")) == 1


def test_a_stream_that_ends_without_an_id_or_answer_is_response_missing(tmp_path: Path) -> None:
    journal, inflight, path = setup(tmp_path)
    post = ResponseTracker(inflight, 200, ResponseWatcher(7), STREAM)
    post.feed(b"data: \n\n")  # no id: the client cannot resume
    post.on_eof()
    [response] = written(path, "response")
    assert response.meta["code"] == "response_missing"
    assert journal.frontier.current() == [] and journal.awaited(STREAM, 7) is None  # not in the DAG


def test_an_awaited_answer_that_never_comes_is_incomplete_at_close(tmp_path: Path) -> None:
    journal, inflight, path = setup(tmp_path)
    post = ResponseTracker(inflight, 200, ResponseWatcher(7), STREAM)
    post.feed(PRIMING)
    post.on_close()
    journal.stop()
    [error] = written(path, "error")
    assert (error.jti, error.meta["code"]) == ("ect-7", "incomplete")
    assert journal.awaited(STREAM, 7) is None
    ResumedStreamTracker(journal, STREAM, 200).feed(event(answer(7)))  # too late: nothing written
    assert not written(path, "response")


def test_a_stream_broken_after_an_event_id_is_resumed_not_an_error(tmp_path: Path) -> None:
    journal, inflight, path = setup(tmp_path)
    post = ResponseTracker(inflight, 200, ResponseWatcher(7), STREAM)
    post.feed(PRIMING)
    post.on_error(ConnectionResetError("peer closed"))  # mcp's client reconnects after this too
    assert not written(path, "error") and journal.awaited(STREAM, 7) is inflight
    ResumedStreamTracker(journal, STREAM, 200).feed(event(answer(7), "42"))
    assert [e.meta["resumed"] for e in written(path, "response")] == [True]
    broken = ResponseTracker(*setup(tmp_path / "b")[1:2], 200, ResponseWatcher(7), STREAM)  # type: ignore[misc]
    broken.on_error(ConnectionResetError("before any event"))  # nothing to resume from: an error
    [error] = written(tmp_path / "b" / "l.jsonl", "error")
    assert error.jti == "ect-7" and error.meta["message"] == "ConnectionResetError"


# --- a Last-Event-ID GET belongs to the call whose stream emitted that event id (review round 2, F2) ---


def _second(journal: RunJournal, request_id: int) -> InFlight:
    call = Call("request", "tools/call", request_id, "other")
    run = SimpleNamespace(journal=journal)
    inflight = InFlight(run, call, "mcp.other", f"ect-{request_id}", ["run-1"], URL, "tok")
    journal.sent(inflight)
    return inflight


def test_a_resumed_get_credits_the_call_it_resumes_with_a_mismatch_for_another_id(tmp_path: Path) -> None:
    journal, first, path = setup(tmp_path)
    other = _second(journal, 8)
    post = ResponseTracker(first, 200, ResponseWatcher(7), STREAM)
    post.feed(PRIMING)
    post.on_eof()  # ended after event "41": filed for a GET with Last-Event-ID: 41
    assert journal.resumed_call(STREAM, "41") is first and journal.resumed_call(STREAM, "40") is None
    ResponseTracker(other, 200, ResponseWatcher(8), STREAM)  # filed by wire id too
    get = ResumedCallTracker(first, STREAM, 200, ResponseWatcher(7))
    misdirected = answer(8, "for 7, carrying 8")
    get.feed(event(misdirected, "42") + event(answer(7)))
    [response] = written(path, "response")
    assert response.jti == "ect-7" and response.meta["code"] == "answer_id_mismatch"
    assert response.meta["resumed"] is True and response.meta["out_hash"] == sha256_b64url(misdirected)
    assert not other.finished and journal.resumed_call(STREAM, "41") is None


def test_an_event_id_two_calls_claim_resumes_neither(tmp_path: Path) -> None:
    journal, first, _ = setup(tmp_path)
    other = _second(journal, 8)
    journal.resume_from(first, STREAM, "41")
    journal.resume_from(other, STREAM, "41")
    assert journal.resumed_call(STREAM, "41") is None  # ambiguous: nothing on that GET is credited


def test_a_resumed_get_that_ends_early_files_the_call_under_its_last_event_id(tmp_path: Path) -> None:
    journal, first, path = setup(tmp_path)
    journal.resume_from(first, STREAM, "41")
    get = ResumedCallTracker(first, STREAM, 200, ResponseWatcher(7))
    get.feed(b"id: 43\ndata: \n\n")
    get.on_eof()  # the client resumes again from 43
    assert journal.resumed_call(STREAM, "43") is first
    ResumedCallTracker(first, STREAM, 200, ResponseWatcher(7)).feed(event(answer(7), "44"))
    [response] = written(path, "response")
    assert response.jti == "ect-7" and "code" not in response.meta and response.meta["resumed"] is True
