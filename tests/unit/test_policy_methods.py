"""policy (issue 12): every JSON-RPC method inside the mandate by default; plumbing is a short list."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcpclient_auth.errors import ActionMappingError, ConfigurationError, MandateDenied
from mcpclient_auth.jsonrpc import Call, parse
from mcpclient_auth.policy import (
    PERMISSIVE,
    PLUMBING_ACTIONS,
    PLUMBING_METHODS,
    McpActionPolicy,
    call_arguments,
    check_call,
)


class Caps:
    def __init__(self, *actions: str) -> None:
        self.actions = set(actions)

    def allows(self, action: str) -> bool:
        return action in self.actions


def message(method: str | None = None, params: dict[str, Any] | None = None, **extra: Any) -> Call:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, **extra}
    if method is not None:
        body["method"] = method
    if params is not None:
        body["params"] = params
    call = parse(json.dumps(body).encode())
    assert isinstance(call, Call)
    return call


NOTHING = Caps()


@pytest.mark.parametrize(
    ("call", "action"),
    [
        (message("resources/read", {"uri": "hr://salaries/carol"}), "mcp.rpc.resources.read"),
        (message("resources/subscribe", {"uri": "hr://x"}), "mcp.rpc.resources.subscribe"),
        (message("prompts/get", {"name": "salary_report", "arguments": {}}), "mcp.prompt.salary_report"),
        (
            message("completion/complete", {"ref": {"type": "ref/prompt", "name": "p"}}),
            "mcp.rpc.completion.complete",
        ),
        (message("logging/setLevel", {"level": "debug"}), "mcp.rpc.logging.setLevel"),
        (message("tasks/result", {"taskId": "t"}), "mcp.rpc.tasks.result"),
        (message("custom/export"), "mcp.rpc.custom.export"),
        (
            message(result={"role": "assistant", "content": {}, "model": "m"}),
            "mcp.rpc.sampling.createMessage",
        ),
        (message(result={"action": "accept", "content": {"x": 1}}), "mcp.rpc.elicitation.create"),
        (message(result={"roots": []}), "mcp.rpc.roots.list"),
        (message(result={"anything": 1}), "mcp.rpc.response.result"),
        (
            message("subscriptions/listen", {"notifications": {"resourceSubscriptions": ["hr://x"]}}),
            "mcp.rpc.subscriptions.listen.resources",
        ),
    ],
)
def test_data_methods_need_a_capability_by_default(call: Call, action: str) -> None:
    policy = McpActionPolicy()
    assert policy.action_for(call) == action
    assert policy.requires_capability(call, action)
    with pytest.raises(MandateDenied) as info:
        check_call(policy, call, NOTHING)
    assert info.value.action == action
    assert check_call(policy, call, Caps(action)) == action


@pytest.mark.parametrize(
    "call",
    [
        message("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {}}),
        message("server/discover"),
        message("ping"),
        message("tools/list"),
        message("prompts/list", {"cursor": "c"}),
        message("resources/list"),
        message("resources/templates/list"),
        message("resources/unsubscribe", {"uri": "hr://x"}),
        message("subscriptions/listen", {"notifications": {"toolsListChanged": True}}),
        message(result={}),
        message(error={"code": -32601, "message": "no"}),
    ],
)
def test_plumbing_needs_no_capability_and_its_action_is_listed(call: Call) -> None:
    policy = McpActionPolicy()
    action = check_call(policy, call, NOTHING)
    assert action in PLUMBING_ACTIONS  # what the ledger verifier accepts without a cap


def test_client_notifications_about_the_session_are_plumbing_others_are_not() -> None:
    policy = McpActionPolicy()
    for method in ("notifications/initialized", "notifications/cancelled", "notifications/progress"):
        call = Call("notification", method, None, None, {})
        assert check_call(policy, call, NOTHING) in PLUMBING_ACTIONS
    unknown = Call("notification", "notifications/custom/wipe", None, None, {})
    with pytest.raises(MandateDenied):
        check_call(policy, unknown, NOTHING)


def test_permissive_is_an_explicit_opt_in_with_the_old_behaviour() -> None:
    read = message("resources/read", {"uri": "hr://salaries/carol"})
    assert check_call(PERMISSIVE, read, NOTHING) == "mcp.rpc.resources.read"
    assert check_call(McpActionPolicy(permissive=True), message("prompts/get", {"name": "p"}), NOTHING)
    with pytest.raises(MandateDenied):  # tool calls are still checked
        check_call(PERMISSIVE, Call("request", "tools/call", 1, "get_employee_salary"), NOTHING)
    assert "permissive" in repr(PERMISSIVE)
    with pytest.raises(ConfigurationError):
        McpActionPolicy(strict=True, permissive=True)


@pytest.mark.parametrize("method", ["tools.list", "response", "initialize.x"])
def test_methods_that_would_alias_another_action_are_refused(method: str) -> None:
    # ``tools.list`` would map to the plumbing action of ``tools/list``; ``response`` to the answers'.
    with pytest.raises(ActionMappingError):
        McpActionPolicy().action_for(message(method))


@pytest.mark.parametrize("name", ["prompt.summary", "rpc", "rpc.x"])
def test_tool_names_in_the_prompt_or_rpc_namespace_are_refused(name: str) -> None:
    with pytest.raises(ActionMappingError):
        McpActionPolicy().action_for(Call("request", "tools/call", 1, name))
    # a tool called plain "prompt" is fine: mcp.prompt is no prompt's action
    assert McpActionPolicy().action_for(Call("request", "tools/call", 1, "prompt")) == "mcp.prompt"


@pytest.mark.parametrize("name", [None, 3, "a b", "x/y"])
def test_prompts_get_without_a_legal_name_is_refused(name: Any) -> None:
    with pytest.raises(ActionMappingError):
        McpActionPolicy().action_for(message("prompts/get", {"name": name}))


def test_plumbing_list_is_short_and_has_no_data_method() -> None:
    for method in ("resources/read", "prompts/get", "tools/call", "completion/complete", "logging/setLevel"):
        assert method not in PLUMBING_METHODS


def test_call_arguments_are_what_constraints_look_at() -> None:
    tool = message("tools/call", {"name": "get_employee_salary", "arguments": {"employee": "bob"}})
    assert call_arguments(tool) == {"employee": "bob"}
    assert call_arguments(message("tools/call", {"name": "t"})) == {}
    assert call_arguments(message("resources/read", {"uri": "hr://a"})) == {"uri": "hr://a"}
    assert call_arguments(message("prompts/get", {"name": "p", "arguments": {"who": "x"}})) == {"who": "x"}
    assert call_arguments(message("completion/complete", {})) is None


def test_params_stay_out_of_repr_and_positional_params_are_refused() -> None:
    call = message("tools/call", {"name": "t", "arguments": {"ssn": "123-45-6789"}})
    assert "123-45-6789" not in repr(call)
    from mcpclient_auth.errors import JsonRpcError

    with pytest.raises(JsonRpcError):
        parse(b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":["hr://x"]}')
