"""The httpx 0.28 side of the hooks: the library-neutral mixins subclassed with httpx's classes.

The classes must subclass *httpx's* bases: its client checks ``isinstance(response.stream,
AsyncByteStream)`` against its own classes. :mod:`mcpclient_auth.factory` re-exports them.

    >>> import httpx
    >>> from mcpclient_auth._hooks.library import library_for
    >>> library_for(httpx.AsyncClient()) is LIBRARY
    True
"""

from __future__ import annotations

import functools

import httpx

from .auth import AuthFlow
from .library import HttpLibrary
from .streams import AsyncHashingStream, SyncHashingStream
from .transports import AsyncLocalAnswer, SyncLocalAnswer

__all__ = [
    "LIBRARY",
    "HashingAsyncStream",
    "HashingSyncStream",
    "LocalAnswerTransport",
    "RunAuth",
    "SyncLocalAnswerTransport",
]


class RunAuth(AuthFlow, httpx.Auth):  # type: ignore[override]  # properties for its flags
    """The ``auth=`` of factory-built httpx clients: the run's 401/403 handling (:mod:`.auth`)."""


class LocalAnswerTransport(AsyncLocalAnswer, httpx.AsyncBaseTransport):
    """Wraps an httpx transport: answers refusals and final 401/403s locally; records failures."""


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
    auth=RunAuth,
    response=httpx.Response,
    default_timeout=functools.partial(httpx.Timeout, 30.0, read=300.0),
)
