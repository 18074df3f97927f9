"""Transport side of the hooks: answer a refused request locally, record a failed send, and turn a
final 401/403 of the auth flow into a local JSON-RPC refusal.

:class:`AsyncLocalAnswer` / :class:`SyncLocalAnswer` are library-neutral mixins; each library's module
(:mod:`._httpx`, :mod:`._httpx2`) subclasses them with its own ``AsyncBaseTransport`` /
``BaseTransport``. :func:`wrap_transports` puts one around every transport of a client (the one walk
of ``client._transport`` / ``client._mounts``):

    wrap_transports(client, hooks)     # factory-built clients, and install(answer_locally=True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._journal import InFlight
from ..errors import ConfigurationError, McpClientAuthError
from .auth import read_capped, read_capped_sync, upstream_refusal
from .library import EXTENSION_INFLIGHT, EXTENSION_REFUSAL, error_code_for

if TYPE_CHECKING:
    from . import RunHooks

__all__ = ["AsyncLocalAnswer", "LocalRefusal", "SyncLocalAnswer", "wrap_transports"]


@dataclass(frozen=True, slots=True)
class LocalRefusal:
    """Marks a request that our transport must answer locally, without touching the network."""

    hooks: RunHooks
    body: bytes
    error: McpClientAuthError
    #: 200 with a JSON-RPC error for a request; 202 without a body for a refused notification or
    #: response (what a server answers to those: the MCP session goes on, nothing was sent).
    status: int = 200


def _refusal_for(request: Any, hooks: RunHooks) -> LocalRefusal | None:
    refusal = request.extensions.get(EXTENSION_REFUSAL)
    if isinstance(refusal, LocalRefusal) and refusal.hooks is hooks:
        return refusal
    return None


def _local_response(request: Any, refusal: LocalRefusal) -> Any:
    # Built with the request's own library: its client asserts the response stream's type.
    headers = {"x-mcpclient-auth-refusal": refusal.error.code}
    if refusal.body:
        headers["content-type"] = "application/json"
    library = refusal.hooks.library
    return library.response(refusal.status, headers=headers, content=refusal.body, request=request)


def _record_failure(request: Any, exc: BaseException) -> None:
    inflight = request.extensions.get(EXTENSION_INFLIGHT)
    if isinstance(inflight, InFlight) and not inflight.finished:
        inflight.run.journal.error(inflight, error_code_for(exc), type(exc).__name__)


class _TransportWrapper:
    def __init__(self, inner: Any, hooks: RunHooks) -> None:
        self.inner = inner
        #: Read by :meth:`RunHooks._answers_locally`: this transport answers for these hooks.
        self.mcpclient_auth_hooks = hooks


class AsyncLocalAnswer(_TransportWrapper):
    """Wraps a transport: answers refused requests locally; records network failures; a final
    401/403 of the auth flow becomes a local JSON-RPC refusal (:func:`.auth.upstream_refusal`) (async).

    :mod:`._httpx` / :mod:`._httpx2` subclass it with their library's ``AsyncBaseTransport``.
    """

    async def handle_async_request(self, request: Any) -> Any:
        refusal = _refusal_for(request, self.mcpclient_auth_hooks)
        if refusal is not None:
            return _local_response(request, refusal)
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            _record_failure(request, exc)
            raise
        final = upstream_refusal(request, response)
        if final is None:
            return response
        return final.respond(await read_capped(response))

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncLocalAnswer(_TransportWrapper):
    """The synchronous twin of :class:`AsyncLocalAnswer` (mixed into ``BaseTransport``)."""

    def handle_request(self, request: Any) -> Any:
        refusal = _refusal_for(request, self.mcpclient_auth_hooks)
        if refusal is not None:
            return _local_response(request, refusal)
        try:
            response = self.inner.handle_request(request)
        except BaseException as exc:
            _record_failure(request, exc)
            raise
        final = upstream_refusal(request, response)
        if final is None:
            return response
        return final.respond(read_capped_sync(response))

    def close(self) -> None:
        self.inner.close()


def wrap_transports(client: Any, hooks: RunHooks) -> None:
    """Wrap the client's default transport and every mounted one (proxies included) in this library's
    :class:`AsyncLocalAnswer` / :class:`SyncLocalAnswer`, and bind the hooks to the client.

    httpx and httpx2 keep them in ``_transport`` and ``_mounts`` (stable since httpx 0.24, pinned <1
    here); if that ever changes we refuse to promise local answers rather than let a refused request go
    out.
    """
    transport = getattr(client, "_transport", None)
    mounts = getattr(client, "_mounts", None)
    if transport is None or not isinstance(mounts, dict):
        raise ConfigurationError("this httpx version does not expose its transports; cannot answer locally")
    library = hooks.library
    make = library.async_transport if isinstance(client, library.async_client) else library.sync_transport
    client._transport = make(transport, hooks)
    for pattern, mounted in list(mounts.items()):
        if mounted is not None:
            mounts[pattern] = make(mounted, hooks)
    hooks.bind(client)
