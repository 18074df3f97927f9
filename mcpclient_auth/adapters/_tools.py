"""Pieces shared by the LangChain adapters of both stacks (no MCP or HTTP library imported here).

- :func:`narrow` — keep the tools a mandate allows (anything with a ``.name``), in order;
- :func:`selected` — enter and leave an async context manager (an MCP session or client) with a run
  selected, so the requests sent while opening *and* closing it (``initialize``, the ``DELETE``)
  act for that run.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from .._hooks import use_run
from ..errors import ActionMappingError
from ..jsonrpc import Call
from ..policy import ActionPolicy, CapabilitySet, McpActionPolicy

if TYPE_CHECKING:
    from ..run import AgentRun

__all__ = ["narrow", "selected"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


ToolT = TypeVar("ToolT", bound=_Named)


def narrow(
    tools: Sequence[ToolT],
    run_or_mandate: AgentRun | CapabilitySet,
    *,
    policy: ActionPolicy | None = None,
    prefix: str | None = None,
) -> list[ToolT]:
    """The tools the mandate allows, in their original order (``langchain_mcp_adapters.narrow_tools``)."""
    mandate = cast("CapabilitySet", getattr(run_or_mandate, "mandate", run_or_mandate))
    if policy is None:
        policy = getattr(run_or_mandate, "policy", None) or McpActionPolicy()
    kept: list[ToolT] = []
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


@contextlib.asynccontextmanager
async def selected(run: AgentRun, manager: contextlib.AbstractAsyncContextManager[Any]) -> AsyncIterator[Any]:
    """Enter *and leave* ``manager`` with ``run`` selected (see the module docstring)."""
    with use_run(run):
        entered = await manager.__aenter__()
    try:
        yield entered
    except BaseException as exc:
        with use_run(run):
            if not await manager.__aexit__(type(exc), exc, exc.__traceback__):
                raise
    else:
        with use_run(run):
            await manager.__aexit__(None, None, None)
