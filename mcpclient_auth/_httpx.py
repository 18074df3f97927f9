"""The httpx 0.28 side of the request-path hooks: the core's mixins bound to httpx's classes.

All decisions live in the library-neutral core (:mod:`.hooks`); :func:`~.hooks.bind_library` makes the
three library-bound classes (transport wrapper, hashing byte stream, local ``Response``). The names
below are the stack-A public ones (re-exported by :mod:`.factory`):

    >>> from mcpclient_auth.hooks import library_for
    >>> library_for(httpx.AsyncClient()) is LIBRARY
    True
"""

from __future__ import annotations

import httpx

from .hooks import bind_library

__all__ = [
    "LIBRARY",
    "HashingAsyncStream",
    "HashingSyncStream",
    "LocalAnswerTransport",
    "SyncLocalAnswerTransport",
]

LIBRARY = bind_library(httpx)

#: Wraps an httpx transport: answers refused requests locally; records network failures.
LocalAnswerTransport = LIBRARY.async_transport
SyncLocalAnswerTransport = LIBRARY.sync_transport
#: ``response.stream`` wrappers hashing the body as the client reads it.
HashingAsyncStream = LIBRARY.async_stream
HashingSyncStream = LIBRARY.sync_stream
