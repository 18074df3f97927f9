"""Per-user isolation and service credentials, end to end (issue [authz], acceptance 5): one client
factory serving 20 users concurrently, runs refusing other principals, and discovery sessions that
carry a client-credentials service token while tool calls carry the user's own token.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import ToolException
from langchain_mcp_adapters.client import MultiServerMCPClient
from mcp.shared.exceptions import McpError

from mcpclient_auth.adapters.langchain_mcp_adapters import RefusalInterceptor, RunSelector
from mcpclient_auth.adapters.mcp_v1 import open_session
from mcpclient_auth.authz import ClientCredentials
from mcpclient_auth.errors import PrincipalMismatch
from mcpclient_auth.factory import multi_run_client_factory
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.refusal import refusal_from_error
from mcpclient_auth.run import AgentRun, acting_for
from tests.support.authz_env import CLIENT_ID, CLIENT_SECRET, AuthzEnv, authz_server
from tests.support.hooks_env import entries

pytestmark = pytest.mark.e2e

USERS = [f"user{i:02d}" for i in range(20)]
CALLS_PER_USER = 10


@pytest.fixture(scope="module")
def env() -> Iterator[AuthzEnv]:
    with authz_server(USERS) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(env: AuthzEnv) -> None:
    env.reset()


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


async def failed_setup(run: AgentRun) -> list[BaseException]:
    try:
        async with open_session(run):
            pass
    except BaseException as exc:  # returned for the caller's asserts
        return leaves(exc)
    raise AssertionError("the session opened")


_SSL = ssl.create_default_context()


def client_for(
    env: AuthzEnv, runs: dict[str, AgentRun], *, principal: Any = None
) -> MultiServerMCPClient:
    factory = multi_run_client_factory()

    def per_call_factory(**options: Any) -> Any:
        # The adapters open a client per tool call; httpx would build (and load CAs into) a new SSL
        # context for each, ~25 ms of CPU apiece. Share one, as a long-running agent should.
        return factory(verify=_SSL, **options)

    connection: dict[str, Any] = {
        "transport": "streamable_http",
        "url": env.url,
        "httpx_client_factory": per_call_factory,
    }
    return MultiServerMCPClient(
        {"hr": connection},  # type: ignore[dict-item]
        tool_interceptors=[
            RunSelector(lambda runtime: runs[runtime["user"]], principal=principal),
            RefusalInterceptor(),
        ],
    )


async def test_20_users_x_10_concurrent_calls_each_carry_their_own_token_and_mandate(
    env: AuthzEnv, tmp_path: Path
) -> None:
    source = env.exchange(scopes=["mcp.read"])  # one source (and cache) for everyone
    runs = {user: env.run(user, tmp_path / f"{user}.jsonl", token_source=source) for user in USERS}
    client = client_for(env, runs)
    with runs[USERS[0]].activate():  # listing tools needs a run too
        search: Any = next(t for t in await client.get_tools() if t.name == "search")

    async def call(user: str, i: int) -> Any:
        # the adapters hand LangGraph's runtime to interceptors; a session is opened per call
        return await search.coroutine(runtime={"user": user}, query=f"{user}/{i}")

    results = await asyncio.gather(*(call(user, i) for user in USERS for i in range(CALLS_PER_USER)))
    for run in runs.values():
        await run.aclose()

    assert all("results for" in str(r) for r in results)
    calls = env.gate.calls("search")
    assert len(calls) == len(USERS) * CALLS_PER_USER
    for seen in calls:  # whose call it was (the argument) == whose token == whose mandate
        owner = seen.arguments["query"].split("/")[0]
        assert (seen.token_user, seen.mandate_issuer) == (owner, owner)
    # every request of every session, not only tool calls: token user and mandate issuer agree
    signed = [s for s in env.gate.seen if s.token_user is not None]
    assert signed and all(s.token_user == s.mandate_issuer for s in signed)
    assert Counter(c.token_user for c in calls) == dict.fromkeys(USERS, CALLS_PER_USER)
    assert env.idp.count == len(USERS)  # one exchange per user, shared by that user's 10 sessions
    assert sorted(r.field("subject_token") for r in env.idp.requests) == sorted(
        env.principal(u).subject_token for u in USERS
    )
    assert env.state.rejected == 0, env.state.errors()
    for user in (USERS[0], USERS[-1]):
        ledger = tmp_path / f"{user}.jsonl"
        tools = [e for e in entries(ledger, kind="ect") if e.meta.get("tool") == "search"]
        assert len(tools) == CALLS_PER_USER and {e.meta["principal"] for e in tools} == {user}
        assert verify_ledger(ledger, env.trust).ok


async def test_a_run_refuses_a_call_made_for_another_principal(env: AuthzEnv, tmp_path: Path) -> None:
    source = env.exchange()
    alice = env.run(USERS[0], tmp_path / "alice.jsonl", token_source=source)
    runs = {"mixed-up": alice}
    client = client_for(env, runs)
    with alice.activate():
        search: Any = next(t for t in await client.get_tools() if t.name == "search")
    env.gate.seen.clear()
    # the application acts for user01, but a buggy selector hands it user00's run: already the
    # session's initialize is refused, so the per-call session cannot even open
    with acting_for(USERS[1]), pytest.raises(BaseException) as info:
        await search.coroutine(runtime={"user": "mixed-up"}, query="not yours")
    refusals = [refusal_from_error(e) for e in leaves(info.value) if isinstance(e, McpError)]
    assert [r.code for r in refusals if r is not None] == ["principal_mismatch"]
    # a plain session: mcp 1.x sends from tasks that copied the context when the session opened,
    # so the declaration applies per session; the refusal comes back typed
    with acting_for(USERS[1]):
        (error,) = [leaf for leaf in await failed_setup(alice)]
    assert isinstance(error, PrincipalMismatch) and error.details["requested"] == USERS[1]
    with acting_for(alice.principal):
        async with open_session(alice) as session:
            assert not (await session.call_tool("search", {"query": "mine"})).isError
    await alice.aclose()
    assert [c.arguments["query"] for c in env.gate.calls()] == ["mine"]
    denials = entries(tmp_path / "alice.jsonl", kind="denial")
    assert [(d.meta["code"], d.meta["principal"]) for d in denials] == [("principal_mismatch", USERS[0])] * 2
    assert [d.meta["method"] for d in denials] == ["initialize", "initialize"]


async def test_run_selector_declares_the_user_from_the_runtime_and_refuses_a_mixed_up_run(
    env: AuthzEnv, tmp_path: Path
) -> None:
    alice = env.run(USERS[0], tmp_path / "alice.jsonl", token_source=env.exchange())
    # a buggy selector that always returns alice's run; the user comes from LangGraph's runtime
    client = client_for(env, {USERS[0]: alice, USERS[1]: alice}, principal=lambda runtime: runtime["user"])
    with alice.activate():
        search: Any = next(t for t in await client.get_tools() if t.name == "search")
    env.gate.seen.clear()
    with pytest.raises(BaseException) as info:
        await search.coroutine(runtime={"user": USERS[1]}, query="not yours")
    refusals = [refusal_from_error(e) for e in leaves(info.value) if isinstance(e, McpError)]
    assert [r.code for r in refusals if r is not None] == ["principal_mismatch"]
    assert env.gate.calls() == []  # nothing of user01's call reached the server
    assert "results for" in str(await search.coroutine(runtime={"user": USERS[0]}, query="mine"))
    await alice.aclose()
    assert [c.arguments["query"] for c in env.gate.calls()] == ["mine"]


async def test_discovery_sessions_use_the_service_token_and_tool_calls_the_users(
    env: AuthzEnv, tmp_path: Path
) -> None:
    service = ClientCredentials(
        env.idp.token_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, scopes=["mcp.tools.list"]
    )
    user = USERS[2]
    path = tmp_path / "l.jsonl"
    run = env.run(user, path, token_source=env.exchange(scopes=["mcp.read"]), discovery_token_source=service)
    client = client_for(env, {user: run})
    with run.discovery():
        tools: dict[str, Any] = {t.name: t for t in await client.get_tools()}
        listed = len(env.gate.seen)
        # a tool call in a discovery session would act with the service token: refused locally
        with pytest.raises(ToolException, match="principal_mismatch"):
            await tools["search"].coroutine(runtime={"user": user}, query="as the service")
    discovery, rest = env.gate.seen[:listed], env.gate.seen[listed:]
    result = await tools["search"].coroutine(runtime={"user": user}, query="as the user")
    await run.aclose()

    assert "results for" in str(result)
    assert {s.rpc_method for s in discovery} >= {"initialize", "tools/list"}
    assert {s.token_user for s in discovery} == {CLIENT_ID}  # the service token, on every request
    assert all(s.rpc_method != "tools/call" for s in rest[: len(rest)])  # the refused call never left
    calls = env.gate.calls("search")
    assert [(c.token_user, c.arguments["query"]) for c in calls] == [(user, "as the user")]
    # no MCP session ever carried two different credentials
    per_session: dict[str, set[str | None]] = {}
    for seen in env.gate.seen:
        if seen.session_id is not None:
            per_session.setdefault(seen.session_id, set()).add(seen.token_user)
    assert len(per_session) >= 2 and all(len(users) == 1 for users in per_session.values())
    grants = sorted(r.field("grant_type") for r in env.idp.requests)
    assert grants == ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
    assert verify_ledger(path, env.trust).ok
