"""End-to-end: a plain mcp ClientSession through run.httpx_client_factory() against a real FastMCP
server whose guard verifies every request with the SDK's verifiers (issue 3, acceptance 1a, 2, 3, 5, 6).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

from mcpclient_auth.act import ExecutionRecord
from mcpclient_auth.adapters.mcp_v1 import open_session
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import ActionMappingError, MandateDenied, RunClosed
from mcpclient_auth.ledger import line_hash, verify_ledger
from mcpclient_auth.refusal import REFUSAL_CODE
from tests.support.hooks_env import Env, RecordingTransport, entries, hr_server, sha256_b64url
from tests.support.mcp_app import GATES

pytestmark = [
    pytest.mark.e2e,
    # the issue names mcp's deprecated streamablehttp_client(httpx_client_factory=...) on purpose
    pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with hr_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_guard(env: Env) -> None:
    env.state.reset()


def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.jsonl"


def ect_of(entry: Any) -> ExecutionContextToken:
    return ExecutionContextToken.decode(entry.token)


async def test_plain_session_every_request_is_verified_and_recorded(env: Env, tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    run = env.run(path)
    async with (
        run,
        streamablehttp_client(env.url, httpx_client_factory=run.httpx_client_factory()) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        assert {t.name for t in tools.tools} >= {"search", "get_office_locations"}
        result = await session.call_tool("get_office_locations", {})
        assert "Lisbon" in result.content[0].text  # type: ignore[union-attr]
        await session.call_tool("search", {"query": "parental leave"})

    state = env.state
    assert state.rejected == 0, state.errors()
    ect_entries = entries(path, kind="ect")
    assert state.verified_ects == len(ect_entries) >= 5
    assert {e.jti for e in state.ects} == {e.jti for e in ect_entries}
    # every request to the endpoint was verified, POSTs with an ECT, GET/DELETE with mandate + signature only
    mcp_requests = [r for r in state.requests if r.path == "/mcp"]
    assert all(r.verified for r in mcp_requests)
    methods = {r.method for r in mcp_requests}
    assert {"POST", "GET", "DELETE"} <= methods
    for r in mcp_requests:
        assert "act-mandate" in r.carried_our_headers and "signature" in r.carried_our_headers
        assert ("execution-context" in r.carried_our_headers) == (r.method == "POST")
    # each ECT answers exactly the body it was sent with
    for seen in mcp_requests:
        if seen.ect is not None:
            assert seen.ect.inp_hash == sha256_b64url(seen.body)
    responses = entries(path, kind="response")
    assert {e.jti for e in responses} == {e.jti for e in ect_entries}
    report = verify_ledger(path, env.trust)
    assert report.ok, report.failures


async def test_dag_session_calls_chain_and_fan_in(env: Env, tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    async with env.run(path) as run, open_session(run) as session:
        await session.call_tool("search", {"query": "a"})
        await session.call_tool("get_office_locations", {})
        results = await asyncio.gather(
            *(session.call_tool("gather_point", {"key": f"{run.id}-g", "size": 3}) for _ in range(3))
        )
        assert all(not r.isError for r in results)
        await session.call_tool("search", {"query": "after"})

    ects = [ect_of(e) for e in entries(path, kind="ect")]
    root = run.id
    session_calls = [t for t in ects if t.exec_act.startswith("mcp.rpc.")]
    assert session_calls and all(t.pred == [root] for t in session_calls)
    tools = [t for t in ects if not t.exec_act.startswith("mcp.rpc.")]
    first, second, *gathered, last = tools
    assert first.pred == [root]
    assert second.pred == [first.jti]  # sequential calls form a chain
    assert len(gathered) == 3 and all(t.pred == [second.jti] for t in gathered)  # same parent
    assert sorted(last.pred) == sorted(t.jti for t in gathered)  # fan-in: exactly those three
    assert env.state.verified_ects == len(ects) and env.state.rejected == 0
    record = ExecutionRecord.decode(entries(path, kind="record")[0].token)  # type: ignore[arg-type]
    assert record.pred == [last.jti] and record.exec_act == "mcp.search"
    assert verify_ledger(path, env.trust).ok


async def test_out_of_mandate_and_unmappable_tools_are_refused_before_sending(env: Env, tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    async with (
        env.run(path) as run,
        streamablehttp_client(env.url, httpx_client_factory=run.httpx_client_factory()) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()

        with pytest.raises(McpError) as denied:
            await session.call_tool("get_employee_salary", {"employee": "bob"})
        assert denied.value.error.code == REFUSAL_CODE
        assert denied.value.error.data["code"] == "mandate_denied"  # type: ignore[index]

        with pytest.raises(McpError) as unmappable:
            await session.call_tool("drop table; --", {})
        assert unmappable.value.error.data["code"] == "invalid_action"  # type: ignore[index]

        # not one byte of either call reached the server
        assert not any(b"get_employee_salary" in r.body or b"drop table" in r.body for r in env.state.requests)
        assert not any(b'"tools/call"' in r.body for r in env.state.requests)
        # the session survived: an allowed call still works and is signed
        ok = await session.call_tool("search", {"query": "still alive"})
        assert not ok.isError

    denials = entries(path, kind="denial")
    assert [(d.meta["tool"], d.meta["code"]) for d in denials] == [
        ("get_employee_salary", "mandate_denied"),
        ("drop table; --", "invalid_action"),
    ]
    assert denials[0].meta["action"] == "mcp.get_employee_salary" and denials[0].meta["principal"] == "alice"
    tools_called = [e.meta.get("tool") for e in entries(path, kind="ect")]
    assert "get_employee_salary" not in tools_called and "search" in tools_called
    assert env.state.rejected == 0
    assert verify_ledger(path, env.trust).ok


async def test_open_session_raises_typed_refusals(env: Env, tmp_path: Path) -> None:
    async with env.run(ledger_path(tmp_path)) as run, open_session(run) as session:
        with pytest.raises(MandateDenied) as denied:
            await session.call_tool("get_employee_salary", {"employee": "bob"})
        assert denied.value.action == "mcp.get_employee_salary"
        with pytest.raises(ActionMappingError):
            await session.call_tool("rpc.initialize", {})
        assert not (await session.call_tool("search", {"query": "x"})).isError


async def test_sse_progress_streams_and_out_hash_covers_the_bytes_received(env: Env, tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    recorder = RecordingTransport()
    order: list[str] = []
    async with env.run(path) as run:
        key = f"{run.id}-progress"

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            order.append(f"progress {int(progress)}")
            GATES.release(key)  # the tool continues only once we have seen this notification

        factory = run.httpx_client_factory()
        async with (
            streamablehttp_client(
                env.url, httpx_client_factory=lambda **kw: factory(transport=recorder, **kw)
            ) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool(
                "stepwise", {"key": key, "steps": 3}, progress_callback=on_progress
            )
            order.append("result")

    assert result.content[0].text == "streamed"  # type: ignore[union-attr]
    assert order == ["progress 1", "progress 2", "progress 3", "result"]
    ect = next(e for e in entries(path, kind="ect") if e.meta.get("tool") == "stepwise")
    response = next(e for e in entries(path, kind="response") if e.jti == ect.jti)
    exchange = next(
        x for x in recorder.exchanges if x.request.headers.get("execution-context") == ect.token
    )
    assert exchange.request.headers["content-type"] == "application/json"
    received = exchange.body
    assert received.count(b"notifications/progress") == 3 and b'"result"' in received
    assert response.meta["out_hash"] == sha256_b64url(received)
    assert response.meta["bytes"] == len(received)
    assert response.meta["status"] == 200 and response.meta["id"] == json.loads(exchange.request.content)["id"]


async def test_close_writes_record_and_seal_and_a_second_run_chains_on(env: Env, tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    first = env.run(path)
    async with open_session(first) as session:
        await session.call_tool("search", {"query": "q"})
    record = await first.aclose(output="Berlin, Lisbon, Toronto", status="completed")
    assert await first.aclose(output="ignored") is record  # idempotent

    run1 = entries(path, run=first.id)
    kinds = [e.kind for e in run1]
    assert kinds[0] == "mandate" and kinds[-2:] == ["record", "seal"]
    assert kinds.count("ect") == kinds.count("response") >= 4
    assert [e.seq for e in run1] == list(range(1, len(run1) + 1))
    raw_lines = path.read_bytes().splitlines()
    for previous, entry in zip(raw_lines, run1[1:], strict=False):
        assert entry.prev == line_hash(previous)  # hash chain
    verified = ExecutionRecord.verify(record.token, env.trust, mandate=first.mandate)
    assert verified.out_hash == sha256_b64url(b"Berlin, Lisbon, Toronto") and verified.status == "completed"
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    # after close: no more calls
    async with first.httpx_client_factory()() as client:
        with pytest.raises(RunClosed):
            await client.post(env.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})

    second = env.run(path)
    async with second, open_session(second) as session:
        await session.call_tool("get_office_locations", {})
    run2 = entries(path, run=second.id)
    assert run2[0].kind == "mandate" and run2[0].seq == len(run1) + 1
    assert run2[0].prev == line_hash(raw_lines[len(run1) - 1])  # chains on from run 1's seal
    assert run2[-1].kind == "seal"
    report = verify_ledger(path, env.trust)
    assert report.ok, report.failures
    assert len(report.runs) == 2


async def test_a_failing_run_is_recorded_as_failed(env: Env, tmp_path: Path) -> None:
    path = ledger_path(tmp_path)
    with pytest.raises(RuntimeError):
        async with env.run(path) as run:
            async with open_session(run) as session:
                await session.call_tool("search", {"query": "x"})
            raise RuntimeError("agent crashed")
    record = ExecutionRecord.decode(entries(path, kind="record")[0].token)  # type: ignore[arg-type]
    assert record.status == "failed"
    assert verify_ledger(path, env.trust).ok
