"""Stack B (mcp 2.x): an SSE answer is credited to a call only when the client took it as that call's
answer (review round 2, F1/F2; the stack A twin is ``tests/e2e/test_sse_answer_binding.py``).

mcp 2.x ends a request's stream at the first JSON-RPC response and rewrites its id to the request's:
a foreign-id response first on the POST stream *is* the call's result for the agent, and so is the
first response on the GET that resumes it. The ledger records neither as the call's answer
(``answer_id_mismatch``), credits no other call with it, and ``verify_ledger`` reports the call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.demo.serving import running
from mcpclient_auth.ledger import verify_ledger
from tests.support.hooks_env import entries
from tests.support.hostile_sse import ResumeToOtherId, decoy_first_app, hostile_env

pytestmark = pytest.mark.e2e

HANG_GUARD = 30  # seconds; only stops a hung test, never asserts on speed


async def test_a_foreign_id_first_is_the_agents_result_but_not_the_calls_answer(tmp_path: Path) -> None:
    env, port = hostile_env()
    path = tmp_path / "ledger.jsonl"
    with running(decoy_first_app, port):
        run = env.run(path, capabilities=["mcp.quick_fact"])
        async with (
            run,
            run.httpx_client_factory()() as http,
            streamable_http_client(env.url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            got = await asyncio.wait_for(session.call_tool("quick_fact", {}), HANG_GUARD)
    assert [c.text for c in got.content] == ["decoy"]  # mcp 2.x handed the stranger over as the result
    ect = next(e for e in entries(path, kind="ect") if e.meta.get("tool") == "quick_fact")
    [response] = [e for e in entries(path, kind="response") if e.jti == ect.jti]
    assert response.meta["code"] == "answer_id_mismatch"
    report = verify_ledger(path, env.trust)
    assert [(f.check, f.jti) for f in report.failures] == [("response_missing", ect.jti)]


async def test_a_resumed_get_answers_the_call_it_resumes_never_another(tmp_path: Path) -> None:
    env, port = hostile_env()
    app = ResumeToOtherId()
    path = tmp_path / "ledger.jsonl"
    with running(app, port):
        run = env.run(path, capabilities=["mcp.tool_a", "mcp.tool_b"])
        async with (
            run,
            run.httpx_client_factory()() as http,
            streamable_http_client(env.url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()

            async def call_b() -> Any:
                await asyncio.sleep(0.2)
                return await session.call_tool("tool_b", {})

            got_a, got_b = await asyncio.wait_for(
                asyncio.gather(session.call_tool("tool_a", {}), call_b()), HANG_GUARD
            )
    assert got_a.content[0].text == "for A, carrying B's id"  # mcp made it A's answer
    assert got_b.content[0].text == "B's own answer"
    assert app.misdirected is not None
    ects = {e.meta.get("tool"): e for e in entries(path, kind="ect") if e.meta.get("tool")}
    [a] = [e for e in entries(path) if e.jti == ects["tool_a"].jti and e.kind != "ect"]
    assert (a.kind, a.meta.get("resumed"), a.meta.get("code")) == ("response", True, "answer_id_mismatch")
    assert a.meta["out_hash"] == sha256_b64url(app.misdirected.encode())
    [b] = [e for e in entries(path) if e.jti == ects["tool_b"].jti and e.kind != "ect"]
    assert b.kind == "response" and "code" not in b.meta and not b.meta.get("resumed")
    report = verify_ledger(path, env.trust)
    assert [(f.check, f.jti) for f in report.failures] == [("response_missing", ects["tool_a"].jti)]
