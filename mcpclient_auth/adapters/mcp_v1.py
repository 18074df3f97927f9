"""A signed plain mcp ``ClientSession`` for a run, with refusals raised as typed errors.

    async with open_session(run) as session:          # the run's (first) endpoint
        await session.call_tool("get_office_locations", {})
        await session.call_tool("get_employee_salary", {"employee": "bob"})   # -> MandateDenied

The session talks streamable HTTP through a client from :meth:`AgentRun.httpx_client_factory`, so a
refused call is answered locally with a JSON-RPC error (the session survives); :class:`RunSession`
turns that error back into the typed exception (``MandateDenied``, ``ActionMappingError``, an
``AuthorizationError`` ...). Any other ``McpError`` passes through unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from ..refusal import refusal_from_error

if TYPE_CHECKING:
    from ..run import AgentRun

__all__ = ["RunSession", "open_session"]


class RunSession(ClientSession):
    """A ``ClientSession`` that raises our typed errors for local refusals instead of ``McpError``."""

    async def send_request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().send_request(*args, **kwargs)
        except McpError as exc:
            refusal = refusal_from_error(exc)
            if refusal is None:
                raise
            raise refusal from exc


@asynccontextmanager
async def open_session(
    run: AgentRun,
    url: str | None = None,
    *,
    terminate_on_close: bool = True,
    client_kwargs: dict[str, Any] | None = None,
    **session_kwargs: Any,
) -> AsyncIterator[RunSession]:
    """Open and initialise a signed session to ``url`` (default: the run's first endpoint).

    ``client_kwargs`` go to the client factory (``timeout``, ``headers``, ``auth``, ``transport``...);
    ``session_kwargs`` to ``ClientSession`` (``read_timeout_seconds``, ``sampling_callback``, ...).
    """
    target = run.endpoint_url(url)
    client = run.httpx_client_factory()(**(client_kwargs or {}))
    async with (
        client,
        streamable_http_client(target, http_client=client, terminate_on_close=terminate_on_close) as (
            read,
            write,
            _,
        ),
        RunSession(read, write, **session_kwargs) as session,
    ):
        await session.initialize()
        yield session
