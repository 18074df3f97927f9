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
"""

from __future__ import annotations

import json

__all__ = ["ResponseWatcher"]

_DATA = b"data"


class ResponseWatcher:
    """Incremental SSE parser that only looks for the response to one JSON-RPC request id."""

    __slots__ = ("_data", "_partial", "_pending_cr", "_request_id", "done")

    def __init__(self, request_id: str | int) -> None:
        self._request_id = request_id
        # The unterminated tail of the current line, kept as pieces: joining once per line keeps a
        # huge single-line event linear in its size.
        self._partial: list[bytes] = []
        self._pending_cr = False
        self._data: list[bytes] = []
        #: True once the response (``result`` or ``error``) for the request id has been seen.
        self.done = False

    def feed(self, chunk: bytes) -> bool:
        """Consume ``chunk``; True once the response event has been completely received."""
        if self.done or not chunk:
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
            line = chunk[start:end]
            if self._partial:
                self._partial.append(line)
                line = b"".join(self._partial)
                self._partial.clear()
            if self._line(line):
                self._partial.clear()
                self._data.clear()
                return True
            start = nxt
            # Search again only past what earlier searches covered, so a chunk is scanned once.
            if cr != -1 and cr < start:
                cr = chunk.find(b"\r", start)
            if lf != -1 and lf < start:
                lf = chunk.find(b"\n", start)
        if start < size:
            self._partial.append(chunk[start:])
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
        return False

    def _dispatch(self) -> bool:
        if not self._data:
            return False
        data = b"\n".join(self._data)
        self._data.clear()
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
