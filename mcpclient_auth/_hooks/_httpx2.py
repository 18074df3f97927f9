"""The httpx2 side of the hooks (mcp 2.x, fastmcp 4): the mixins subclassed with httpx2's classes.

httpx2 is a fork of httpx with distinct classes (not subclasses), so its client checks
``isinstance(response.stream, AsyncByteStream)`` against its own. Imported lazily (by
:func:`~.library.library_for` or the httpx2 client factory): stack A never needs httpx2.

    >>> import httpx2
    >>> from mcpclient_auth._hooks.library import library_for
    >>> library_for(httpx2.AsyncClient()) is LIBRARY
    True
"""

from __future__ import annotations

import functools

import httpx2

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


class RunAuth(AuthFlow, httpx2.Auth):  # type: ignore[override]  # properties for its flags
    """The ``auth=`` of factory-built httpx2 clients: the run's 401/403 handling (:mod:`.auth`)."""


class AsyncLocalAnswer(transports.AsyncLocalAnswer, httpx2.AsyncBaseTransport):
    """Wraps an httpx2 transport: answers refusals and final 401/403s locally; records failures."""


class SyncLocalAnswer(transports.SyncLocalAnswer, httpx2.BaseTransport):
    """The synchronous twin of :class:`AsyncLocalAnswer`."""


class AsyncHashingStream(streams.AsyncHashingStream, httpx2.AsyncByteStream):
    """``response.stream`` wrapper hashing the body as the client reads it."""


class SyncHashingStream(streams.SyncHashingStream, httpx2.SyncByteStream):
    """The synchronous twin of :class:`AsyncHashingStream`."""


LIBRARY = HttpLibrary(
    name="httpx2",
    async_client=httpx2.AsyncClient,
    sync_client=httpx2.Client,
    async_transport=AsyncLocalAnswer,
    sync_transport=SyncLocalAnswer,
    async_stream=AsyncHashingStream,
    sync_stream=SyncHashingStream,
    auth=RunAuth,
    response=httpx2.Response,
    default_timeout=functools.partial(httpx2.Timeout, 30.0, read=300.0),
)
