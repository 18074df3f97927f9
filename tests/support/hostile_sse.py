"""Raw ASGI MCP servers whose SSE streams FastMCP never sends but a hostile or broken server can
(review round 2, F1/F2): run under uvicorn (``demo.serving.running``) by stack A's and stack B's tests.

* :func:`decoy_first_app`: a ``tools/call`` POST stream carries, in one chunk, a response with a
  foreign id and then the call's own response.
* :class:`ResumeToOtherId`: ``tool_a``'s POST stream ends after a priming event; the GET that resumes
  it (``Last-Event-ID``) answers with a response carrying ``tool_b``'s id; ``tool_b`` gets its own
  answer later on its POST stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from mcpclient_auth.demo.serving import free_port
from tests.support.hooks_env import Env, actors
from tests.support.mcp_app import GuardState

__all__ = ["ResumeToOtherId", "decoy_first_app", "hostile_env"]

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


def hostile_env() -> tuple[Env, int]:
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


