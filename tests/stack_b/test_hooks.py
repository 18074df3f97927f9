"""Stack-B end-to-end: the request-path hooks on httpx2, through mcp 2.x and ``langchain.mcp``.

Every server here is fastmcp 4 behind two independent verifiers from the SDK (``RequestVerifier`` in
the recording guard, the reference ``McpAuthMiddleware`` inside it, see ``signing.py``), in
``stateless`` mode (the 2026-07-28 protocol: ``mcp-method`` / ``mcp-name`` headers, no session) and in
``legacy`` mode (the initialize handshake, ``mcp-session-id``, the SSE GET and the DELETE). Signed runs
must produce exactly the unsigned request sequences pinned in ``support.py`` (the hooks add headers,
never requests) and every request must be accepted by both verifiers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from langchain.agents import create_agent
from langchain_core._api import LangChainBetaWarning
from langchain_core.messages import HumanMessage, ToolMessage
from starlette.middleware import Middleware

from mcpclient_auth._hooks import library_for, use_run
from mcpclient_auth.adapters.langchain_mcp import RunMiddleware, signed_client
from mcpclient_auth.adapters.mcp_v2 import RunClient, open_client
from mcpclient_auth.errors import MandateDenied, PrincipalMismatch, RunClosed
from mcpclient_auth.factory import httpx2_client_factory, httpx_client_factory, install
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.server import McpAuthMiddleware
from tests.stack_b.signing import (
    AUDIENCE,
    SIGNED_HEADERS,
    Actors,
    SignedEnv,
    dag_server,
    ect_of,
    entries,
    verified_server,
)
from tests.stack_b.support import (
    AGENT_BASELINE,
    MODERN_VERSION,
    OFFICES,
    PLAIN_BASELINE,
    UserContext,
    plain_workload,
    running_server,
    scripted_model,
    tool_call,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", LangChainBetaWarning)
    from langchain.mcp import MCPAdapter

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::langchain_core._api.LangChainBetaWarning")]

HANG_GUARD = 60  # seconds; only stops a hung test, never asserts on speed
_OUR_HEADERS = ("signature", "signature-input", "act-mandate", "execution-context", "content-digest")


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


def fresh(servers: dict[str, SignedEnv], mode: str) -> SignedEnv:
    env = servers[mode]
    env.server.log.clear()
    return env


def assert_all_verified(env: SignedEnv, *, refused_discover: bool = False) -> None:
    """Every request reached the app (no 401/403), signed; the guard's verifier saw each signature."""
    assert env.rejected() == []
    for request in env.requests():
        if refused_discover and request.rpc_method == "server/discover":
            assert request.status == 400  # the legacy server's answer to 2026-era requests
            continue
        assert request.status is not None and request.status < 400, request.step
        assert request.verified is not None, request.step
        assert all(request.header(name) for name in SIGNED_HEADERS), request.step


def server_ects_for(env: SignedEnv, run_id: str) -> set[str]:
    return {e.jti for e in env.server_entries("ect") if e.run == run_id and e.jti}


# ------------------------------------------------------------------------------------------ plain client


@pytest.mark.parametrize(("server_mode", "client_mode"), sorted(PLAIN_BASELINE))
async def test_plain_client_signed_verified_and_recorded(
    servers: dict[str, SignedEnv], server_mode: str, client_mode: str, tmp_path: Path
) -> None:
    env = fresh(servers, server_mode)
    path = tmp_path / "client.jsonl"
    async with asyncio.timeout(HANG_GUARD), env.run(path) as run, open_client(run, mode=client_mode) as client:
        result = await plain_workload(client)  # type: ignore[arg-type]

    assert result.offices == {"result": OFFICES} and result.echo == "hello" and len(result.progress) == 3
    posts, gets = PLAIN_BASELINE[(server_mode, client_mode)]
    assert env.server.log.steps(methods=["POST", "DELETE"]) == posts  # no request added or lost
    assert env.server.log.count("GET") == gets
    assert_all_verified(env, refused_discover=(server_mode, client_mode) == ("legacy", "auto"))

    # The mcp profile covers the mcp-method / mcp-name headers that mcp 2.x sets (2026-07-28) and the
    # session id (legacy): a proxy cannot re-route a signed call to another tool.
    for request in env.requests():
        if request.verified is None:  # only the legacy server's refused probe (assert_all_verified)
            continue
        covered = set(request.verified.covered)
        if request.header("mcp-method"):
            assert "mcp-method" in covered
        if request.header("mcp-name"):
            assert "mcp-name" in covered
        if request.header("mcp-session-id"):
            assert "mcp-session-id" in covered
    if result.protocol_version == MODERN_VERSION:
        assert any(r.header("mcp-name") == "search" for r in env.requests())

    # Client ledger: one ect + one outcome per request that carried a JSON-RPC call; the reference
    # middleware accepted (and filed) exactly the client's ECTs, except the legacy server's refused probe.
    ects = entries(path, kind="ect")
    calls = [r for r in env.requests() if r.rpc_method is not None]
    assert len(ects) == len(calls)
    assert len(entries(path, kind="response")) == len(ects)
    accepted = {e.jti for e in ects} - {
        ect_of(e).jti for e in ects if e.meta.get("method") == "server/discover" and server_mode == "legacy"
    }
    assert server_ects_for(env, run.id) == accepted
    # Sequential tool calls chain: each one's pred is the previous tool call.
    tool_ects = [ect_of(e) for e in ects if e.meta.get("method") == "tools/call"]
    assert [t.pred for t in tool_ects] == [[run.id]] + [[t.jti] for t in tool_ects[:-1]]
    assert verify_ledger(path, env.actors.trust).ok


async def test_stack_b_ledger_verifies_with_the_cli(
    servers: dict[str, SignedEnv], actors: Actors, tmp_path: Path
) -> None:
    env = fresh(servers, "stateless")
    path = tmp_path / "client.jsonl"
    async with asyncio.timeout(HANG_GUARD), env.run(path) as run, open_client(run) as client:
        await client.call_tool("search", {"query": "q"})
    cli = Path(sys.executable).parent / "mcpclient-auth"
    jwks = actors.jwks_file(tmp_path)
    done = subprocess.run(
        [str(cli), "ledger", "verify", str(path), "--jwks", str(jwks)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout
    # Tampering is caught by the same command: the verification is real.
    lines = path.read_bytes().splitlines(keepends=True)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_bytes(b"".join(lines[:2] + lines[3:]))
    failed = subprocess.run(
        [str(cli), "ledger", "verify", str(tampered), "--jwks", str(jwks)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )
    assert failed.returncode == 1


# ------------------------------------------------------------------------------------------ DAG


@pytest.mark.parametrize("server_mode", ["stateless", "legacy"])
async def test_three_parallel_calls_then_fan_in(
    servers: dict[str, SignedEnv], server_mode: str, tmp_path: Path
) -> None:
    env = fresh(servers, server_mode)
    path = tmp_path / "client.jsonl"
    group = f"dag-{server_mode}-{tmp_path.name}"
    async with asyncio.timeout(HANG_GUARD), env.run(path) as run, open_client(run) as client:
        # gather_point answers only once all three arrived: the three are provably concurrent.
        counts = await asyncio.gather(
            *(client.call_tool("gather_point", {"group": group, "size": 3}) for _ in range(3))
        )
        await client.call_tool("search", {"query": "fan-in"})

    assert sorted(c.structured_content["result"] for c in counts) == [3, 3, 3]
    tools = [ect_of(e) for e in entries(path, kind="ect") if e.meta.get("method") == "tools/call"]
    parallel, fan_in = tools[:3], tools[3]
    assert all(t.pred == [run.id] for t in parallel)
    assert sorted(fan_in.pred) == sorted(t.jti for t in parallel)
    assert_all_verified(env, refused_discover=server_mode == "legacy")
    assert verify_ledger(path, env.actors.trust).ok


# ------------------------------------------------------------------------------------------ fail closed


@pytest.mark.parametrize("server_mode", ["stateless", "legacy"])
@pytest.mark.parametrize("client_mode", ["auto", "legacy"])
async def test_tool_outside_mandate_is_refused_locally(
    servers: dict[str, SignedEnv], server_mode: str, client_mode: str, tmp_path: Path
) -> None:
    env = fresh(servers, server_mode)
    path = tmp_path / "client.jsonl"
    run = env.run(path, capabilities=["mcp.search"])
    async with asyncio.timeout(HANG_GUARD), run, open_client(run, mode=client_mode) as client:
        assert isinstance(client, RunClient)
        with pytest.raises(MandateDenied) as denied:
            await client.call_tool("get_employee_salary", {"employee": "bob"})
        after = await client.call_tool("search", {"query": "still alive"})  # the session survived

    assert denied.value.code == "mandate_denied"
    assert after.structured_content == {"result": "results for still alive"}
    assert [r for r in env.requests() if r.tool == "get_employee_salary"] == []  # nothing left
    [denial] = entries(path, kind="denial")
    assert denial.meta["tool"] == "get_employee_salary" and denial.meta["code"] == "mandate_denied"
    assert denial.meta["action"] == "mcp.get_employee_salary"
    assert not any(e.meta.get("tool") == "get_employee_salary" for e in entries(path, kind="ect"))
    assert_all_verified(env, refused_discover=(server_mode, client_mode) == ("legacy", "auto"))
    assert verify_ledger(path, env.actors.trust).ok


# ------------------------------------------------------------------------------------------ scope guard


async def test_other_origins_and_paths_get_no_headers(servers: dict[str, SignedEnv], tmp_path: Path) -> None:
    env = fresh(servers, "stateless")
    path = tmp_path / "client.jsonl"
    with running_server("stateless") as other:  # another origin (its own port), unsigned server
        async with asyncio.timeout(HANG_GUARD), env.run(path) as run:
            client = httpx2_client_factory(run)()
            async with client:
                await client.post(other.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
                await client.get(env.server.base_url + "/.well-known/oauth-protected-resource/mcp")
    [foreign] = other.log.entries()
    [discovery] = env.requests()
    for request in (foreign, discovery):
        assert not any(request.header(name) for name in _OUR_HEADERS), request.url
    assert entries(path, kind="ect") == [] and entries(path, kind="denial") == []


async def test_a_run_s_httpx2_client_refuses_while_another_run_is_selected(
    servers: dict[str, SignedEnv], tmp_path: Path
) -> None:
    """Review 3, b2: a client built for run A, used inside ``use_run(B)``, must not send A's endpoint an
    unsigned call — refused (``principal_mismatch``, a denial in A's ledger), nothing reaches it."""
    env = fresh(servers, "stateless")
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    with running_server("stateless") as other:
        async with (
            asyncio.timeout(HANG_GUARD),
            env.run(tmp_path / "a.jsonl") as run,
            env.run(tmp_path / "b.jsonl", user="bob", endpoint=other.url) as other_run,
            httpx2.AsyncClient() as client,
        ):
            install(client, run)
            with use_run(other_run), pytest.raises(PrincipalMismatch):
                await client.post(env.url, json=listing)
    assert env.requests() == [] and other.log.entries() == []
    assert [e.meta["code"] for e in entries(tmp_path / "a.jsonl", kind="denial")] == ["principal_mismatch"]


# ------------------------------------------------------------------------------------------ httpx2 details


async def test_install_on_existing_httpx2_clients(servers: dict[str, SignedEnv], tmp_path: Path) -> None:
    """install() dispatches on the client's library; async and sync httpx2 clients, local answers."""
    env = fresh(servers, "stateless")
    path = tmp_path / "client.jsonl"
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"}
    salary = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "get_employee_salary", "arguments": {"employee": "bob"}},
    }
    async with asyncio.timeout(HANG_GUARD), env.run(path) as run:
        async with httpx2.AsyncClient() as client:
            hooks = install(client, run)
            assert hooks.library is library_for(client) and hooks.library.name == "httpx2"
            response = await client.post(env.url, json=listing, headers=headers)
            await response.aread()
            # httpx2 reads elapsed from the stream: our hashing wrapper must pass it through.
            assert response.elapsed.total_seconds() >= 0
            with pytest.raises(MandateDenied):
                await client.post(env.url, json=salary, headers=headers)
        with httpx2.Client() as sync_client:
            run.install(sync_client, answer_locally=True)
            local = sync_client.post(env.url, json=salary, headers=headers)
            sync_response = sync_client.post(env.url, json=listing, headers=headers)
            assert sync_response.status_code == 200
    assert local.status_code == 200 and local.json()["error"]["data"]["code"] == "mandate_denied"
    assert local.headers["x-mcpclient-auth-refusal"] == "mandate_denied"
    assert [r.step for r in env.requests()] == [("POST", "tools/list", None)] * 2
    assert_all_verified(env)
    outcomes = entries(path, kind="response")
    assert [e.meta["status"] for e in outcomes] == [200, 200]
    assert outcomes[0].meta["bytes"] == len(response.content)
    assert len(entries(path, kind="denial")) == 2
    assert verify_ledger(path, env.actors.trust).ok


# ------------------------------------------------------------------------------------------ LangChain


@pytest.mark.parametrize("server_mode", ["stateless", "legacy"])
async def test_langchain_agents_for_two_users_two_tool_calls_each(
    servers: dict[str, SignedEnv], server_mode: str, tmp_path: Path
) -> None:
    """One MCPAdapter, one multi-run fastmcp client; the middleware picks each user's run per call.

    Stateless: the adapter's session is held open and shared by both users' concurrent agents (each
    2026-07-28 request stands alone). Legacy: not held, so every tool call opens its own session in
    the selected user's context (a stateful session belongs to the principal who opened it).
    """
    env = fresh(servers, server_mode)
    held = server_mode == "stateless"
    runs = {user: env.run(tmp_path / f"{user}.jsonl", user=user) for user in ("alice", "bob")}
    middleware = RunMiddleware(lambda runtime: runs[runtime.context.user])
    adapter = MCPAdapter(signed_client(None, env.url))

    def agent() -> Any:
        model = scripted_model(
            [tool_call("search", {"query": "vacation"}, call_id="c1")],
            [tool_call("get_office_locations", call_id="c2")],
            "done",
        )
        return create_agent(model, tools, context_schema=UserContext, middleware=[middleware])

    async with asyncio.timeout(HANG_GUARD), runs["alice"], runs["bob"]:
        with use_run(runs["alice"]):  # the adapter's own tools/list session acts for alice
            tools = await adapter.list_tools()
        env.server.log.clear()
        if held:
            # The held session's setup requests (discover) act for alice; each tool call for its user.
            with use_run(runs["alice"]):
                await adapter.__aenter__()
            try:
                results = await asyncio.gather(
                    *(agent().ainvoke({"messages": [HumanMessage("q")]}, context=UserContext(u)) for u in runs)
                )
            finally:
                await adapter.__aexit__(None, None, None)
        else:
            results = [
                await agent().ainvoke({"messages": [HumanMessage("q")]}, context=UserContext(u)) for u in runs
            ]

    for result in results:
        answers = [m for m in result["messages"] if isinstance(m, ToolMessage)]
        assert [m.status for m in answers] == ["success", "success"]
        assert "Berlin" in str(answers[1].content)
    assert_all_verified(env, refused_discover=server_mode == "legacy")
    if held:  # one session (one discover) served both users' four tool calls
        assert env.server.log.steps().count(("POST", "server/discover", None)) == 1
        assert len(env.server.log.tool_calls()) == 4
    else:  # each user's sequence is the unsigned per-call-session baseline
        steps, gets = AGENT_BASELINE[("legacy", False)]
        assert env.server.log.steps(methods=["POST", "DELETE"]) == steps * 2
        assert env.server.log.count("GET") == gets * 2
    # The server saw each user's tool calls under that user's mandate, and nobody else's.
    for user, run in runs.items():
        filed = [e for e in env.server_entries("ect") if e.run == run.id and e.meta.get("method") == "tools/call"]
        assert sorted(e.meta["tool"] for e in filed) == ["get_office_locations", "search"]
        assert {e.meta["principal"] for e in filed} == {user}
        tools_called = [ect_of(e) for e in entries(Path(run.ledger.path), kind="ect", run=run.id)]
        tool_ects = [t for t in tools_called if t.exec_act in ("mcp.search", "mcp.get_office_locations")]
        assert [t.exec_act for t in tool_ects] == ["mcp.search", "mcp.get_office_locations"]
        assert tool_ects[1].pred == [tool_ects[0].jti]  # the agent's two calls chain
        assert verify_ledger(Path(run.ledger.path), env.actors.trust).ok


async def test_langchain_refusal_becomes_an_error_tool_message(
    servers: dict[str, SignedEnv], tmp_path: Path
) -> None:
    env = fresh(servers, "stateless")
    path = tmp_path / "client.jsonl"
    wider = env.run(tmp_path / "catalogue.jsonl", capabilities=["mcp.search", "mcp.get_employee_salary"])
    async with asyncio.timeout(HANG_GUARD), env.run(path, capabilities=["mcp.search"]) as run, wider:
        adapter = MCPAdapter(signed_client(None, env.url))
        # The server lists to each mandate only what it grants: the catalogue comes from a wider
        # mandate, so the model is offered a tool this run may not call, and calls it.
        with use_run(wider):
            tools = await adapter.list_tools()
        model = scripted_model(
            [tool_call("get_employee_salary", {"employee": "bob"}, call_id="c1")],
            [tool_call("search", {"query": "policy"}, call_id="c2")],
            "done",
        )
        agent = create_agent(model, tools, middleware=[RunMiddleware(lambda _runtime: run)])
        result = await agent.ainvoke({"messages": [HumanMessage("salary?")]})
    refused, found = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert refused.status == "error" and "mandate_denied" in str(refused.content)
    assert found.status == "success"
    assert [r for r in env.requests() if r.tool == "get_employee_salary"] == []
    assert [e.meta["tool"] for e in entries(path, kind="denial")] == ["get_employee_salary"]
    assert_all_verified(env)


# ------------------------------------------------------------------------------------------ both stacks


async def test_one_verifying_server_accepts_both_stacks(
    servers: dict[str, SignedEnv], tmp_path: Path
) -> None:
    """Acceptance 2, cross-stack: the reference middleware accepts stack-B and stack-A requests in one
    run. Stack A is represented by its request path — an httpx 0.28 client from the stack-A factory
    (the same hooks, through :mod:`mcpclient_auth._hooks._httpx`) — driving the JSON-RPC sequence an mcp 1.x
    client sends to a stateless server (initialize, initialized, tools/call); mcp 1.x itself cannot be
    installed beside mcp 2.x, so its session layer is the one piece not exercised here."""
    env = fresh(servers, "stateless")
    path_b, path_a = tmp_path / "stack-b.jsonl", tmp_path / "stack-a.jsonl"
    version = {"mcp-protocol-version": "2025-06-18"}
    accept = {"accept": "application/json, text/event-stream"}
    async with asyncio.timeout(HANG_GUARD), env.run(path_b) as run_b, env.run(path_a, user="bob") as run_a:
        async with open_client(run_b) as client_b:
            via_b = await client_b.call_tool("search", {"query": "from stack B"})
        async with httpx_client_factory(run_a)(headers=accept) as client_a:
            assert isinstance(client_a, httpx.AsyncClient) and library_for(client_a).name == "httpx"
            init = {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "stack-a", "version": "1"},
                },
            }
            assert (await client_a.post(env.url, json=init)).status_code == 200
            notified = await client_a.post(
                env.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=version
            )
            assert notified.status_code == 202
            call = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "search", "arguments": {"query": "from stack A"}},
            }
            via_a = await client_a.post(env.url, json=call, headers=version)
            assert "results for from stack A" in via_a.text
    assert via_b.structured_content == {"result": "results for from stack B"}
    assert_all_verified(env)
    protocols = {r.header("mcp-protocol-version") for r in env.requests() if r.tool == "search"}
    assert protocols == {MODERN_VERSION, "2025-06-18"}
    for run, path in ((run_b, path_b), (run_a, path_a)):
        assert server_ects_for(env, run.id) == {e.jti for e in entries(path, kind="ect")}
        assert verify_ledger(path, env.actors.trust).ok
    assert verify_ledger(env.server_ledger, env.actors.trust, allow_unsealed=True, allow_unsealed_tail=True).ok
    assert json.loads(via_a.text.split("data: ", 1)[1])["result"]["isError"] is False
    assert AUDIENCE in run_a.mandate.aud and AUDIENCE in run_b.mandate.aud


def stack_a_python() -> str | None:
    """A stack-A interpreter (mcp 1.x) for the real cross-stack test: ``MCPCLIENT_AUTH_STACK_A_PYTHON``,
    else CI's ``.venv-ci`` (``.ci/run`` builds it before it runs stack B)."""
    root = Path(__file__).resolve().parents[2]
    candidates = [os.environ.get("MCPCLIENT_AUTH_STACK_A_PYTHON"), str(root / ".venv-ci" / "bin" / "python")]
    probe = "import importlib.metadata as m, mcpclient_auth; assert int(m.version('mcp').split('.')[0]) < 2"
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            done = subprocess.run(
                [candidate, "-c", probe], capture_output=True, timeout=HANG_GUARD, check=False
            )
            if done.returncode == 0:
                return candidate
    return None


@pytest.mark.parametrize("server_mode", ["stateless", "legacy"])
async def test_real_stack_a_client_and_stack_b_client_on_one_server(
    servers: dict[str, SignedEnv], actors: Actors, server_mode: str, tmp_path: Path
) -> None:
    """Acceptance 2 with the real stack A: an mcp 1.x ``ClientSession`` (stack-A interpreter, its own
    process) and an mcp 2.x client (this process) against the same middleware-protected fastmcp 4
    server. Skipped only when no stack-A interpreter exists (``bash .ci/run-stack-b`` on its own);
    ``.ci/run`` always has one."""
    python = stack_a_python()
    if python is None:
        pytest.skip("no stack-A interpreter (set MCPCLIENT_AUTH_STACK_A_PYTHON or run .ci/run)")
    env = fresh(servers, server_mode)
    agent_key = actors.agent.save(tmp_path / "agent.jwk")
    user_key = actors.users["bob"].save(tmp_path / "bob.jwk")
    path_a, path_b = tmp_path / "stack-a.jsonl", tmp_path / "stack-b.jsonl"
    script = Path(__file__).with_name("stack_a_client.py")
    args = [python, str(script), env.url, AUDIENCE, str(agent_key), str(user_key), str(path_a)]
    done = await asyncio.to_thread(
        subprocess.run,
        args,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    async with asyncio.timeout(HANG_GUARD), env.run(path_b) as run_b, open_client(run_b) as client_b:
        via_b = await client_b.call_tool("search", {"query": "from stack B"})

    assert outcome["text"] == "results for from stack A" and outcome["refused"] == "mandate_denied"
    assert via_b.structured_content == {"result": "results for from stack B"}
    assert_all_verified(env, refused_discover=server_mode == "legacy")
    assert [r for r in env.requests() if r.tool == "get_employee_salary"] == []
    assert {e.meta.get("principal") for e in env.server_entries("ect") if e.run == outcome["run"]} == {"bob"}
    for run_id, path in ((outcome["run"], path_a), (run_b.id, path_b)):
        sent = {e.jti for e in entries(path, kind="ect")}
        accepted = server_ects_for(env, run_id)
        assert accepted and accepted <= sent  # legacy: the refused discover probe is not accepted
        assert verify_ledger(path, env.actors.trust).ok  # a stack-A ledger verifies on stack B too


@pytest.mark.parametrize("server_mode", ["stateless", "legacy"])
async def test_connect_on_a_closed_run_fails_closed_with_the_typed_error(
    servers: dict[str, SignedEnv], server_mode: str, tmp_path: Path
) -> None:
    env = fresh(servers, server_mode)
    run = env.run(tmp_path / "client.jsonl")
    await run.aclose()
    with pytest.raises(RunClosed):  # not an ExceptionGroup, and nothing was sent
        async with asyncio.timeout(HANG_GUARD), open_client(run):
            pass
    assert env.requests() == []


class _MovedEndpoint:
    """ASGI middleware: ``/moved`` answers 307 to ``http://127.0.0.1:<port>/mcp`` (an endpoint move)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/moved":
            location = f"http://127.0.0.1:{scope['server'][1]}/mcp".encode()
            await send({"type": "http.response.start", "status": 307, "headers": [(b"location", location)]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


async def test_redirect_into_scope_is_signed_on_the_hop_that_enters_it(actors: Actors, tmp_path: Path) -> None:
    """httpx2 follows a 307 from another origin into the endpoint: the first hop carries nothing of
    ours, the second (a rebuilt request: the hook needs ``aread()``) is signed and verified. The same
    out-of-scope path on the run's own origin is refused locally (the guard fails closed)."""
    auth = Middleware(McpAuthMiddleware, trust=actors.trust, audience=AUDIENCE)
    with running_server("stateless", middleware=[Middleware(_MovedEndpoint), auth]) as server:
        env = SignedEnv(actors, server, tmp_path / "unused.jsonl")
        path = tmp_path / "client.jsonl"
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"}
        async with asyncio.timeout(HANG_GUARD), env.run(path) as run:
            client = httpx2_client_factory(run)(follow_redirects=True)
            async with client:
                refused = await client.post(server.base_url + "/moved", json=body, headers=headers)
                assert server.log.entries() == []  # nothing left the client
                other_origin = server.base_url.replace("127.0.0.1", "localhost")
                response = await client.post(other_origin + "/moved", json=body, headers=headers)
    assert refused.json()["error"]["data"]["code"] == "request_out_of_scope"
    assert response.status_code == 200 and "get_office_locations" in response.text
    moved, landed = server.log.entries()
    assert moved.path == "/moved" and moved.status == 307
    assert not any(moved.header(name) for name in _OUR_HEADERS)
    assert landed.path == "/mcp" and landed.status == 200 and all(landed.header(n) for n in _OUR_HEADERS)
    assert [e.meta["status"] for e in entries(path, kind="response")] == [200]
    assert verify_ledger(path, actors.trust).ok
