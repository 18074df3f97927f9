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

The watcher holds at most one event's ``data`` (plus the line being read). An event larger than
``max_event_bytes`` (default :data:`MAX_EVENT_BYTES`) is not held: the watcher drops what it has,
sets :attr:`ResponseWatcher.too_large` and stops looking. The response hook then writes the call's
``response`` entry at once with ``code: "event_too_large"``, and the call does not join the DAG — its
answer could not be inspected, so nothing may build on it as a completed call. (The MCP transport
reading the same stream keeps its own copy; bounding that is the transport's business.)
"""

from __future__ import annotations

import json

__all__ = ["MAX_EVENT_BYTES", "ResponseWatcher"]

_DATA = b"data"
#: The largest SSE event (its data lines plus the line in progress) a watcher holds, by default.
#: Read when a watcher is made, so an application can change it.
MAX_EVENT_BYTES = 16 * 1024 * 1024


class ResponseWatcher:
    """Incremental SSE parser that only looks for the response to one JSON-RPC request id."""

    __slots__ = (
        "_data",
        "_held",
        "_limit",
        "_partial",
        "_partial_bytes",
        "_pending_cr",
        "_request_id",
        "done",
        "too_large",
    )

    def __init__(self, request_id: str | int, *, max_event_bytes: int | None = None) -> None:
        self._request_id = request_id
        self._limit = MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes
        # The unterminated tail of the current line, kept as pieces: joining once per line keeps a
        # huge single-line event linear in its size.
        self._partial: list[bytes] = []
        self._partial_bytes = 0
        self._pending_cr = False
        self._data: list[bytes] = []
        self._held = 0  # bytes in _data
        #: True once the response (``result`` or ``error``) for the request id has been seen.
        self.done = False
        #: True once an event exceeded ``max_event_bytes``: the watcher dropped it and stopped.
        self.too_large = False

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
        if self.done or self.too_large or not chunk:
            return self.done
        chunk = bytes(chunk)
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
            if self._line(line):
                self._partial.clear()
                self._data.clear()
                self._held = 0
                return True
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
        """Process one line; True when it dispatched the response event."""
        if not line:
            return self._dispatch()
        name, colon, value = line.partition(b":")
        if name != _DATA:
            return False  # comments (":..."), event, id, retry: irrelevant here
        if colon and value.startswith(b" "):
            value = value[1:]
        self._data.append(value)
        self._held += len(value) + 1  # the LF that joins data lines
        return False

    def _dispatch(self) -> bool:
        if not self._data:
            return False
        data = b"\n".join(self._data)
        self._data.clear()
        self._held = 0
        # Cheap pre-filter: progress notifications and logs carry neither member.
        if b'"result"' not in data and b'"error"' not in data:
            return False
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            return False
        if not isinstance(message, dict) or "method" in message:
            return False
        if ("result" in message or "error" in message) and _same_id(message.get("id"), self._request_id):
            self.done = True
        return self.done


def _same_id(value: object, expected: str | int) -> bool:
    return type(value) is type(expected) and value == expected
