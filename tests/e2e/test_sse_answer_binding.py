"""Review round 2, F1/F2: an SSE answer is credited to a call only when the MCP client took it as that
call's answer.

The servers are small raw ASGI apps under uvicorn (``tests/support/hostile_sse.py``: FastMCP never
sends these streams; a hostile or broken server can). The client is the real mcp 1.x client through a run's httpx client.

* F1: the call's POST stream carries, in one chunk, a response with a foreign id and then the call's
  own. mcp takes the first response as the end of the stream (1.x drops it: the call times out), so
  the ledger must not record the call as answered: ``response`` with ``code: "answer_id_mismatch"``,
  the call stays out of the DAG, and ``verify_ledger`` reports it (``response_missing``).
* F2: call A's POST stream ends after a priming event; the client resumes with GET + Last-Event-ID
  and the server answers there with a response carrying call B's id. mcp rewrites it to A's id and
  hands it to the agent as A's answer. The ledger records it under A (resumed, ``answer_id_mismatch``,
  the hash of that message), never under B; B's own answer is B's.
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


async def test_a_foreign_id_first_on_the_calls_stream_is_no_answer(tmp_path: Path) -> None:
    env, port = hostile_env()
    path = tmp_path / "ledger.jsonl"
    with running(decoy_first_app, port):
        run = env.run(path, capabilities=["mcp.quick_fact"])
        async with (
            run,
            run.httpx_client_factory()() as http,
            streamable_http_client(env.url, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            with pytest.raises(TimeoutError):  # mcp 1.x drops the stranger and stops reading
                async with asyncio.timeout(1.5):
                    await session.call_tool("quick_fact", {})
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
            streamable_http_client(env.url, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()

            async def call_b() -> Any:
                await asyncio.sleep(0.2)
                return await session.call_tool("tool_b", {})

            got_a, got_b = await asyncio.wait_for(
                asyncio.gather(session.call_tool("tool_a", {}), call_b()), 10
            )
    assert got_a.content[0].text == "for A, carrying B's id"  # mcp made it A's answer
    assert got_b.content[0].text == "B's own answer"
    assert app.misdirected is not None and app.b_answer is not None
    ects = {e.meta.get("tool"): e for e in entries(path, kind="ect") if e.meta.get("tool")}
    outcomes = {
        tool: [e for e in entries(path) if e.jti == ects[tool].jti and e.kind != "ect"] for tool in ects
    }
    [a] = outcomes["tool_a"]
    assert (a.kind, a.meta.get("resumed"), a.meta.get("code")) == ("response", True, "answer_id_mismatch")
    assert a.meta["out_hash"] == sha256_b64url(app.misdirected.encode())
    [b] = outcomes["tool_b"]
    assert b.kind == "response" and "code" not in b.meta and not b.meta.get("resumed")
    assert b.meta["out_hash"] != sha256_b64url(app.misdirected.encode())
    report = verify_ledger(path, env.trust)
    assert [(f.check, f.jti) for f in report.failures] == [("response_missing", ects["tool_a"].jti)]
