"""End-to-end: ``run_tools`` holds one MCP session per run and server (issue 18), against the verifying
FastMCP server, with langchain-mcp-adapters' real client; and it still acts for the right run when
several runs share one client (mcp 1.x: a held session's requests carry the context it was opened in).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.tools import ToolException
from langchain_mcp_adapters.client import MultiServerMCPClient

from mcpclient_auth._hooks import use_run
from mcpclient_auth.adapters.langchain_mcp_adapters import (
    RefusalInterceptor,
    RunSelector,
    connection,
    run_tools,
)
from mcpclient_auth.errors import ConfigurationError, MandateDenied, PrincipalMismatch, SessionClosed
from mcpclient_auth.factory import multi_run_client_factory
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import acting_for
from tests.support.hooks_env import Env, entries, hr_server

pytestmark = pytest.mark.e2e

SESSION_METHODS = ("initialize", "notifications/initialized", "tools/list")


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with hr_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_guard(env: Env) -> None:
    env.state.reset()


def session_methods(path: Path) -> Counter[str]:
    return Counter(str(e.meta.get("method")) for e in entries(path, kind="ect") if "tool" not in e.meta)


def tool_calls(path: Path) -> list[str]:
    return [str(e.meta["tool"]) for e in entries(path, kind="ect") if "tool" in e.meta]


def shared_client(env: Env, *interceptors: object) -> MultiServerMCPClient:
    """One client for several runs: the run is whichever is selected when a session is opened."""
    conn = {"transport": "streamable_http", "url": env.url, "httpx_client_factory": multi_run_client_factory()}
    return MultiServerMCPClient({"hr": conn}, tool_interceptors=list(interceptors))  # type: ignore[dict-item,arg-type]


async def test_held_session_sends_setup_once_then_only_tool_calls(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    async with env.run(path) as run:
        client = MultiServerMCPClient({"hr": connection(run)})  # type: ignore[dict-item]
        async with run_tools(run, client, narrow=True) as tools:
            by_name = {t.name: t for t in tools}
            assert "get_employee_salary" not in by_name  # narrowed to the mandate
            for query in ("holidays", "pension", "parking"):
                assert query in str(await by_name["search"].ainvoke({"query": query}))
            assert "Lisbon" in str(await by_name["get_office_locations"].ainvoke({}))

    assert env.state.rejected == 0, env.state.errors()
    assert tool_calls(path) == ["search", "search", "search", "get_office_locations"]
    # One session: initialize, notifications/initialized and one tools/list — not one set per call.
    assert session_methods(path) == Counter(dict.fromkeys(SESSION_METHODS, 1))
    assert sum(1 for r in env.state.requests if b'"initialize"' in r.body) == 1
    assert verify_ledger(path, env.trust).ok


async def test_per_call_sessions_stay_available_and_open_a_session_per_call(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    async with env.run(path) as run:
        client = MultiServerMCPClient({"hr": connection(run)})  # type: ignore[dict-item]
        async with run_tools(run, client, sessions="per-call") as tools:
            search = next(t for t in tools if t.name == "search")
            for query in ("holidays", "pension"):
                assert query in str(await search.ainvoke({"query": query}))

    assert tool_calls(path) == ["search", "search"]
    # the listing session plus one session per call
    assert session_methods(path)["initialize"] == 3
    assert verify_ledger(path, env.trust).ok


async def test_two_runs_hold_their_own_sessions_on_one_shared_client(env: Env, tmp_path: Path) -> None:
    alice_path, bob_path = tmp_path / "alice.jsonl", tmp_path / "bob.jsonl"
    alice = env.run(alice_path, principal=Principal(id="alice"))
    bob = env.run(bob_path, principal=Principal(id="bob"), capabilities=["mcp.get_office_locations"])
    client = shared_client(env, RefusalInterceptor())
    async with alice, bob, run_tools(alice, client) as alice_tools, run_tools(bob, client) as bob_tools:
        a = {t.name: t for t in alice_tools}
        b = {t.name: t for t in bob_tools}
        # interleaved and concurrent: each call goes out on its own run's session, for its own run
        results = await asyncio.gather(
            a["search"].ainvoke({"query": "one"}),
            b["get_office_locations"].ainvoke({}),
            a["get_office_locations"].ainvoke({}),
            b["get_office_locations"].ainvoke({}),
        )
        assert "one" in str(results[0]) and "Lisbon" in str(results[1])
        refused = await b["search"].ainvoke({"query": "x"})  # bob's mandate has no search
        assert "mandate_denied" in str(refused)

    assert env.state.rejected == 0, env.state.errors()
    assert sorted(tool_calls(alice_path)) == ["get_office_locations", "search"]
    assert tool_calls(bob_path) == ["get_office_locations", "get_office_locations"]
    assert [d.meta["principal"] for d in entries(bob_path, kind="denial")] == ["bob"]
    # What the server verified: every tool call's ECT names the run whose tool it was.
    wid_of_tool = Counter((e.wid, e.exec_act) for e in env.state.ects if not e.exec_act.startswith("mcp.rpc."))
    assert wid_of_tool == Counter(
        {
            (alice.id, "mcp.search"): 1,
            (alice.id, "mcp.get_office_locations"): 1,
            (bob.id, "mcp.get_office_locations"): 2,
        }
    )
    for path in (alice_path, bob_path):
        assert session_methods(path) == Counter(dict.fromkeys(SESSION_METHODS, 1))
        assert verify_ledger(path, env.trust).ok


async def test_a_held_tool_called_for_another_run_or_user_is_refused_before_sending(
    env: Env, tmp_path: Path
) -> None:
    alice_path, bob_path = tmp_path / "alice.jsonl", tmp_path / "bob.jsonl"
    alice = env.run(alice_path, principal=Principal(id="alice"))
    bob = env.run(bob_path, principal=Principal(id="bob"))
    runs = {"alice": alice, "bob": bob}
    # A selector that picks by the graph's runtime, and a held session opened for alice: mcp 1.x would
    # send bob's call with alice's mandate (the session's context is alice's), so it must be refused.
    selector = RunSelector(lambda runtime: runs[runtime["user"]], principal=lambda runtime: runtime["user"])
    selected = shared_client(env, selector, RefusalInterceptor(raise_refusals=True))
    plain = shared_client(env, RefusalInterceptor())
    async with alice, bob, run_tools(alice, selected) as tools, run_tools(alice, plain) as plain_tools:
        search = next(t for t in tools if t.name == "search")
        assert "ok" in str(await search.coroutine(runtime={"user": "alice"}, query="ok"))  # type: ignore[misc]
        sent = len(env.state.requests)
        with pytest.raises(PrincipalMismatch):
            await search.coroutine(runtime={"user": "bob"}, query="secret")  # type: ignore[misc]
        # a selection made by the caller instead of an interceptor: refused the same way
        plain_search = next(t for t in plain_tools if t.name == "search")
        with use_run(bob):  # the model reads the refusal as a tool error
            assert "principal_mismatch" in str(await plain_search.ainvoke({"query": "secret"}))
        with acting_for("bob"), pytest.raises(ToolException, match="principal_mismatch"):
            await plain_search.coroutine(query="secret")  # type: ignore[misc]
        assert len(env.state.requests) == sent  # nothing left the client
        assert not any(b"secret" in r.body for r in env.state.requests)

    denials = entries(alice_path, kind="denial")
    assert [(d.meta["tool"], d.meta["code"], d.meta["principal"]) for d in denials] == [
        ("search", "principal_mismatch", "alice")
    ] * 3
    assert entries(bob_path, kind="ect") == []
    assert verify_ledger(alice_path, env.trust).ok


async def test_tools_outlive_their_block_only_as_a_clear_error(env: Env, tmp_path: Path) -> None:
    async with env.run(tmp_path / "ledger.jsonl") as run:
        async with run_tools(run) as tools:  # default client: one server at the run's endpoint
            search = next(t for t in tools if t.name == "search")
        with pytest.raises(SessionClosed):
            await search.ainvoke({"query": "late"})


async def test_opening_for_someone_else_is_refused_and_options_are_checked(env: Env, tmp_path: Path) -> None:
    async with env.run(tmp_path / "ledger.jsonl", principal=Principal(id="alice")) as run:
        with acting_for("mallory"), pytest.raises(PrincipalMismatch):
            async with run_tools(run):
                pass
        with pytest.raises(ConfigurationError, match="sessions"):
            async with run_tools(run, sessions="sometimes"):  # type: ignore[arg-type]
                pass
        with pytest.raises(ConfigurationError, match="'crm'"):
            async with run_tools(run, servers=["crm"]):
                pass
    denial = entries(tmp_path / "ledger.jsonl", kind="denial")
    assert [d.meta["code"] for d in denial] == ["principal_mismatch"]


async def test_refusals_on_a_held_session_keep_it_usable(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    async with env.run(path, capabilities=["mcp.search"]) as run:
        client = MultiServerMCPClient(
            {"hr": connection(run)},  # type: ignore[dict-item]
            tool_interceptors=[RefusalInterceptor(raise_refusals=True)],
        )
        async with run_tools(run, client) as tools:
            by_name = {t.name: t for t in tools}
            with pytest.raises(MandateDenied):
                await by_name["get_employee_salary"].ainvoke({"employee": "bob"})
            assert "after" in str(await by_name["search"].ainvoke({"query": "after"}))
    assert tool_calls(path) == ["search"]
    assert session_methods(path)["initialize"] == 1
