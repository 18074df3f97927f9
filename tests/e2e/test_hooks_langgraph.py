"""End-to-end: langchain-mcp-adapters' MultiServerMCPClient and a LangGraph agent driven by a scripted
chat model, against the verifying FastMCP server (issue 3, acceptance 1b, 1c; tool narrowing; refusals
shown to the model).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import ToolException
from langchain_mcp_adapters.client import MultiServerMCPClient

from mcpclient_auth.adapters.langchain_mcp_adapters import (
    RefusalInterceptor,
    RunSelector,
    connection,
    narrow_tools,
)
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import MandateDenied
from mcpclient_auth.factory import multi_run_client_factory
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.principal import Principal
from tests.support.hooks_env import Env, entries, hr_server

pytestmark = pytest.mark.e2e


class ScriptedModel(GenericFakeChatModel):
    """A chat model that plays a fixed script of messages and accepts any tools."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:  # type: ignore[override]
        return self


def script(*messages: AIMessage) -> ScriptedModel:
    return ScriptedModel(messages=iter(messages))


def tool_call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with hr_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_guard(env: Env) -> None:
    env.state.reset()


async def test_multi_server_client_tools_are_narrowed_signed_and_recorded(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    async with env.run(path, capabilities=["mcp.search", "mcp.get_office_locations"]) as run:
        client = MultiServerMCPClient({"hr": connection(run)})  # type: ignore[dict-item]
        offered = await client.get_tools()
        assert "get_employee_salary" in {t.name for t in offered}
        tools = {t.name: t for t in narrow_tools(offered, run)}
        assert set(tools) == {"search", "get_office_locations"}  # the model never sees the others

        found = await tools["search"].ainvoke({"query": "holidays"})
        offices = await tools["get_office_locations"].ainvoke({})
        assert "holidays" in str(found) and "Lisbon" in str(offices)

    assert env.state.rejected == 0, env.state.errors()
    ects = entries(path, kind="ect")
    assert env.state.verified_ects == len(ects)
    assert [e.meta["tool"] for e in ects if "tool" in e.meta] == ["search", "get_office_locations"]
    assert verify_ledger(path, env.trust).ok


async def test_langgraph_agent_makes_two_signed_tool_calls(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    async with env.run(path, capabilities=["mcp.search", "mcp.get_office_locations"]) as run:
        client = MultiServerMCPClient({"hr": connection(run)})  # type: ignore[dict-item]
        tools = narrow_tools(await client.get_tools(), run)
        model = script(
            tool_call("get_office_locations", {}, "call-1"),
            tool_call("search", {"query": "relocation policy"}, "call-2"),
            AIMessage(content="We have offices in Berlin, Lisbon and Toronto."),
        )
        agent = create_agent(model, tools)
        state = await agent.ainvoke({"messages": [{"role": "user", "content": "Where are our offices?"}]})
        await run.aclose(output=state["messages"][-1].content)

    tool_messages = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.name for m in tool_messages] == ["get_office_locations", "search"]
    assert all(m.status == "success" for m in tool_messages)
    assert env.state.rejected == 0, env.state.errors()
    ects = entries(path, kind="ect")
    assert env.state.verified_ects == len(ects)
    tool_ects = [e for e in ects if "tool" in e.meta]
    assert [e.meta["tool"] for e in tool_ects] == ["get_office_locations", "search"]
    # the second tool call descends from the first, even across the adapters' per-call sessions
    first, second = (ExecutionContextToken.decode(e.token) for e in tool_ects)  # type: ignore[arg-type]
    assert first.pred == [run.id] and second.pred == [first.jti]
    assert verify_ledger(path, env.trust).ok


async def test_refusals_reach_the_model_as_tool_errors_and_the_run_goes_on(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    async with env.run(path, capabilities=["mcp.search"]) as run:
        client = MultiServerMCPClient(
            {"hr": connection(run)},  # type: ignore[dict-item]
            tool_interceptors=[RefusalInterceptor()],
        )
        tools = await client.get_tools()  # deliberately not narrowed
        model = script(
            tool_call("get_employee_salary", {"employee": "bob"}, "call-1"),
            tool_call("search", {"query": "salary bands"}, "call-2"),
            AIMessage(content="I may not read salaries; here is the public policy."),
        )
        state = await create_agent(model, tools).ainvoke({"messages": [{"role": "user", "content": "Bob's pay?"}]})

    refused, allowed = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert refused.status == "error" and "refused before it was sent (mandate_denied)" in str(refused.content)
    assert allowed.status == "success"
    assert not any(b"get_employee_salary" in r.body for r in env.state.requests)
    denial = entries(path, kind="denial")
    assert [d.meta["tool"] for d in denial] == ["get_employee_salary"]
    assert env.state.rejected == 0


async def test_refusal_interceptor_can_raise_the_typed_error(env: Env, tmp_path: Path) -> None:
    async with env.run(tmp_path / "ledger.jsonl", capabilities=["mcp.search"]) as run:
        client = MultiServerMCPClient(
            {"hr": connection(run)},  # type: ignore[dict-item]
            tool_interceptors=[RefusalInterceptor(raise_refusals=True)],
        )
        salary = next(t for t in await client.get_tools() if t.name == "get_employee_salary")
        with pytest.raises(MandateDenied) as info:
            await salary.ainvoke({"employee": "bob"})
        assert info.value.action == "mcp.get_employee_salary"


async def test_one_client_serves_two_runs_selected_per_call(env: Env, tmp_path: Path) -> None:
    alice_path, bob_path = tmp_path / "alice.jsonl", tmp_path / "bob.jsonl"
    alice = env.run(alice_path, principal=Principal(id="alice"))
    bob = env.run(bob_path, principal=Principal(id="bob"), capabilities=["mcp.get_office_locations"])
    runs = {"alice": alice, "bob": bob}
    conn = {"transport": "streamable_http", "url": env.url, "httpx_client_factory": multi_run_client_factory()}
    client = MultiServerMCPClient(
        {"hr": conn},  # type: ignore[dict-item]
        tool_interceptors=[RunSelector(lambda runtime: runs[runtime["user"]]), RefusalInterceptor()],
    )
    with alice.activate():  # listing tools needs a run too
        tools = {t.name: t for t in await client.get_tools()}
    search, offices = tools["search"], tools["get_office_locations"]
    # the adapters pass LangGraph's runtime to interceptors; emulate it with the injected arg
    assert "holiday" in str(await search.coroutine(runtime={"user": "alice"}, query="holiday"))  # type: ignore[misc]
    assert "Lisbon" in str(await offices.coroutine(runtime={"user": "bob"}))  # type: ignore[misc]
    # called outside a graph, the adapters raise the isError result as a ToolException
    with pytest.raises(ToolException, match="mandate_denied"):
        await search.coroutine(runtime={"user": "bob"}, query="x")  # type: ignore[misc]
    await alice.aclose()
    await bob.aclose()

    assert [e.meta.get("tool") for e in entries(alice_path, kind="ect") if "tool" in e.meta] == ["search"]
    assert [e.meta.get("tool") for e in entries(bob_path, kind="ect") if "tool" in e.meta] == [
        "get_office_locations"
    ]
    assert [d.meta["principal"] for d in entries(bob_path, kind="denial")] == ["bob"]
    assert verify_ledger(alice_path, env.trust).ok and verify_ledger(bob_path, env.trust).ok
