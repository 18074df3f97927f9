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

from .._encoding import b64url_encode
from .._journal import InFlight
from ..endpoints import MetadataCollector
from ..sse import ResponseWatcher
from .library import error_code_for

__all__ = ["AsyncHashingStream", "ResponseTracker", "StreamObserver", "SyncHashingStream"]


class ResponseTracker:
    """Hashes a response body as it streams and writes the call's outcome exactly once.

    The hashing streams call ``feed(chunk)`` per chunk, then one of the events ``on_eof()`` (read to
    the end), ``on_close()`` (closed, maybe early) or ``on_error(exc)``; later events are no-ops.
    """

    __slots__ = ("_bytes", "_hash", "_inflight", "_status", "_watcher")

    def __init__(self, inflight: InFlight, status: int, watcher: ResponseWatcher | None) -> None:
        self._inflight = inflight
        self._status = status
        self._watcher = watcher
        self._hash = hashlib.sha256()
        self._bytes = 0

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

    def on_eof(self) -> None:
        # JSON (or any non-SSE) body read to the end: complete. An SSE stream that ended without the
        # response event: recorded, but the call does not join the frontier.
        self._finish(completed=self._watcher is None)

    def on_close(self) -> None:
        self._finish(completed=False)

    def on_error(self, exc: BaseException) -> None:
        if not self._inflight.finished:
            self._inflight.run.journal.error(self._inflight, error_code_for(exc), type(exc).__name__)

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


#: What a hashing stream reports to: a call's tracker, or a metadata collector.
StreamObserver = ResponseTracker | MetadataCollector


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
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._tracker.feed(chunk)
                yield chunk
        except GeneratorExit:  # the consumer stopped reading: not a failure (on_close() decides)
            raise
        except BaseException as exc:
            self._tracker.on_error(exc)
            raise
        self._tracker.on_eof()

    async def aclose(self) -> None:
        # mcp 2.x closes an SSE response right after the answer event, without exhausting it: the
        # outcome must be written here (idempotently), not only at end-of-iteration.
        try:
            await self._inner.aclose()
        finally:
            self._tracker.on_close()


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
