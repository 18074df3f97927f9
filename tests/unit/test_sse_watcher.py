"""sse.ResponseWatcher: completion of a JSON-RPC call inside a text/event-stream, chunk by chunk."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth.sse import ResponseScanner, ResponseWatcher


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


# --- the whole-lines fast path of feed() against the incremental path (issue #16) -------------------


class _Incremental(ResponseWatcher):
    """The watcher as it was before the fast path: every chunk through the incremental parser."""

    __slots__ = ()

    def feed(self, chunk: bytes) -> bool:
        if self.done or self.too_large or self.id_mismatch or not chunk:
            return self.done
        return self._feed_incremental(bytes(chunk))


class _IncrementalScanner(ResponseScanner):
    __slots__ = ()

    def feed(self, chunk: bytes) -> bool:
        if self.done or self.too_large or self.id_mismatch or not chunk:
            return self.done
        return self._feed_incremental(bytes(chunk))


_IDS = st.sampled_from([5, "5", 6, "x", None, 5.0, True, [5], {"a": 5}])
_MESSAGES = st.one_of(
    st.builds(lambda i: {"jsonrpc": "2.0", "id": i, "result": {"content": [{"text": "a\nb"}]}}, _IDS),
    st.builds(lambda i: {"jsonrpc": "2.0", "id": i, "error": {"code": -1, "message": "m"}}, _IDS),
    st.just(PROGRESS),
    st.builds(lambda i: {"jsonrpc": "2.0", "id": i, "method": "sampling/create", "result": 1}, _IDS),
    st.just([RESULT]),
)


@st.composite
def _lines(draw: st.DrawFn) -> list[str]:
    kind = draw(st.sampled_from(["event", "comment", "id", "noise", "blank", "type", "multiline", "retry"]))
    if kind == "event":
        text = json.dumps(draw(_MESSAGES))
        space = draw(st.sampled_from(["", " ", "  "]))
        return [f"data:{space}{text}", ""]
    if kind == "multiline":
        text = json.dumps(draw(_MESSAGES), indent=draw(st.sampled_from([None, 1])))
        return [f"data: {part}" for part in text.split("\n")] + [""]
    if kind == "comment":
        return [":" + draw(st.text(alphabet="ab: \t{}\"", max_size=8))]
    if kind == "id":
        return ["id:" + draw(st.sampled_from(["", " 7", " 8", "9", " a\0b", " é"]))]
    if kind == "type":
        return ["event:" + draw(st.sampled_from([" message", "message", " ping", " ", ""]))]
    if kind == "retry":
        return ["retry: 10"]
    if kind == "blank":
        return [""]
    return [draw(st.text(alphabet='data:{}"id 5\t', max_size=12))]


@st.composite
def _streams(draw: st.DrawFn) -> bytes:
    lines = [line for group in draw(st.lists(_lines(), max_size=10)) for line in group]
    out = []
    for line in lines:
        out.append(line + draw(st.sampled_from(["\n", "\r\n", "\r"])))
    return "".join(out).encode("utf-8")


def _state(w: ResponseWatcher) -> tuple[object, ...]:
    return (w.done, w.too_large, w.id_mismatch, w.last_event_id, w.answer, w.held_bytes)


def _same_run(raw: bytes, points: list[int], request_id: str | int, limit: int | None) -> None:
    chunks = [raw[a:b] for a, b in itertools.pairwise(points)]
    fast, slow = ResponseWatcher(request_id, max_event_bytes=limit), _Incremental(request_id, max_event_bytes=limit)
    for chunk in chunks:
        assert fast.feed(chunk) == slow.feed(chunk)
        assert _state(fast) == _state(slow)
    seen: tuple[list[object], list[object]] = ([], [])
    scanners = (
        ResponseScanner(lambda *a: seen[0].append(a), max_event_bytes=limit),
        _IncrementalScanner(lambda *a: seen[1].append(a), max_event_bytes=limit),
    )
    for chunk in chunks:
        assert scanners[0].feed(chunk) == scanners[1].feed(chunk)
        assert _state(scanners[0]) == _state(scanners[1])
    assert seen[0] == seen[1]


@settings(max_examples=1500, deadline=None)
@given(
    raw=_streams(),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
    request_id=st.sampled_from([5, "5"]),
    limit=st.sampled_from([None, 40, 120, 400]),
)
def test_the_fast_path_finds_what_the_incremental_path_finds(
    raw: bytes, cuts: list[int], request_id: str | int, limit: int | None
) -> None:
    points = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    _same_run(raw, points, request_id, limit)
    _same_run(raw, [0, len(raw)], request_id, limit)  # one chunk: the fast path when it ends in LF


@settings(max_examples=150, deadline=None)
@given(raw=_streams(), request_id=st.sampled_from([5, "5"]))
def test_the_fast_path_agrees_when_split_at_every_byte_and_every_pair(raw: bytes, request_id: str | int) -> None:
    _same_run(raw, list(range(len(raw) + 1)), request_id, None)
    for at in range(len(raw) + 1):
        _same_run(raw, [0, at, len(raw)], request_id, None)


def test_whole_line_chunks_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fallback(self: ResponseWatcher, chunk: bytes) -> bool:
        raise AssertionError("the incremental path ran")

    monkeypatch.setattr(ResponseWatcher, "_feed_incremental", no_fallback)
    stream = event(PROGRESS, "\r\n") + b": keepalive\r\n" + b"id: 3\r\n" + event(RESULT, "\r\n")
    w = ResponseWatcher(5)
    assert w.feed(stream) and w.answer == json.dumps(RESULT).encode() and w.last_event_id == "3"
    with pytest.raises(AssertionError):
        ResponseWatcher(5).feed(stream[:-1])  # a chunk ending in CR (or mid-line) is incremental


def _outcome(call: object) -> object:
    try:
        return ("ok", call())  # type: ignore[operator]
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc).__name__)


_JSONISH = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda b: b"{" + b, st.binary(max_size=40)),
    st.builds(lambda t: t.encode("utf-8", "surrogatepass"), st.text(max_size=30)),
    st.builds(
        lambda o, enc: json.dumps(o, ensure_ascii=False).encode(enc, "surrogatepass"),
        st.dictionaries(st.text(max_size=5), st.integers()),
        st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-8-sig"]),
    ),
    st.sampled_from(
        [b"{\x00", b'{"a":"\xed\xa0\x80"}', b'{"a":1} ', b'{"a":1}x', b"[" * 5000, b'{"a":NaN}', b"{\xff}"]
    ),
)


@settings(max_examples=3000, deadline=None)
@given(_JSONISH)
def test_the_answer_parser_is_json_loads(data: bytes) -> None:
    from mcpclient_auth import sse

    def ours() -> object:
        return sse._loads(data)

    def reference() -> object:
        return json.loads(data)

    assert repr(_outcome(ours)) == repr(_outcome(reference))
