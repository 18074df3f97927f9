"""The HTTP libraries the hooks bind to (httpx, httpx2), and the request-extension keys they share.

An :class:`HttpLibrary` names the few classes of one library that must be instances of the
*request's* library — the transport wrapper, the hashing byte stream, the local ``Response``. Each is
an ordinary subclass written out in :mod:`._httpx` / :mod:`._httpx2` (httpx2 is imported only when
used):

    library_for(client)          # -> the HttpLibrary of an httpx or httpx2 client/request/response
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .streams import AsyncHashingStream, SyncHashingStream
    from .transports import AsyncLocalAnswer, SyncLocalAnswer

__all__ = [
    "EXTENSION_ATTEMPT",
    "EXTENSION_INFLIGHT",
    "EXTENSION_REFUSAL",
    "HttpLibrary",
    "error_code_for",
    "is_http_error",
    "library_for",
    "library_named",
]

#: ``request.extensions`` keys the hooks set (and remove before a redirect leaves).
EXTENSION_INFLIGHT = "mcpclient_auth.inflight"
EXTENSION_REFUSAL = "mcpclient_auth.refusal"
#: The 401/403 state of one request (``auth.Attempt``), set by the auth flow for all its sends.
EXTENSION_ATTEMPT = "mcpclient_auth.attempt"
EXTENSION_STAMP = "mcpclient_auth.stamp"
EXTENSION_LEARN = "mcpclient_auth.learn_metadata"
EXTENSION_REFUSED = "mcpclient_auth.out_of_scope"
#: A signed GET of a run's endpoint: its journal and stream key (an answer may be resumed on it).
EXTENSION_STREAM = "mcpclient_auth.stream"
OUR_EXTENSIONS = (
    EXTENSION_STREAM,
    EXTENSION_INFLIGHT,
    EXTENSION_REFUSAL,
    EXTENSION_STAMP,
    EXTENSION_LEARN,
    EXTENSION_REFUSED,
)
#: Top-level module name of a client/request/response class -> the module holding its HttpLibrary.
_LIBRARY_MODULES = {"httpx": "mcpclient_auth._hooks._httpx", "httpx2": "mcpclient_auth._hooks._httpx2"}


#: Exception class names shared by httpx and httpx2 (distinct, unrelated hierarchies) -> ledger code.
#: The first match along the exception's MRO wins, so ``ReadTimeout`` is a timeout, not a transport error.
_ERROR_CODES = {"TimeoutException": "timeout", "TransportError": "transport_error"}


def error_code_for(exc: BaseException) -> str:
    """The ledger ``error`` code of a failed request or response stream (httpx or httpx2)."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    for cls in type(exc).__mro__:
        if cls.__module__.partition(".")[0] in _LIBRARY_MODULES and cls.__name__ in _ERROR_CODES:
            return _ERROR_CODES[cls.__name__]
    return "stream_error"


@dataclass(frozen=True, slots=True)
class HttpLibrary:
    """The classes of one HTTP library (httpx or httpx2) that the library-neutral core needs.

    One per library, in :mod:`._httpx` / :mod:`._httpx2`; look one up with :func:`library_for`.
    """

    name: str
    async_client: type[Any]
    sync_client: type[Any]
    #: ``(inner, hooks)``: a transport of this library answering refusals locally
    async_transport: type[AsyncLocalAnswer]
    sync_transport: type[SyncLocalAnswer]
    #: ``(inner, tracker)``: a byte stream of this library hashing what passes
    async_stream: type[AsyncHashingStream]
    sync_stream: type[SyncHashingStream]
    #: ``auth.AuthFlow`` bound to this library's ``Auth`` (``(inner=None)``)
    auth: type[Any]
    #: ``(status, headers=..., content=..., request=...)`` of this library
    response: Callable[..., Any]
    #: ``() -> Timeout``: mcp's defaults (30 s, 300 s for reads) as this library's Timeout
    default_timeout: Callable[[], Any]


def is_http_error(exc: BaseException) -> bool:
    """True for an ``HTTPError`` of httpx or httpx2 (distinct, unrelated hierarchies)."""
    return any(
        cls.__name__ == "HTTPError" and cls.__module__.partition(".")[0] in _LIBRARY_MODULES
        for cls in type(exc).__mro__
    )


def library_named(name: str) -> HttpLibrary:
    """The :class:`HttpLibrary` for ``"httpx"`` or ``"httpx2"`` (imports that adapter on first use)."""
    module = _LIBRARY_MODULES.get(name)
    if module is None:
        raise ConfigurationError(f"unsupported HTTP library {name!r} (supported: httpx, httpx2)")
    library: HttpLibrary = importlib.import_module(module).LIBRARY
    return library


def library_for(obj: Any) -> HttpLibrary:
    """The :class:`HttpLibrary` an httpx/httpx2 object (client, request, response...) belongs to.

    Dispatches on the class's top-level module: httpx2 classes are not subclasses of httpx ones.
    """
    return library_named(type(obj).__module__.partition(".")[0])
