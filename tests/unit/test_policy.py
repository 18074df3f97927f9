"""policy: exec_act mapping (DESIGN §3) and mandate enforcement."""

from __future__ import annotations

import pytest

from mcpclient_auth.errors import ActionMappingError, MandateDenied
from mcpclient_auth.jsonrpc import Call
from mcpclient_auth.policy import ActionPolicy, McpActionPolicy, check_call, is_action


class Caps:
    """A stand-in for act.Mandate: only `allows` is used by check_call."""

    def __init__(self, *actions: str) -> None:
        self.actions = set(actions)

    def allows(self, action: str) -> bool:
        return action in self.actions


def tool(name: str) -> Call:
    return Call("request", "tools/call", 1, name)


@pytest.mark.parametrize(
    ("call", "action"),
    [
        (tool("search"), "mcp.search"),
        (tool("get_office-locations2"), "mcp.get_office-locations2"),
        (tool("hr.salary"), "mcp.hr.salary"),
        (Call("request", "initialize", 1), "mcp.rpc.initialize"),
        (Call("request", "tools/list", 1), "mcp.rpc.tools.list"),
        (Call("notification", "notifications/initialized", None), "mcp.rpc.notifications.initialized"),
        (Call("response", None, 3, answers="error"), "mcp.rpc.response"),
        (Call("response", None, 3, answers="ping"), "mcp.rpc.response"),
        (Call("response", None, 3), "mcp.rpc.response.result"),
    ],
)
def test_default_mapping(call: Call, action: str) -> None:
    assert McpActionPolicy().action_for(call) == action


@pytest.mark.parametrize(
    "name",
    ["", "1abc", "a b", "a/b", "tool!", "a..b", ".a", "a.", "ünïcode", "x" * 300, "rpc.initialize", "rpc"],
)
def test_illegal_tool_names_are_refused_never_rewritten(name: str) -> None:
    with pytest.raises(ActionMappingError) as info:
        McpActionPolicy().action_for(tool(name))
    assert info.value.code == "invalid_action"
    assert isinstance(info.value, MandateDenied)  # refused "the same way" as a denial


def test_unmappable_method_is_refused() -> None:
    with pytest.raises(ActionMappingError):
        McpActionPolicy().action_for(Call("request", "$/cancel", 1))


def test_is_action() -> None:
    assert is_action("mcp.search") and is_action("a-b_c.D9")
    assert not is_action("mcp..x") and not is_action("9a") and not is_action("")


def test_check_call_allows_granted_tools_and_session_calls() -> None:
    policy = McpActionPolicy()
    caps = Caps("mcp.search")
    assert check_call(policy, tool("search"), caps) == "mcp.search"
    # session-level methods need no capability unless strict
    assert check_call(policy, Call("request", "tools/list", 2), caps) == "mcp.rpc.tools.list"


def test_check_call_denies_tools_outside_the_mandate() -> None:
    with pytest.raises(MandateDenied) as info:
        check_call(McpActionPolicy(), tool("get_employee_salary"), Caps("mcp.search"))
    assert info.value.code == "mandate_denied"
    assert info.value.action == "mcp.get_employee_salary"
    assert info.value.to_dict()["tool"] == "get_employee_salary"


def test_strict_policy_needs_capabilities_for_session_calls() -> None:
    strict = McpActionPolicy(strict=True)
    with pytest.raises(MandateDenied):
        check_call(strict, Call("request", "initialize", 1), Caps("mcp.search"))
    assert (
        check_call(strict, Call("request", "initialize", 1), Caps("mcp.rpc.initialize"))
        == "mcp.rpc.initialize"
    )


def test_policies_are_pluggable() -> None:
    class ReadOnly:
        def action_for(self, call: Call) -> str:
            return "read." + (call.tool or "session")

        def requires_capability(self, call: Call, action: str) -> bool:
            return True

    policy = ReadOnly()
    assert isinstance(policy, ActionPolicy)
    assert check_call(policy, tool("x"), Caps("read.x")) == "read.x"
    with pytest.raises(MandateDenied):
        check_call(policy, Call("request", "initialize", 1), Caps("read.x"))
