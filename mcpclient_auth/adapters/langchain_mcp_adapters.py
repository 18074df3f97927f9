"""LangChain / LangGraph glue for runs (langchain-mcp-adapters ``MultiServerMCPClient``).

    client = MultiServerMCPClient({"hr": connection(run)},          # signed streamable-HTTP connection
                                  tool_interceptors=[RefusalInterceptor()])
    async with run, run_tools(run, client, narrow=True) as tools:   # one MCP session per server, held
        agent = create_agent(model, tools)                          # only what the mandate grants
        await agent.ainvoke(...)

- :func:`run_tools` — the run's tools, each server's calls on **one held MCP session** opened when the
  block starts and closed when it ends (``initialize``, ``notifications/initialized`` and one
  ``tools/list`` per server, then only tool calls). ``sessions="per-call"`` keeps
  langchain-mcp-adapters' own behaviour (``client.get_tools()``: a new session for every tool call).
  Either way the tools act for ``run`` only: the session is opened with the run selected, and a call
  made while another run or principal is selected is refused (``principal_mismatch``) before it is sent.
- :func:`connection` — a langchain-mcp-adapters connection dict using the run's client factory.
- :func:`narrow_tools` — drops every tool the run may not call, so the model is never offered one.
- :class:`RefusalInterceptor` — a tool interceptor that turns a local refusal (the -32003 JSON-RPC
  error our transport answers with) into a tool error the model can read, or re-raises it as the
  typed exception (``MandateDenied`` ...) with ``raise_refusals=True``.
- :class:`RunSelector` — a tool interceptor that selects the run per call from LangGraph's runtime
  context (one client, several users/runs); a per-call session inherits the choice, and a held
  session's tools refuse a call it routes to another run (in mcp 1.x the held session cannot follow).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from mcp.shared.exceptions import McpError
from mcp.types import CallToolResult, ErrorData, TextContent

from .._hooks import current_run, use_run
from ..errors import (
    ActionMappingError,
    ConfigurationError,
    McpClientAuthError,
    PrincipalMismatch,
    SessionClosed,
)
from ..jsonrpc import Call
from ..policy import ActionPolicy, CapabilitySet
from ..principal import Principal
from ..refusal import refusal_body, refusal_from_error, refusal_text
from ..run import acting_for, current_principal
from ._tools import narrow, selected

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool
    from langchain_mcp_adapters.client import MultiServerMCPClient

    from ..run import AgentRun

__all__ = [
    "SESSION_MODES",
    "RefusalInterceptor",
    "RunBinding",
    "RunSelector",
    "SessionMode",
    "connection",
    "narrow_tools",
    "refusal_text",
    "run_tools",
]

#: ``"held"``: one MCP session per server for the whole block; ``"per-call"``: a new session per tool call.
SessionMode = Literal["held", "per-call"]
SESSION_MODES: tuple[SessionMode, ...] = ("held", "per-call")

Handler = Callable[[Any], Awaitable[Any]]


def connection(run: AgentRun, url: str | None = None, **extra: Any) -> dict[str, Any]:
    """A ``streamable_http`` connection for ``MultiServerMCPClient`` whose clients carry ``run``'s hooks."""
    conn: dict[str, Any] = {
        "transport": "streamable_http",
        "url": url if url is not None else run.endpoints[0],
        "httpx_client_factory": run.httpx_client_factory(),
    }
    conn.update(extra)
    return conn


def narrow_tools(
    tools: Sequence[BaseTool],
    run_or_mandate: AgentRun | CapabilitySet,
    *,
    policy: ActionPolicy | None = None,
    prefix: str | None = None,
) -> list[BaseTool]:
    """The tools the mandate allows, in their original order.

    A tool is kept when the policy maps its MCP name to an action and that action needs no
    capability or is granted; names that cannot be actions are dropped (they would be refused).
    ``prefix``: the server name when the client was built with ``tool_name_prefix=True``.
    """
    return narrow(tools, run_or_mandate, policy=policy, prefix=prefix)


class RefusalInterceptor:
    """langchain-mcp-adapters tool interceptor for local refusals (see the module docstring)."""

    def __init__(self, *, raise_refusals: bool = False) -> None:
        self.raise_refusals = raise_refusals

    async def __call__(self, request: Any, handler: Handler) -> Any:
        try:
            return await handler(request)
        except McpError as exc:
            refusal = refusal_from_error(exc)
            if refusal is None:
                raise
            if self.raise_refusals:
                raise refusal from exc
            return CallToolResult(
                content=[TextContent(type="text", text=refusal_text(refusal.code, refusal.message))],
                isError=True,
            )


class RunSelector:
    """Tool interceptor: ``select(runtime)`` names the run for this call (e.g. from
    ``runtime.context``); a per-call session is opened inside that selection. Tools from
    :func:`run_tools` with a held session act for their own run only: a selection of another run is
    refused (``principal_mismatch``) — hold one session per run instead.

    With ``principal=`` (``principal(runtime) -> user id``, e.g. ``lambda rt: rt.context.user_id``)
    the call is also declared as made for that user (:func:`~mcpclient_auth.run.acting_for`), so a
    ``select`` that returns another user's run is refused instead of sending with their token.
    """

    def __init__(
        self,
        select: Callable[[Any], AgentRun],
        *,
        principal: Callable[[Any], Principal | str] | None = None,
    ) -> None:
        self._select = select
        self._principal = principal

    async def __call__(self, request: Any, handler: Handler) -> Any:
        runtime = getattr(request, "runtime", None)
        run = self._select(runtime)
        with contextlib.ExitStack() as stack:
            if self._principal is not None:
                stack.enter_context(acting_for(self._principal(runtime)))
            stack.enter_context(use_run(run))
            return await handler(request)



class RunBinding:
    """Innermost tool interceptor of :func:`run_tools`: the tools act for their run and nobody else.

    A held mcp 1.x session sends every request in the context it was *opened* in, so a selection made
    at call time (``use_run``, :class:`RunSelector`, ``acting_for``) cannot reach its hooks. This
    interceptor checks that selection before anything is sent: another run, or another principal than
    the run's, is refused as ``principal_mismatch`` — a ``denial`` in the run's ledger and a local
    JSON-RPC error (-32003) that :class:`RefusalInterceptor` shows the model — instead of being sent
    with this run's mandate and token. A per-call session is opened inside ``use_run(run)``.
    """

    def __init__(self, run: AgentRun) -> None:
        self.run = run
        #: Set when the held session(s) behind these tools are closed.
        self.closed = False

    async def __call__(self, request: Any, handler: Handler) -> Any:
        if self.closed:
            raise SessionClosed(
                f"the MCP session held for run {self.run.id} is closed: call tools inside run_tools()",
                run=self.run.id,
                tool=str(getattr(request, "name", "")),
            )
        mismatch = self._mismatch()
        if mismatch is not None:
            self._record_denial(str(getattr(request, "name", "")), mismatch)
            # the same JSON-RPC error our transport answers a refusal with, so the same code reads it
            raise McpError(ErrorData.model_validate(json.loads(refusal_body(0, mismatch))["error"]))
        with use_run(self.run):
            return await handler(request)

    def _mismatch(self) -> PrincipalMismatch | None:
        run = self.run
        selected = current_run()
        if selected is not None and selected is not run:
            return PrincipalMismatch(
                f"this tool's MCP session acts for run {run.id} (principal {run.principal.id!r}); "
                f"the call selected run {selected.id} (principal {selected.principal.id!r})",
                principal=run.principal.id,
                requested=selected.principal.id,
            )
        acting = current_principal()
        if acting is not None and acting != run.principal.id:
            return PrincipalMismatch(
                f"run {run.id} acts for principal {run.principal.id!r}, not for {acting!r}",
                principal=run.principal.id,
                requested=acting,
            )
        return None

    def _record_denial(self, tool: str, error: PrincipalMismatch) -> None:
        run = self.run
        action: str | None
        try:
            action = run.policy.action_for(Call("request", "tools/call", None, tool))
        except ActionMappingError:
            action = None
        meta = {
            "method": "tools/call",
            "tool": tool,
            "id": None,
            "action": action,
            "code": error.code,
            "principal": run.principal.id,
        }
        run.ledger.append(run=run.id, kind="denial", meta=meta)


def _refusal_in(exc: BaseException) -> McpClientAuthError | None:
    """Our local refusal behind ``exc``: anyio task groups wrap a session's failure in exception groups."""
    if isinstance(exc, McpError):
        return refusal_from_error(exc)
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _refusal_in(inner)) is not None:
                return found
    return None


@contextlib.asynccontextmanager
async def run_tools(
    run: AgentRun,
    client: MultiServerMCPClient | None = None,
    *,
    sessions: SessionMode = "held",
    servers: Sequence[str] | None = None,
    narrow: bool = False,
) -> AsyncIterator[list[BaseTool]]:
    """``async with run_tools(run, client) as tools:`` — the run's LangChain tools for the block.

    - ``client``: a ``MultiServerMCPClient`` whose connections reach the run's endpoint(s) (e.g.
      :func:`connection`, or ``multi_run_client_factory()`` for one client shared by several runs);
      its interceptors, callbacks, ``tool_name_prefix`` and ``handle_tool_errors`` apply. Default: one
      server ``"mcp"`` at the run's first endpoint with a :class:`RefusalInterceptor`.
    - ``sessions="held"`` (default): per server one MCP session, opened here with ``run`` selected
      (so in mcp 1.x every request of it acts for ``run``) and closed when the block ends; a tool
      called after that raises ``SessionClosed``. ``"per-call"``: langchain-mcp-adapters' behaviour,
      a new session (``initialize``, ``notifications/initialized``, the call, often a ``tools/list``)
      for every tool call, each opened inside ``use_run(run)``.
    - ``servers``: only these connections (default: all of them).
    - ``narrow=True``: only the tools the mandate grants (:func:`narrow_tools`).

    A refusal while opening (e.g. ``acting_for`` another user) raises the typed error.
    """
    if sessions not in SESSION_MODES:
        raise ConfigurationError(f"sessions must be one of {', '.join(SESSION_MODES)}, not {sessions!r}")
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langchain_mcp_adapters.tools import load_mcp_tools

    if client is None:
        client = MultiServerMCPClient(
            {"mcp": connection(run)},  # type: ignore[dict-item]
            tool_interceptors=[RefusalInterceptor()],
        )
    names = list(client.connections) if servers is None else list(servers)
    unknown = [name for name in names if name not in client.connections]
    if unknown:
        raise ConfigurationError(f"no connection named {', '.join(map(repr, unknown))} in the client")
    binding = RunBinding(run)
    interceptors = [*client.tool_interceptors, binding]  # innermost: sees the selection made outside
    tools: list[BaseTool] = []
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(setattr, binding, "closed", True)
        for name in names:
            options: dict[str, Any] = {
                "callbacks": client.callbacks,
                "tool_interceptors": interceptors,
                "server_name": name,
                "tool_name_prefix": client.tool_name_prefix,
                "handle_tool_errors": client.handle_tool_errors,
            }
            try:
                # The session's transport tasks copy the context now: its requests act for `run`.
                with use_run(run):
                    if sessions == "held":
                        session = await stack.enter_async_context(selected(run, client.session(name)))
                        listed = await load_mcp_tools(session, **options)
                    else:
                        listed = await load_mcp_tools(None, connection=client.connections[name], **options)
            except (McpError, BaseExceptionGroup) as exc:
                refusal = _refusal_in(exc)
                if refusal is None:
                    raise
                raise refusal from exc
            if narrow:
                listed = narrow_tools(listed, run, prefix=name if client.tool_name_prefix else None)
            tools.extend(listed)
        yield tools
