"""Stack B: ``langchain_mcp.run_tools`` holds one MCP session per run (issue 18), or opens one per call.

Against fastmcp 4 behind the SDK's verifiers, in ``legacy`` mode (initialize handshake, session id,
DELETE) and ``stateless`` mode (2026-07-28: ``server/discover``, no session).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcpclient_auth.adapters.langchain_mcp import run_tools, signed_client
from mcpclient_auth.ledger import verify_ledger
from tests.stack_b.signing import Actors, SignedEnv, dag_server, entries, verified_server

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::langchain_core._api.LangChainBetaWarning")]

HANG_GUARD = 60  # seconds; only stops a hung test, never asserts on speed
SETUP = {"legacy": ("POST", "initialize", None), "stateless": ("POST", "server/discover", None)}


@pytest.fixture(scope="module")
def actors() -> Actors:
    return Actors.generate("alice", "bob")


@pytest.fixture(scope="module")
def servers(actors: Actors, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SignedEnv]]:
    directory = tmp_path_factory.mktemp("servers")
    (directory / "stateless").mkdir()
    (directory / "legacy").mkdir()
    with (
        verified_server("stateless", directory / "stateless", actors, server=dag_server()) as stateless,
        verified_server("legacy", directory / "legacy", actors, server=dag_server()) as legacy,
    ):
        yield {"stateless": stateless, "legacy": legacy}


@pytest.mark.parametrize("server_mode", ["legacy", "stateless"])
async def test_held_session_sets_up_once_per_call_sessions_every_time(
    servers: dict[str, SignedEnv], server_mode: str, tmp_path: Path
) -> None:
    env = servers[server_mode]
    counts = {}
    for mode in ("held", "per-call"):
        env.server.log.clear()
        path = tmp_path / f"{mode}.jsonl"
        run = env.run(path)
        async with (
            asyncio.timeout(HANG_GUARD),
            run,
            run_tools(run, sessions=mode, narrow=True) as tools,  # type: ignore[arg-type]
        ):
            by_name = {t.name: t for t in tools}
            assert "get_employee_salary" not in by_name
            for query in ("one", "two", "three"):
                assert query in str(await by_name["search"].ainvoke({"query": query}))
        steps = env.server.log.steps()
        counts[mode] = steps.count(SETUP[server_mode])
        assert len(env.server.log.tool_calls()) == 3
        assert env.rejected() == []
        assert verify_ledger(path, env.actors.trust).ok
        assert [e.meta.get("tool") for e in entries(path, kind="ect") if e.meta.get("tool")] == ["search"] * 3
    assert counts == {"held": 1, "per-call": 1 + 3}  # the listing's setup, then one per call


async def test_held_sessions_for_two_users_on_a_legacy_server(
    servers: dict[str, SignedEnv], tmp_path: Path
) -> None:
    """A stateful session belongs to the principal who opened it: one held session per user."""
    env = servers["legacy"]
    env.server.log.clear()
    alice = env.run(tmp_path / "alice.jsonl", user="alice")
    bob = env.run(tmp_path / "bob.jsonl", user="bob")
    async with (
        asyncio.timeout(HANG_GUARD),
        alice,
        bob,
        run_tools(alice, signed_client(alice)) as alice_tools,
        run_tools(bob, signed_client(bob)) as bob_tools,
    ):
        a = {t.name: t for t in alice_tools}
        b = {t.name: t for t in bob_tools}
        await asyncio.gather(a["search"].ainvoke({"query": "a"}), b["search"].ainvoke({"query": "b"}))
        await asyncio.gather(b["get_office_locations"].ainvoke({}), a["get_office_locations"].ainvoke({}))
    assert env.rejected() == []
    assert env.server.log.steps().count(SETUP["legacy"]) == 2
    for user, run in (("alice", alice), ("bob", bob)):
        filed = [e for e in env.server_entries("ect") if e.run == run.id and e.meta.get("method") == "tools/call"]
        assert sorted(e.meta["tool"] for e in filed) == ["get_office_locations", "search"]
        assert {e.meta["principal"] for e in filed} == {user}
        assert verify_ledger(Path(run.ledger.path), env.actors.trust).ok
