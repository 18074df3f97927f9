"""The httpx 0.28 side of the hooks: the library-neutral mixins subclassed with httpx's classes.

The classes must subclass *httpx's* bases: its client checks ``isinstance(response.stream,
AsyncByteStream)`` against its own classes. :mod:`mcpclient_auth.factory` re-exports them.

    >>> import httpx
    >>> from mcpclient_auth.hooks.library import library_for
    >>> library_for(httpx.AsyncClient()) is LIBRARY
    True
"""

from __future__ import annotations

import functools

import httpx

from .library import HttpLibrary
from .streams import AsyncHashingStream, SyncHashingStream
from .transports import AsyncLocalAnswer, SyncLocalAnswer

__all__ = [
    "LIBRARY",
    "HashingAsyncStream",
    "HashingSyncStream",
    "LocalAnswerTransport",
    "SyncLocalAnswerTransport",
]


class LocalAnswerTransport(AsyncLocalAnswer, httpx.AsyncBaseTransport):
    """Wraps an httpx transport: answers refused requests locally; records network failures."""


class SyncLocalAnswerTransport(SyncLocalAnswer, httpx.BaseTransport):
    """The synchronous twin of :class:`LocalAnswerTransport`."""


class HashingAsyncStream(AsyncHashingStream, httpx.AsyncByteStream):
    """``response.stream`` wrapper hashing the body as the client reads it."""


class HashingSyncStream(SyncHashingStream, httpx.SyncByteStream):
    """The synchronous twin of :class:`HashingAsyncStream`."""


LIBRARY = HttpLibrary(
    name="httpx",
    async_client=httpx.AsyncClient,
    sync_client=httpx.Client,
    async_transport=LocalAnswerTransport,
    sync_transport=SyncLocalAnswerTransport,
    async_stream=HashingAsyncStream,
    sync_stream=HashingSyncStream,
    response=httpx.Response,
    default_timeout=functools.partial(httpx.Timeout, 30.0, read=300.0),
)
