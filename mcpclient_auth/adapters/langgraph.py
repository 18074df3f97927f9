"""LangChain / LangGraph glue for runs (langchain-mcp-adapters ``MultiServerMCPClient``).

    client = MultiServerMCPClient({"hr": connection(run)},          # signed streamable-HTTP connection
                                  tool_interceptors=[RefusalInterceptor()])
    tools = narrow_tools(await client.get_tools(), run)             # only what the mandate grants
    agent = create_agent(model, tools)

- :func:`connection` — a langchain-mcp-adapters connection dict using the run's client factory.
- :func:`narrow_tools` — drops every tool the run may not call, so the model is never offered one.
- :class:`RefusalInterceptor` — a tool interceptor that turns a local refusal (the -32003 JSON-RPC
  error our transport answers with) into a tool error the model can read, or re-raises it as the
  typed exception (``MandateDenied`` ...) with ``raise_refusals=True``.
- :class:`RunSelector` — a tool interceptor that selects the run per call from LangGraph's runtime
  context (one client, several users/runs); the session opened for the call inherits the choice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from mcp.shared.exceptions import McpError
from mcp.types import CallToolResult, TextContent

from ..errors import ActionMappingError
from ..hooks import use_run
from ..jsonrpc import Call
from ..policy import ActionPolicy, CapabilitySet, McpActionPolicy
from ..principal import Principal
from ..refusal import refusal_text
from ..run import acting_for
from .mcp_session import refusal_from_mcp_error

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from ..run import AgentRun

__all__ = ["RefusalInterceptor", "RunSelector", "connection", "narrow_tools", "refusal_text"]

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
    mandate = cast("CapabilitySet", getattr(run_or_mandate, "mandate", run_or_mandate))
    if policy is None:
        policy = getattr(run_or_mandate, "policy", None) or McpActionPolicy()
    kept: list[BaseTool] = []
    for tool in tools:
        name = tool.name
        if prefix is not None:
            if not name.startswith(prefix + "_"):
                continue
            name = name[len(prefix) + 1 :]
        call = Call("request", "tools/call", None, name)
        try:
            action = policy.action_for(call)
        except ActionMappingError:
            continue
        if not policy.requires_capability(call, action) or mandate.allows(action):
            kept.append(tool)
    return kept


class RefusalInterceptor:
    """langchain-mcp-adapters tool interceptor for local refusals (see the module docstring)."""

    def __init__(self, *, raise_refusals: bool = False) -> None:
        self.raise_refusals = raise_refusals

    async def __call__(self, request: Any, handler: Handler) -> Any:
        try:
            return await handler(request)
        except McpError as exc:
            refusal = refusal_from_mcp_error(exc)
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
    ``runtime.context``); the call's session is opened inside that selection.

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
