"""Review round 2, F1/F2: an SSE answer is credited to a call only when the MCP client took it as that
call's answer.

The servers are small raw ASGI apps under uvicorn (FastMCP never sends these streams; a hostile or
broken server can). The client is the real mcp 1.x client through a run's httpx client.

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
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.ledger import verify_ledger
from tests.support.hooks_env import Env, actors, entries
from tests.support.mcp_app import GuardState

pytestmark = pytest.mark.e2e

SESSION = b"sess-1"
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _reply(send: Send, status: int, body: bytes = b"", ctype: bytes | None = None, more: bool = False) -> None:
    headers = [(b"mcp-session-id", SESSION)] + ([(b"content-type", ctype)] if ctype else [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": more})


def _rpc(request_id: object, result: dict[str, Any]) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def _text(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}]}


async def _handshake(msg: dict[str, Any], send: Send, tools: tuple[str, ...]) -> bool:
    """Answer what every session needs (notifications, initialize, tools/list); True if answered."""
    if "id" not in msg:
        await _reply(send, 202)
    elif msg["method"] == "initialize":
        info = {
            "protocolVersion": msg["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "test", "version": "1"},
        }
        await _reply(send, 200, _rpc(msg["id"], info).encode(), b"application/json")
    elif msg["method"] == "tools/list":
        listed = [{"name": name, "inputSchema": {"type": "object"}} for name in tools]
        await _reply(send, 200, _rpc(msg["id"], {"tools": listed}).encode(), b"application/json")
    else:
        return False
    return True


def _env() -> tuple[Env, int]:
    user, agent, trust = actors()
    port = free_port()
    return Env(user, agent, trust, GuardState(trust), f"http://127.0.0.1:{port}"), port


async def decoy_first_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    body = await _body(receive)
    if scope["method"] != "POST":
        return await _reply(send, 405)
    msg = json.loads(body)
    if await _handshake(msg, send, ("quick_fact",)):
        return
    decoy, real = _rpc(999999, _text("decoy")), _rpc(msg["id"], _text("ledger only"))
    events = f"event: message\ndata: {decoy}\n\nevent: message\ndata: {real}\n\n".encode()
    await _reply(send, 200, events, b"text/event-stream", more=True)
    await asyncio.sleep(0.3)
    await send({"type": "http.response.body", "body": b""})


async def test_a_foreign_id_first_on_the_calls_stream_is_no_answer(tmp_path: Path) -> None:
    env, port = _env()
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


class ResumeToOtherId:
    """Call A's stream ends after a priming event; the resumed GET answers with call B's id."""

    def __init__(self) -> None:
        self.ids: dict[str, Any] = {}
        self.misdirected: str | None = None
        self.b_answer: str | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        body = await _body(receive)
        headers = dict(scope["headers"])
        if scope["method"] == "GET":
            if b"last-event-id" not in headers:
                return await _reply(send, 405)
            for _ in range(100):  # bounded: B's request arrives shortly
                if "B" in self.ids:
                    break
                await asyncio.sleep(0.02)
            self.misdirected = _rpc(self.ids["B"], _text("for A, carrying B's id"))
            event = f"id: ev2\nevent: message\ndata: {self.misdirected}\n\n".encode()
            await _reply(send, 200, event, b"text/event-stream", more=True)
            await asyncio.sleep(0.2)
            await send({"type": "http.response.body", "body": b""})
            return None
        if scope["method"] == "DELETE":
            return await _reply(send, 200)
        msg = json.loads(body)
        if await _handshake(msg, send, ("tool_a", "tool_b")):
            return None
        if msg["params"]["name"] == "tool_a":
            self.ids["A"] = msg["id"]
            return await _reply(send, 200, b"id: ev1\nretry: 50\ndata:\n\n", b"text/event-stream")
        self.ids["B"] = msg["id"]
        await _reply(send, 200, b": open\n\n", b"text/event-stream", more=True)
        await asyncio.sleep(0.8)
        self.b_answer = _rpc(msg["id"], _text("B's own answer"))
        await send({"type": "http.response.body", "body": f"event: message\ndata: {self.b_answer}\n\n".encode()})
        return None


async def test_a_resumed_get_answers_the_call_it_resumes_never_another(tmp_path: Path) -> None:
    env, port = _env()
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
