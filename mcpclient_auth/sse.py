"""Spot the JSON-RPC response in a ``text/event-stream`` as its bytes stream past (pure: no I/O).

The response hook hashes a streamed MCP answer chunk by chunk, without buffering it for the caller.
It also needs to know *when the call completed* — the moment the event carrying the JSON-RPC
response for this request id has fully arrived — because the MCP transport may stop reading (and
hand the result to the agent) before the server closes the stream. :class:`ResponseWatcher` follows
the SSE framing (WHATWG "event stream interpretation": lines end in CRLF, LF or CR; a blank line
dispatches the event; ``data:`` lines are joined with LF) and reports that moment:

    >>> w = ResponseWatcher(3)
    >>> w.feed(b'event: message\\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\\n\\n')
    False
    >>> w.feed(b'data: {"jsonrpc":"2.0","id":3,"result":{}}\\n')
    False
    >>> w.feed(b"\\n")
    True

Like the MCP client reading the same stream (mcp 1.x and 2.x), the watcher takes the *first*
JSON-RPC response of a ``message`` event as the end of the stream: if that response carries another
id than the request's, the client never gets this request's answer from the stream (mcp 1.x drops
the stranger, mcp 2.x rewrites its id and hands it over as the result), so the watcher sets
:attr:`ResponseWatcher.id_mismatch`, keeps that message in :attr:`ResponseWatcher.answer` and looks
no further — a later response with the right id is never the answer:

    >>> w = ResponseWatcher(3)
    >>> w.feed(b'data: {"jsonrpc":"2.0","id":9,"result":{}}\\n\\n'
    ...        b'data: {"jsonrpc":"2.0","id":3,"result":{}}\\n\\n')
    False
    >>> w.id_mismatch, w.done
    (True, False)

Events of another type than ``message`` (an ``event:`` field) are ignored, as the client ignores them.

The watcher holds at most one event's ``data`` (plus the line being read). An event larger than
``max_event_bytes`` (default :data:`MAX_EVENT_BYTES`) is not held: the watcher drops what it has,
sets :attr:`ResponseWatcher.too_large` and stops looking. The response hook then writes the call's
``response`` entry at once with ``code: "event_too_large"``, and the call does not join the DAG — its
answer could not be inspected, so nothing may build on it as a completed call. (The MCP transport
reading the same stream keeps its own copy; bounding that is the transport's business.)

SSE resumption (SEP-1699): a server may end the POST stream after a *priming* event (an ``id:`` and
no message) and deliver the answer on a ``GET`` the client sends with ``Last-Event-ID``. The watcher
keeps the stream's last event id (:attr:`ResponseWatcher.last_event_id`: set means the client can
resume) and the answer's own bytes (:attr:`ResponseWatcher.answer`: the event's data, the JSON-RPC
message). A GET with ``Last-Event-ID`` resumes *one* call's stream, and the client takes its first
response as that call's answer whatever id it carries (mcp rewrites it): it is read with a
:class:`ResponseWatcher` for that call. :class:`ResponseScanner` reads a plain listening GET stream
(no ``Last-Event-ID``), where the client routes every response by its id, and reports each one:

    >>> seen = []
    >>> scanner = ResponseScanner(lambda rid, data, eid: seen.append((rid, eid)))
    >>> scanner.feed(b'id: 7\\ndata: {"jsonrpc":"2.0","id":3,"result":{}}\\n\\n')
    False
    >>> seen
    [(3, '7')]
"""

from __future__ import annotations

import json
from collections.abc import Callable

__all__ = ["MAX_EVENT_BYTES", "ResponseScanner", "ResponseWatcher"]

_DATA = b"data"
_ID = b"id"
_EVENT = b"event"
_MESSAGE = b"message"
#: The largest SSE event (its data lines plus the line in progress) a watcher holds, by default.
#: Read when a watcher is made, so an application can change it.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class ResponseWatcher:
    """Incremental SSE parser that only looks for the response to one JSON-RPC request id."""

    __slots__ = (
        "_data",
        "_event",
        "_held",
        "_limit",
        "_partial",
        "_partial_bytes",
        "_pending_cr",
        "_request_id",
        "answer",
        "done",
        "id_mismatch",
        "last_event_id",
        "too_large",
    )

    def __init__(self, request_id: str | int | None, *, max_event_bytes: int | None = None) -> None:
        self._request_id = request_id
        self._limit = MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes
        # The unterminated tail of the current line, kept as pieces: joining once per line keeps a
        # huge single-line event linear in its size.
        self._partial: list[bytes] = []
        self._partial_bytes = 0
        self._pending_cr = False
        self._data: list[bytes] = []
        self._held = 0  # bytes in _data
        self._event: bytes | None = None  # the current event's type (None: "message")
        #: True once the response (``result`` or ``error``) for the request id has been seen.
        self.done = False
        #: True once an event exceeded ``max_event_bytes``: the watcher dropped it and stopped.
        self.too_large = False
        #: True once the first response on the stream carried another id: the watcher stopped there
        #: (:attr:`answer` holds that message), as the MCP client does.
        self.id_mismatch = False
        #: The last ``id:`` the stream sent (what a client resumes from with ``Last-Event-ID``).
        self.last_event_id: str | None = None
        #: The data of the response event (the JSON-RPC response message), once :attr:`done`.
        self.answer: bytes | None = None

    @property
    def held_bytes(self) -> int:
        """Bytes the watcher holds right now (never more than ``max_event_bytes``)."""
        return self._held + self._partial_bytes

    def _overflow(self) -> bool:
        self._partial.clear()
        self._data.clear()
        self._held = self._partial_bytes = 0
        self.too_large = True
        return False

    def feed(self, chunk: bytes) -> bool:
        """Consume ``chunk``; True once the response event has been completely received."""
        if self.done or self.too_large or self.id_mismatch or not chunk:
            return self.done
        chunk = bytes(chunk)
        if (
            chunk[-1] == 0x0A
            and not self._partial
            and not self._pending_cr
            and self._held + len(chunk) <= self._limit
        ):
            # The usual chunk: whole lines (ends in LF, so no line and no CRLF continues in the next
            # chunk), nothing carried over, too small to overflow (a line adds at most its own length
            # to what is held). bytes.splitlines breaks at exactly CRLF, LF and CR, in one C pass.
            # Everything else takes the incremental path below; a differential test holds the two
            # to the same events, ids, answers and flags (tests/unit/test_sse_watcher.py).
            for line in chunk.splitlines():
                if self._line(line):  # the first response: nothing after it is looked at
                    self._data.clear()
                    self._held = 0
                    return self.done
            return False
        return self._feed_incremental(chunk)

    def _feed_incremental(self, chunk: bytes) -> bool:
        """The general path of :meth:`feed`: lines split across chunks, CR/LF across a chunk
        boundary, and the ``max_event_bytes`` bound checked before any line is copied."""
        size = len(chunk)
        start = 0
        if self._pending_cr:
            # The previous chunk ended in CR: an LF right here belongs to that CRLF.
            self._pending_cr = False
            if chunk[0] == 0x0A:
                start = 1
        cr = chunk.find(b"\r", start)
        lf = chunk.find(b"\n", start)
        while cr != -1 or lf != -1:
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            elif cr + 1 == size:
                end, nxt = cr, size
                self._pending_cr = True
            else:
                end, nxt = cr, (cr + 2 if chunk[cr + 1] == 0x0A else cr + 1)
            if self._held + self._partial_bytes + (end - start) > self._limit:
                return self._overflow()  # checked before slicing: an oversize line is never copied
            line = chunk[start:end]
            if self._partial:
                self._partial.append(line)
                line = b"".join(self._partial)
                self._partial.clear()
                self._partial_bytes = 0
            if self._line(line):  # the first response: nothing after it is looked at
                self._partial.clear()
                self._data.clear()
                self._held = 0
                return self.done
            start = nxt
            # Search again only past what earlier searches covered, so a chunk is scanned once.
            if cr != -1 and cr < start:
                cr = chunk.find(b"\r", start)
            if lf != -1 and lf < start:
                lf = chunk.find(b"\n", start)
        if start < size:
            if self._held + self._partial_bytes + (size - start) > self._limit:
                return self._overflow()
            self._partial.append(chunk[start:])
            self._partial_bytes += size - start
        return False

    def _line(self, line: bytes) -> bool:
        """Process one line; True when it dispatched the stream's first response event."""
        if not line:
            return self._dispatch()
        name, colon, value = line.partition(b":")
        if name != _DATA:
            if name == _EVENT:
                self._event = value[1:] if colon and value.startswith(b" ") else value
            if name == _ID:
                if colon and value.startswith(b" "):
                    value = value[1:]
                if b"\0" not in value:  # WHATWG: an id with NULL is ignored
                    self.last_event_id = value.decode("utf-8", "replace")
            return False  # comments (":..."), event, retry: irrelevant here
        if colon and value.startswith(b" "):
            value = value[1:]
        self._data.append(value)
        self._held += len(value) + 1  # the LF that joins data lines
        return False

    def _dispatch(self) -> bool:
        event, self._event = self._event, None
        if not self._data:
            return False
        data = b"\n".join(self._data)
        self._data.clear()
        self._held = 0
        if event and event != _MESSAGE:
            return False  # the MCP client ignores events of other types (only logs them)
        # Cheap pre-filter: progress notifications and logs carry neither member.
        if b'"result"' not in data and b'"error"' not in data:
            return False
        try:
            message = _loads(data)
        except (ValueError, RecursionError):
            return False
        if not isinstance(message, dict) or "method" in message:
            return False
        if "result" in message or "error" in message:
            return self._response(message.get("id"), data)
        return False

    def _response(self, message_id: object, data: bytes) -> bool:
        """The stream's first response: the request's answer, or (another id) no answer at all."""
        self.answer = data
        if self._request_id is not None and _same_id(message_id, self._request_id):
            self.done = True
        else:
            self.id_mismatch = True
        return True


class ResponseScanner(ResponseWatcher):
    """Reports every JSON-RPC response on a stream (a resumed ``GET``), never stops by itself.

    ``on_response(request_id, data, event_id)`` is called when a response event has fully arrived,
    with the message's ``id`` (``str`` or ``int``), its data bytes and the stream's last event id.
    Events larger than ``max_event_bytes`` stop the scanner (:attr:`too_large`), as they stop a
    :class:`ResponseWatcher`.
    """

    __slots__ = ("_on_response",)

    def __init__(
        self,
        on_response: Callable[[str | int, bytes, str | None], None],
        *,
        max_event_bytes: int | None = None,
    ) -> None:
        super().__init__(None, max_event_bytes=max_event_bytes)
        self._on_response = on_response

    def _response(self, message_id: object, data: bytes) -> bool:
        if type(message_id) is int or type(message_id) is str:
            self._on_response(message_id, data, self.last_event_id)
        return False


_DECODER = json.JSONDecoder()  # json.loads' default decoder settings


def _loads(data: bytes) -> object:
    """``json.loads(data)``, without its encoding sniffing for the usual message: one that starts
    with ``{`` and a non-NUL byte is UTF-8 to ``json.detect_encoding`` (no BOM, no UTF-16/32 NUL
    pattern), which ``json.loads`` then decodes with ``surrogatepass``, exactly as here."""
    if len(data) > 1 and data[0] == 0x7B and data[1] != 0:
        return _DECODER.decode(data.decode("utf-8", "surrogatepass"))
    return json.loads(data)


def _same_id(value: object, expected: str | int) -> bool:
    return type(value) is type(expected) and value == expected
