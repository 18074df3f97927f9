"""``langchain.mcp.MCPAdapter`` (beta) over a signed fastmcp 4 client, with per-user run selection.

    client = signed_client(None, url)                      # multi-run: the run is chosen per tool call
    adapter = MCPAdapter(client)
    with use_run(setup_run):                               # the adapter's own list opens a session
        tools = await adapter.list_tools()
    agent = create_agent(model, tools, context_schema=UserContext,
                         middleware=[RunMiddleware(lambda runtime: runs[runtime.context.user])])
    await agent.ainvoke({"messages": [...]}, context=UserContext("alice"))

- :func:`signed_client` — a ``fastmcp.Client`` whose ``StreamableHttpTransport`` builds its httpx2
  clients with :func:`~mcpclient_auth.factory.httpx2_client_factory` (fastmcp calls the factory per
  connection and appends its own session-id hook; ours stay).
- :class:`RunMiddleware` — LangChain agent middleware: selects the run for each tool call from the
  LangGraph runtime (``request.runtime.context``) — mcp 2.x sends each request in the context of the
  call that made it, so the selection reaches that call's requests even on a session held open for
  several users — and turns a local refusal (-32003) into an error ``ToolMessage`` the model can read
  (``langchain.mcp`` would let the ``MCPError`` end the agent run), or re-raises it as the typed
  exception with ``raise_refusals=True``.

- :func:`run_tools` — ``async with run_tools(run) as tools:`` the run's tools on **one held MCP
  session** (the adapter kept connected for the block: one handshake / discovery, then only tool
  calls), or ``sessions="per-call"`` (each tool call connects on its own, ``langchain.mcp``'s default).
  The session is opened and closed with ``run`` selected; in mcp 2.x each call then acts for the run
  selected *at call time* (:class:`RunMiddleware`, ``use_run``) — or, when none is, for the client's
  own run (``signed_client(run)``).

Legacy (stateful) servers: a held session's setup requests act for the run selected when it was
opened, and a server that binds a session to its first principal refuses other users on it — there,
hold one session per user (one ``run_tools`` per run, each with its own ``signed_client(run)``) or
don't hold it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import ToolMessage

from .._hooks import use_run
from ..errors import ConfigurationError
from ..factory import httpx2_client_factory
from ..refusal import refusal_from_error, refusal_text
from ._tools import narrow as narrow_to_mandate
from ._tools import selected

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from ..run import AgentRun

__all__ = ["RunMiddleware", "run_tools", "signed_client"]

SessionMode = Literal["held", "per-call"]

Handler = Callable[[Any], Awaitable[Any]]


def signed_client(run: AgentRun | None, url: str | None = None, **client_kwargs: Any) -> Any:
    """A ``fastmcp.Client`` for ``url`` (default: the run's first endpoint) carrying ``run``'s hooks.

    ``run=None``: a multi-run client (give ``url``; :class:`RunMiddleware` or ``use_run`` selects).
    ``client_kwargs`` go to ``fastmcp.Client`` (``mode="legacy"``, ``timeout`` ...).
    """
    from fastmcp import Client
    from fastmcp.client.transports import StreamableHttpTransport

    if run is not None:
        url = run.endpoint_url(url)
    elif url is None:
        raise ConfigurationError("signed_client(None, ...) needs url=")
    transport = StreamableHttpTransport(url, httpx_client_factory=httpx2_client_factory(run))
    return Client(transport, **client_kwargs)


class RunMiddleware(AgentMiddleware):
    """Agent middleware: run selection per tool call and local refusals (see the module docstring).

    ``select(runtime) -> AgentRun`` names the run (``None``: keep whatever is selected already, e.g.
    a single-run client).
    """

    def __init__(
        self, select: Callable[[Any], AgentRun] | None = None, *, raise_refusals: bool = False
    ) -> None:
        super().__init__()
        self._select = select
        self.raise_refusals = raise_refusals

    async def awrap_tool_call(self, request: Any, handler: Handler) -> Any:
        if self._select is None:
            return await self._call(request, handler)
        with use_run(self._select(getattr(request, "runtime", None))):
            return await self._call(request, handler)

    async def _call(self, request: Any, handler: Handler) -> Any:
        try:
            return await handler(request)
        except Exception as exc:
            refusal = refusal_from_error(exc)
            if refusal is None:
                raise
            if self.raise_refusals:
                raise refusal from exc
            tool_call = request.tool_call
            return ToolMessage(
                content=refusal_text(refusal.code, refusal.message),
                tool_call_id=tool_call["id"],
                name=tool_call["name"],
                status="error",
            )


@contextlib.asynccontextmanager
async def run_tools(
    run: AgentRun, client: Any = None, *, sessions: SessionMode = "held", narrow: bool = False
) -> AsyncIterator[list[BaseTool]]:
    """``async with run_tools(run) as tools:`` — ``langchain.mcp`` tools for the block (module docstring).

    ``client``: a fastmcp ``Client`` (default :func:`signed_client(run) <signed_client>`);
    ``narrow=True``: only the tools the mandate grants.
    """
    if sessions not in ("held", "per-call"):
        raise ConfigurationError(f"sessions must be 'held' or 'per-call', not {sessions!r}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # langchain.mcp is marked beta
        from langchain.mcp import MCPAdapter

    adapter = MCPAdapter(client if client is not None else signed_client(run))
    async with contextlib.AsyncExitStack() as stack:
        with use_run(run):
            if sessions == "held":
                await stack.enter_async_context(selected(run, adapter))
            tools: list[BaseTool] = await adapter.list_tools()
        yield narrow_to_mandate(tools, run) if narrow else tools
