"""The httpx 0.28 side of the hooks: the library-neutral mixins subclassed with httpx's classes.

The classes must subclass *httpx's* bases: its client checks ``isinstance(response.stream,
AsyncByteStream)`` against its own classes. Each has the name of the mixin it binds
(``_httpx.AsyncLocalAnswer`` is ``transports.AsyncLocalAnswer`` on ``httpx.AsyncBaseTransport``); the
auth flow is ``RunAuth`` on both libraries.

    >>> import httpx
    >>> from mcpclient_auth._hooks.library import library_for
    >>> library_for(httpx.AsyncClient()) is LIBRARY
    True
"""

from __future__ import annotations

import functools

import httpx

from . import streams, transports
from .auth import AuthFlow
from .library import HttpLibrary

__all__ = [
    "LIBRARY",
    "AsyncHashingStream",
    "AsyncLocalAnswer",
    "RunAuth",
    "SyncHashingStream",
    "SyncLocalAnswer",
]


class RunAuth(AuthFlow, httpx.Auth):  # type: ignore[override]  # properties for its flags
    """The ``auth=`` of factory-built httpx clients: the run's 401/403 handling (:mod:`.auth`)."""


class AsyncLocalAnswer(transports.AsyncLocalAnswer, httpx.AsyncBaseTransport):
    """Wraps an httpx transport: answers refusals and final 401/403s locally; records failures."""


class SyncLocalAnswer(transports.SyncLocalAnswer, httpx.BaseTransport):
    """The synchronous twin of :class:`AsyncLocalAnswer`."""


class AsyncHashingStream(streams.AsyncHashingStream, httpx.AsyncByteStream):
    """``response.stream`` wrapper hashing the body as the client reads it."""


class SyncHashingStream(streams.SyncHashingStream, httpx.SyncByteStream):
    """The synchronous twin of :class:`AsyncHashingStream`."""


LIBRARY = HttpLibrary(
    name="httpx",
    async_client=httpx.AsyncClient,
    sync_client=httpx.Client,
    async_transport=AsyncLocalAnswer,
    sync_transport=SyncLocalAnswer,
    async_stream=AsyncHashingStream,
    sync_stream=SyncHashingStream,
    auth=RunAuth,
    response=httpx.Response,
    default_timeout=functools.partial(httpx.Timeout, 30.0, read=300.0),
)
