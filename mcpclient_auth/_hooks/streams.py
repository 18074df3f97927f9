"""Response side of the hooks: hash a response body as the client reads it, write its outcome once.

:class:`AsyncHashingStream` / :class:`SyncHashingStream` are library-neutral mixins; each library's
module (:mod:`._httpx`, :mod:`._httpx2`) subclasses them with its own ``AsyncByteStream`` /
``SyncByteStream`` (its client checks the stream's type against its own classes).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .._encoding import b64url_encode, sha256_b64url
from .._journal import InFlight, RunJournal, StreamKey
from ..endpoints import MetadataCollector
from ..sse import ResponseScanner, ResponseWatcher
from .library import error_code_for

__all__ = [
    "ANSWER_ID_MISMATCH",
    "AsyncHashingStream",
    "ResponseTracker",
    "ResumedCallTracker",
    "ResumedStreamTracker",
    "StreamObserver",
    "SyncHashingStream",
    "stream_key",
]


#: ``response`` code: the first JSON-RPC response on the call's stream (where the MCP client stops
#: reading it) carried another id, so the client never got this call's answer from it.
ANSWER_ID_MISMATCH = "answer_id_mismatch"


def stream_key(request: Any) -> StreamKey:
    """Where an answer to ``request`` may arrive: its URL without query, and its MCP session id."""
    raw = request.url
    path = raw.raw_path.decode("ascii").partition("?")[0]
    return f"{raw.scheme}://{raw.netloc.decode('ascii')}{path}", request.headers.get("mcp-session-id")


class ResponseTracker:
    """Hashes a response body as it streams and writes the call's outcome exactly once.

    The hashing streams call ``feed(chunk)`` per chunk, then one of the events ``on_eof()`` (read to
    the end), ``on_close()`` (closed, maybe early) or ``on_error(exc)``; later events are no-ops.

    An SSE answer (``watcher`` set) with a ``stream`` key is also filed with the journal, so that its
    answer is recognised on a resumed GET if this stream ends without it (SEP-1699).
    """

    __slots__ = ("_bytes", "_hash", "_inflight", "_resumable", "_status", "_stream", "_watcher")

    def __init__(
        self,
        inflight: InFlight,
        status: int,
        watcher: ResponseWatcher | None,
        stream: StreamKey | None = None,
    ) -> None:
        self._inflight = inflight
        self._status = status
        self._watcher = watcher
        self._hash = hashlib.sha256()
        self._bytes = 0
        self._stream = stream
        self._resumable = watcher is not None and stream is not None and 200 <= status < 300
        if self._resumable:
            assert stream is not None
            inflight.run.journal.expect_answer(inflight, stream)

    def feed(self, chunk: bytes) -> None:
        if self._inflight.finished:
            return
        self._hash.update(chunk)
        self._bytes += len(chunk)
        # An SSE answer completes when its JSON-RPC response event has arrived, which can be before
        # the stream ends: the transport may hand the result to the agent and stop reading. Writing
        # the entry (and extending the frontier) here, before the chunk is passed on, means the next
        # call the agent makes already sees this one as its predecessor.
        watcher = self._watcher
        if watcher is not None and watcher.feed(chunk):
            self._finish(completed=True)
        elif watcher is not None and watcher.too_large:
            # An event too large to inspect (sse.MAX_EVENT_BYTES): recorded now, and the call does
            # not join the DAG — nothing may build on an answer nobody could check.
            self._finish(completed=False, code="event_too_large")
        elif watcher is not None and watcher.id_mismatch:
            # The first response on the stream had another id: the MCP client stops there (mcp 1.x
            # drops it, 2.x hands it over as this call's result); whatever follows never reaches it.
            self._finish(completed=False, code=ANSWER_ID_MISMATCH)

    def on_eof(self) -> None:
        # JSON (or any non-SSE) body read to the end: complete. An SSE stream that ended without the
        # response event: see _unanswered.
        if self._watcher is None:
            self._finish(completed=True)
        else:
            self._unanswered()

    def on_close(self) -> None:
        if self._watcher is None:
            self._finish(completed=False)
        else:
            self._unanswered()

    def _unanswered(self) -> None:
        """The SSE stream ended without the call's answer.

        After an event with an id the client may resume (GET + ``Last-Event-ID``): the call stays in
        flight, filed with the journal, and its ``response`` entry is written when the answer
        arrives on the resumed stream — or an ``incomplete`` error when the run closes first.
        Without an id nobody can resume: the entry is written now, ``code: response_missing``, and
        the call does not join the DAG.
        """
        if self._inflight.finished or self._watcher is None or self._may_resume():
            return
        self._finish(completed=False, code="response_missing")

    def on_error(self, exc: BaseException) -> None:
        if self._inflight.finished or self._may_resume():
            return  # a broken stream after an event id is resumed like a closed one (SEP-1699)
        self._inflight.run.journal.error(self._inflight, error_code_for(exc), type(exc).__name__)

    def _may_resume(self) -> bool:
        """May the client resume this stream? If so, file the call under its last event id (the
        ``Last-Event-ID`` of the GET that resumes it) and leave it in flight."""
        watcher = self._watcher
        if not (
            self._resumable
            and watcher is not None
            and watcher.last_event_id is not None
            and not watcher.too_large
            and not watcher.id_mismatch
        ):
            return False
        assert self._stream is not None and watcher.last_event_id is not None
        self._inflight.run.journal.resume_from(self._inflight, self._stream, watcher.last_event_id)
        return True

    def _finish(self, *, completed: bool, code: str | None = None) -> None:
        if self._inflight.finished:
            return
        self._inflight.run.journal.response(
            self._inflight,
            status=self._status,
            out_hash=b64url_encode(self._hash.digest()),
            nbytes=self._bytes,
            completed=completed,
            code=code,
        )


class ResumedStreamTracker:
    """Reads a listening GET stream (no ``Last-Event-ID``) of a run's endpoint for answers to calls
    still in flight (SEP-1699); the client routes each response there by its id.

    Every JSON-RPC response on the stream whose id names a call the journal awaits on the same
    endpoint and MCP session is that call's answer: its ``response`` entry is written at once (before
    the chunk reaches the MCP client, so the next call already builds on it) with ``resumed: true``,
    and ``out_hash`` / ``bytes`` of the JSON-RPC response message. Nothing else on the stream is
    recorded; the stream ending is not an outcome of any call.
    """

    __slots__ = ("_journal", "_scanner", "_status", "_stream")

    def __init__(self, journal: RunJournal, stream: StreamKey, status: int) -> None:
        self._journal = journal
        self._stream = stream
        self._status = status
        self._scanner = ResponseScanner(self._answer)

    def feed(self, chunk: bytes) -> None:
        self._scanner.feed(chunk)

    def on_eof(self) -> None:
        """Nothing to write: a GET stream is no call."""

    def on_close(self) -> None:
        """Nothing to write: a GET stream is no call."""

    def on_error(self, exc: BaseException) -> None:
        """Nothing to write: calls still awaited stay in flight (``incomplete`` at the run's close)."""

    def _answer(self, request_id: str | int, data: bytes, event_id: str | None) -> None:
        inflight = self._journal.awaited(self._stream, request_id)
        if inflight is None:
            return
        self._journal.response(
            inflight,
            status=self._status,
            out_hash=sha256_b64url(data),
            nbytes=len(data),
            completed=True,
            resumed=True,
        )


class ResumedCallTracker:
    """Reads a GET with ``Last-Event-ID`` that resumes one call's stream (SEP-1699).

    The call is the one whose stream ended after that event id (:meth:`RunJournal.resume_from`), not
    whichever call the id of a message on the wire names: the MCP client takes the *first* response on
    this stream as the resumed call's answer and rewrites its id to the call's. So the first response
    is recorded for this call — ``resumed: true``, ``out_hash`` / ``bytes`` of that JSON-RPC message —
    as its answer when its id is the call's, else with ``code: "answer_id_mismatch"`` (the call does
    not join the DAG, and no other call is credited with it). A stream that ends before any response
    leaves the call in flight, filed under this stream's last event id too (the client resumes again).
    """

    __slots__ = ("_bytes", "_hash", "_inflight", "_status", "_stream", "_watcher")

    def __init__(self, inflight: InFlight, stream: StreamKey, status: int, watcher: ResponseWatcher) -> None:
        self._bytes = 0
        self._inflight = inflight
        self._stream = stream
        self._status = status
        self._watcher = watcher
        self._hash = hashlib.sha256()  # of the whole stream: only for an event too large to inspect

    def feed(self, chunk: bytes) -> None:
        if self._inflight.finished:
            return
        self._hash.update(chunk)
        self._bytes += len(chunk)
        watcher = self._watcher
        if watcher.feed(chunk) or watcher.id_mismatch:
            answer = watcher.answer or b""
            self._inflight.run.journal.response(
                self._inflight,
                status=self._status,
                out_hash=sha256_b64url(answer),
                nbytes=len(answer),
                completed=watcher.done,
                code=None if watcher.done else ANSWER_ID_MISMATCH,
                resumed=True,
            )
        elif watcher.too_large:
            self._inflight.run.journal.response(
                self._inflight,
                status=self._status,
                out_hash=b64url_encode(self._hash.digest()),
                nbytes=self._bytes,
                completed=False,
                code="event_too_large",
                resumed=True,
            )

    def on_eof(self) -> None:
        self._ended()

    def on_close(self) -> None:
        self._ended()

    def on_error(self, exc: BaseException) -> None:
        self._ended()

    def _ended(self) -> None:
        """No answer yet: the call stays in flight (``incomplete`` if the run closes first)."""
        event_id = self._watcher.last_event_id
        if not self._inflight.finished and event_id is not None and not self._watcher.too_large:
            self._inflight.run.journal.resume_from(self._inflight, self._stream, event_id)


#: What a hashing stream reports to: a call's tracker, a resumed stream's, or a metadata collector.
StreamObserver = ResponseTracker | ResumedStreamTracker | ResumedCallTracker | MetadataCollector


class _StreamWrapper:
    """What both hashing streams share: the inner stream, the tracker, and ``elapsed``.

    httpx2's ``Response.elapsed`` reads ``response.stream.elapsed`` (httpx 0.28 sets it on the response
    instead), so a wrapper must pass the inner stream's value through or ``elapsed`` raises after close.
    """

    def __init__(self, inner: Any, tracker: StreamObserver) -> None:
        self._inner = inner
        self._tracker = tracker

    @property
    def elapsed(self) -> datetime.timedelta | None:
        return getattr(self._inner, "elapsed", None)


class AsyncHashingStream(_StreamWrapper):
    """Wraps ``response.stream``, hashing the body as the client reads it (mixed into each library's
    ``AsyncByteStream`` in :mod:`._httpx` / :mod:`._httpx2`)."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _HashingIterator(self._inner, self._tracker)

    async def aclose(self) -> None:
        # mcp 2.x closes an SSE response right after the answer event, without exhausting it: the
        # outcome must be written here (idempotently), not only at end-of-iteration.
        try:
            await self._inner.aclose()
        finally:
            self._tracker.on_close()


class _HashingIterator:
    """One pass over the inner stream, reporting each chunk, the end or a failure to the tracker.

    An iterator class, not an async generator: the MCP client stops reading an SSE answer early, and
    an async generator left suspended is finalised by the event loop with a task of its own (plus a
    weak-set entry when it starts) — per call. What it reports is what the generator reported: every
    chunk is fed before it is handed on; reading to the end reports ``on_eof()`` once; any exception
    from the inner stream or the tracker (cancellation included) reports ``on_error(exc)`` and is
    re-raised; a consumer that stops early reports nothing (``aclose()`` of the stream decides).
    """

    __slots__ = ("_ended", "_inner", "_source", "_tracker")

    def __init__(self, source: Any, tracker: StreamObserver) -> None:
        self._source = source  # the inner stream; iterated from the first __anext__, inside the try
        self._inner: AsyncIterator[bytes] | None = None
        self._tracker = tracker
        self._ended = False

    def __aiter__(self) -> _HashingIterator:
        return self

    async def __anext__(self) -> bytes:
        if self._ended:
            raise StopAsyncIteration
        try:
            inner = self._inner
            if inner is None:
                inner = self._inner = self._source.__aiter__()
            chunk = await inner.__anext__()
        except StopAsyncIteration:
            self._ended = True
            self._tracker.on_eof()
            raise
        except GeneratorExit:  # as the generator this replaced: not a failure (on_close() decides)
            self._ended = True
            raise
        except BaseException as exc:
            self._ended = True
            self._tracker.on_error(exc)
            raise
        # The tracker's own failure is never the stream's end: apart from the inner read, so a
        # StopAsyncIteration raised by it cannot pass for a clean (truncated) end of the body.
        try:
            self._tracker.feed(chunk)
        except GeneratorExit:
            self._ended = True
            raise
        except BaseException as exc:
            self._ended = True
            self._tracker.on_error(exc)
            if isinstance(exc, StopAsyncIteration):  # what an async generator turned it into
                raise RuntimeError("async generator raised StopAsyncIteration") from exc
            raise
        return chunk

    async def aclose(self) -> None:
        """The consumer stopped reading (what closing the generator did): nothing to report."""
        self._ended = True


class SyncHashingStream(_StreamWrapper):
    """The synchronous twin of :class:`AsyncHashingStream` (mixed into ``SyncByteStream``)."""

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._tracker.feed(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._tracker.on_error(exc)
            raise
        self._tracker.on_eof()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._tracker.on_close()
