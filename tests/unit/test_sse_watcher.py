"""sse.ResponseWatcher: completion of a JSON-RPC call inside a text/event-stream, chunk by chunk."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth.sse import ResponseWatcher


def event(obj: object, newline: str = "\n") -> bytes:
    return f"event: message{newline}data: {json.dumps(obj)}{newline}{newline}".encode()


PROGRESS = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1, "result": "x"}}
RESULT = {"jsonrpc": "2.0", "id": 5, "result": {"content": []}}


def feed_all(watcher: ResponseWatcher, chunks: list[bytes]) -> list[bool]:
    return [watcher.feed(c) for c in chunks]


def test_notifications_do_not_complete_the_call() -> None:
    w = ResponseWatcher(5)
    assert not w.feed(event(PROGRESS) * 3)
    assert w.feed(event(RESULT))


def test_completion_is_reported_only_when_the_event_is_dispatched() -> None:
    w = ResponseWatcher(5)
    raw = event(RESULT)
    assert not w.feed(raw[:-1])  # the blank line has not arrived yet
    assert w.feed(raw[-1:])
    assert w.done and w.feed(b"more")  # stays done


def test_server_requests_and_notifications_are_not_the_answer() -> None:
    w = ResponseWatcher(5)
    assert not w.feed(event({"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage", "params": {}}))
    assert not w.feed(event({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}))
    assert w.feed(event({"jsonrpc": "2.0", "id": 5, "error": {"code": -1, "message": "no"}}))
    assert w.done and not w.id_mismatch


@pytest.mark.parametrize("other_id", [6, "5"])  # a string id is another id
def test_the_first_response_ends_the_stream_even_with_another_id(other_id: object) -> None:
    """mcp takes the first response on a request's stream as its end: a response with another id
    first means this request's answer never reaches the client, whatever follows."""
    w = ResponseWatcher(5)
    decoy = event({"jsonrpc": "2.0", "id": other_id, "result": {}})
    real = event({"jsonrpc": "2.0", "id": 5, "result": {}})
    assert not w.feed(decoy + real)  # one chunk, as a server can send it
    assert w.id_mismatch and not w.done
    assert w.answer is not None and json.loads(w.answer)["id"] == other_id
    assert not w.feed(real) and not w.done  # it looks no further


def test_events_of_another_type_are_ignored() -> None:
    w = ResponseWatcher(5)
    assert not w.feed(b'event: other\ndata: {"jsonrpc":"2.0","id":5,"result":{}}\n\n')
    assert not w.done and not w.id_mismatch
    assert w.feed(b'event:message\ndata: {"jsonrpc":"2.0","id":5,"result":{}}\n\n')


def test_multi_line_data_and_comments() -> None:
    w = ResponseWatcher("abc")
    raw = b': keep-alive\ndata: {"jsonrpc":"2.0",\ndata: "id":"abc","result":{}}\nid: 7\n\n'
    assert w.feed(raw)


def test_garbage_never_raises() -> None:
    w = ResponseWatcher(1)
    assert not w.feed(b"data: {not json\n\ndata: [1,2]\n\n\xff\xfe\n\n")


@settings(max_examples=200, deadline=None)
@given(
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    notifications=st.integers(min_value=0, max_value=3),
)
def test_any_chunking_and_line_ending_completes_exactly_at_the_end_of_the_response(
    newline: str, cuts: list[int], notifications: int
) -> None:
    raw = event(PROGRESS, newline) * notifications + event(RESULT, newline)
    points = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    chunks = [raw[a:b] for a, b in itertools.pairwise(points)]
    w = ResponseWatcher(5)
    results = feed_all(w, chunks)
    assert results[-1] is True
    # never earlier than the chunk that carries the final blank line
    first_true = results.index(True)
    assert sum(len(c) for c in chunks[: first_true + 1]) >= len(raw) - (1 if newline == "\r\n" else 0)


def test_huge_single_line_event_in_many_chunks() -> None:
    payload = {"jsonrpc": "2.0", "id": 1, "result": {"text": "x" * 2_000_000}}
    raw = event(payload)
    w = ResponseWatcher(1)
    results = [w.feed(raw[i : i + 1000]) for i in range(0, len(raw), 1000)]
    assert results[-1] and not any(results[:-1])


# --- the bound on what the watcher holds (issue 13, finding 5) ------------------------------------------


def test_an_event_over_the_bound_is_dropped_not_held() -> None:
    limit = 64 * 1024
    w = ResponseWatcher(5, max_event_bytes=limit)
    assert not w.feed(b"event: message\ndata: " + b"x" * 1000)
    most = 0
    for _ in range(1024):  # 64 MiB in 64 KiB chunks, one line: the finding's event
        w.feed(b"x" * 65536)
        most = max(most, w.held_bytes)
        if w.too_large:
            break
    assert w.too_large and not w.done and most <= limit and w.held_bytes == 0
    # Once flagged it stays flagged and holds nothing, whatever follows (even the response).
    assert not w.feed(b"\n\n" + event(RESULT)) and w.held_bytes == 0 and not w.done


def test_the_bound_counts_joined_data_lines_and_one_big_chunk() -> None:
    w = ResponseWatcher(5, max_event_bytes=1000)
    for _ in range(9):
        assert not w.feed(b"data: " + b"y" * 100 + b"\n")
    assert not w.too_large and w.held_bytes <= 1000
    w.feed(b"data: " + b"y" * 200 + b"\n")
    assert w.too_large
    w = ResponseWatcher(5, max_event_bytes=1000)
    w.feed(b"data: " + b"z" * 5000 + b"\n\n")  # a whole oversize event in one chunk
    assert w.too_large and w.held_bytes == 0


def test_events_under_the_bound_still_complete() -> None:
    w = ResponseWatcher(5, max_event_bytes=max(len(event(RESULT)), len(event(PROGRESS))))
    assert w.feed(event(PROGRESS) + event(RESULT)) and not w.too_large
