"""A signed mcp 2.x ``Client`` for a run, with refusals raised as typed errors (stack B).

    async with open_client(run) as client:                  # mode="auto" | "legacy" | "2026-07-28"
        await client.call_tool("get_office_locations", {})
        await client.call_tool("get_employee_salary", {"employee": "bob"})   # -> MandateDenied

mcp 2.x talks streamable HTTP through httpx2: :func:`open_client` builds the ``httpx2.AsyncClient``
from :func:`~mcpclient_auth.factory.httpx2_client_factory` and hands it to
``streamable_http_client(url, http_client=...)``, so every request is authorised, chained, signed
(the ``mcp`` profile also covers the ``mcp-method`` / ``mcp-name`` headers mcp sets on 2026-07-28
requests, and ``mcp-session-id`` on legacy ones) and recorded. A refused call is answered locally with
a JSON-RPC error (-32003): the session survives and :class:`RunClient` raises the typed exception
(``MandateDenied`` ...) instead of ``MCPError``. Any other ``MCPError`` passes through unchanged.

mcp 2.x sends each request in the context of the call that made it, so with a multi-run client
(``run=None``) ``with use_run(run_for_alice): await client.call_tool(...)`` acts for alice even on a
session opened earlier; the connect requests run in the context that opened the session.

mcp 2.x is imported when :func:`open_client` runs (stack A has mcp 1.x; this module only imports).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, McpClientAuthError
from ..factory import httpx2_client_factory
from ..refusal import refusal_from_error

if TYPE_CHECKING:
    from ..run import AgentRun

__all__ = ["RunClient", "open_client", "unwrap_refusal"]


def unwrap_refusal(error: BaseException) -> McpClientAuthError | None:
    """Our typed error behind an mcp 2.x connect failure, else ``None``.

    mcp 2.x wraps it in an ``ExceptionGroup`` (the error must be the group's only leaf): a local
    refusal arrives as ``MCPError(-32003)``; an error our hook raised (say ``RunClosed``) as itself.
    """
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, McpClientAuthError):
        return error
    return refusal_from_error(error)


def _translating(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            refusal = refusal_from_error(exc)
            if refusal is None:
                raise
            raise refusal from exc

    return call


class RunClient:
    """An mcp 2.x ``Client`` whose request methods raise our typed errors for local refusals.

    Everything else is the wrapped client's (``client.session``, ``client.protocol_version`` ...); the
    raw client is :attr:`client`.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def __repr__(self) -> str:
        return f"RunClient({self.client!r})"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attr):
            return attr
        return _translating(attr)


@asynccontextmanager
async def open_client(
    run: AgentRun | None,
    url: str | None = None,
    *,
    mode: str = "auto",
    terminate_on_close: bool = True,
    client_kwargs: dict[str, Any] | None = None,
    **mcp_client_kwargs: Any,
) -> AsyncIterator[RunClient]:
    """Connect a signed mcp 2.x ``Client`` to ``url`` (default: the run's first endpoint).

    ``run=None`` makes a multi-run client (give ``url``; select runs with ``use_run``).
    ``client_kwargs`` go to the httpx2 client factory (``timeout``, ``headers``, ``transport`` ...);
    ``mcp_client_kwargs`` to ``mcp.client.Client`` (``read_timeout_seconds``, callbacks ...). A refusal
    during connect (e.g. of ``server/discover``) raises the typed exception, not an ``ExceptionGroup``.
    """
    if run is not None:
        url = run.endpoint_url(url)
    elif url is None:
        raise ConfigurationError("open_client(None, ...) needs url=")
    client_module = importlib.import_module("mcp.client")
    transport_module = importlib.import_module("mcp.client.streamable_http")
    http_client = httpx2_client_factory(run)(**(client_kwargs or {}))
    async with http_client:
        transport = transport_module.streamable_http_client(
            url, http_client=http_client, terminate_on_close=terminate_on_close
        )
        mcp_client = client_module.Client(transport, mode=mode, **mcp_client_kwargs)
        try:
            await mcp_client.__aenter__()
        except BaseException as exc:
            refusal = unwrap_refusal(exc)
            if refusal is None:
                raise
            raise refusal from exc
        try:
            yield RunClient(mcp_client)
        except BaseException as exc:
            if not await mcp_client.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await mcp_client.__aexit__(None, None, None)
