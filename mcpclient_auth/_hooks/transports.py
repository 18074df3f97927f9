"""Transport side of the hooks: answer a refused request locally, record a failed send.

:class:`AsyncLocalAnswer` / :class:`SyncLocalAnswer` are library-neutral mixins; each library's module
(:mod:`._httpx`, :mod:`._httpx2`) subclasses them with its own ``AsyncBaseTransport`` /
``BaseTransport``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._journal import InFlight
from ..errors import McpClientAuthError
from .library import EXTENSION_INFLIGHT, EXTENSION_REFUSAL, error_code_for

if TYPE_CHECKING:
    from . import RunHooks

__all__ = ["AsyncLocalAnswer", "LocalRefusal", "SyncLocalAnswer"]


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
    """Wraps a transport: answers refused requests locally; records network failures (async).

    :mod:`._httpx` / :mod:`._httpx2` subclass it with their library's ``AsyncBaseTransport``.
    """

    async def handle_async_request(self, request: Any) -> Any:
        refusal = _refusal_for(request, self.mcpclient_auth_hooks)
        if refusal is not None:
            return _local_response(request, refusal)
        try:
            return await self.inner.handle_async_request(request)
        except BaseException as exc:
            _record_failure(request, exc)
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncLocalAnswer(_TransportWrapper):
    """The synchronous twin of :class:`AsyncLocalAnswer` (mixed into ``BaseTransport``)."""

    def handle_request(self, request: Any) -> Any:
        refusal = _refusal_for(request, self.mcpclient_auth_hooks)
        if refusal is not None:
            return _local_response(request, refusal)
        try:
            return self.inner.handle_request(request)
        except BaseException as exc:
            _record_failure(request, exc)
            raise

    def close(self) -> None:
        self.inner.close()
