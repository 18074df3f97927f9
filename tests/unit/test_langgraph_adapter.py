"""adapters.langgraph: narrowing tools to the mandate, and the refusal interceptor (no network)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.tools import StructuredTool
from mcp.shared.exceptions import McpError
from mcp.types import CallToolResult, ErrorData

from mcpclient_auth.adapters.langchain_mcp_adapters import RefusalInterceptor, narrow_tools
from mcpclient_auth.errors import MandateDenied
from mcpclient_auth.policy import McpActionPolicy
from mcpclient_auth.refusal import refusal_body


class Caps:
    def __init__(self, *actions: str) -> None:
        self.actions = set(actions)

    def allows(self, action: str) -> bool:
        return action in self.actions


def tool(name: str) -> StructuredTool:
    return StructuredTool.from_function(func=lambda: "x", name=name, description=name)


def test_only_granted_tools_are_kept_in_order() -> None:
    tools = [tool("search"), tool("get_employee_salary"), tool("bad name"), tool("get_office_locations")]
    kept = narrow_tools(tools, Caps("mcp.get_office_locations", "mcp.search"))
    assert [t.name for t in kept] == ["search", "get_office_locations"]


def test_prefixed_tool_names() -> None:
    tools = [tool("hr_search"), tool("hr_get_employee_salary"), tool("crm_search")]
    assert [t.name for t in narrow_tools(tools, Caps("mcp.search"), prefix="hr")] == ["hr_search"]


def test_a_custom_policy_decides() -> None:
    class EverythingNeedsRead(McpActionPolicy):
        def action_for(self, call: Any) -> str:
            return "read"

    assert [t.name for t in narrow_tools([tool("a"), tool("b")], Caps("read"), policy=EverythingNeedsRead())] == [
        "a",
        "b",
    ]


def _refusal_error() -> McpError:
    import json

    error = json.loads(refusal_body(3, MandateDenied("not granted", action="mcp.x")))["error"]
    return McpError(ErrorData(**error))


async def test_interceptor_turns_refusals_into_tool_errors_or_raises() -> None:
    async def refused(request: Any) -> Any:
        raise _refusal_error()

    result = await RefusalInterceptor()(None, refused)
    assert isinstance(result, CallToolResult) and result.isError
    assert "mandate_denied" in result.content[0].text  # type: ignore[union-attr]
    with pytest.raises(MandateDenied):
        await RefusalInterceptor(raise_refusals=True)(None, refused)


async def test_interceptor_leaves_server_errors_alone() -> None:
    async def server_error(request: Any) -> Any:
        raise McpError(ErrorData(code=-32602, message="unknown tool"))

    with pytest.raises(McpError):
        await RefusalInterceptor()(None, server_error)
