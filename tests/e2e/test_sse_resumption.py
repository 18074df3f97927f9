"""Issue 15: a tool result delivered on a resumed SSE stream is recorded (SEP-1699).

A real MCP server (mcp's FastMCP with an event store, under uvicorn, behind our verifying
``McpAuthMiddleware``) closes the POST stream of a ``tools/call`` right after its priming event and
stores the result; the real mcp client reconnects with ``GET`` + ``Last-Event-ID`` and receives the
result there. The client ledger's ``response`` entry for that call must hash the result that arrived
on the GET (not the priming event), the call must join the DAG (the next call and the phase-2 record
name it as a predecessor), and the ledger verifies. A run that closes while the result is still
awaited records the call as unanswered, and ``verify_ledger`` flags it (``response_missing``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage

from mcpclient_auth.act import ExecutionRecord
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.server import McpAuthMiddleware
from tests.support.hooks_env import Env, RecordingTransport, actors, entries, sha256_b64url
from tests.support.mcp_app import GuardState

pytestmark = pytest.mark.e2e

CAPS = ["mcp.resumable_report", "mcp.quick_fact", "mcp.never_answers"]


class MemoryEventStore(EventStore):
    """The smallest real event store: every event of every stream, replayed per stream."""

    def __init__(self) -> None:
        self.events: list[tuple[StreamId, EventId, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = str(len(self.events) + 1)
        self.events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        ids = [event_id for _, event_id, _ in self.events]
        if last_event_id not in ids:
            return None
        index = ids.index(last_event_id)
        stream_id = self.events[index][0]
        for stream, event_id, message in self.events[index + 1 :]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def _server() -> Any:
    mcp = FastMCP("resumable", event_store=MemoryEventStore(), retry_interval=50, stateless_http=False)

    @mcp.tool()
    async def resumable_report(ctx: Context[Any, Any]) -> str:
        """Closes the POST stream after the priming event; the result goes to the event store."""
        await ctx.close_sse_stream()
        await asyncio.sleep(0.05)
        return "quarterly report: 42 offices"

    @mcp.tool()
    async def quick_fact() -> str:
        """Answers on the POST stream."""
        return "Lisbon"

    @mcp.tool()
    async def never_answers(ctx: Context[Any, Any]) -> str:
        """Closes the POST stream and answers only after the client gave up."""
        await ctx.close_sse_stream()
        await asyncio.sleep(30)
        return "too late"

    return mcp


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    user, agent, trust = actors()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = McpAuthMiddleware(_server().streamable_http_app(), trust=trust, audience=f"{base}/mcp")
    with running(app, port, startup_timeout=15.0):
        yield Env(user, agent, trust, GuardState(trust), base)


def _result_events(body: bytes, request_id: int) -> list[bytes]:
    """The data of every SSE event in ``body`` that answers ``request_id`` (independent parser)."""
    found = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(
            line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")
        )
        if data and b'"result"' in data:
            message = json.loads(data)
            if message.get("id") == request_id:
                found.append(data)
    return found


async def test_a_result_on_the_resumed_get_is_hashed_and_joins_the_dag(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    recorder = RecordingTransport()
    run = env.run(path, capabilities=CAPS)
    async with (
        run,
        run.httpx_client_factory()(transport=recorder) as http,
        streamable_http_client(env.url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        report = await session.call_tool("resumable_report", {})
        fact = await session.call_tool("quick_fact", {})
    assert not report.isError and report.content[0].text == "quarterly report: 42 offices"  # type: ignore[union-attr]
    assert not fact.isError

    ects = {e.meta.get("tool"): e for e in entries(path, kind="ect") if e.meta.get("tool")}
    report_ect = ects["resumable_report"]
    call_id = report_ect.meta["id"]
    # What the wire carried: the POST stream ended after the priming event; a GET with
    # Last-Event-ID brought the result.
    posts = [x for x in recorder.exchanges if x.request.headers.get("execution-context") == report_ect.token]
    resumed = [
        x for x in recorder.exchanges if x.request.method == "GET" and "last-event-id" in x.request.headers
    ]
    assert len(posts) == 1 and not _result_events(posts[0].body, call_id)
    assert resumed, "the client did not resume"
    [answer] = [data for x in resumed for data in _result_events(x.body, call_id)]
    # The GET's Last-Event-ID was signed (the middleware verified it; the signature covers it).
    assert "last-event-id" in resumed[0].request.headers["signature-input"]

    [response] = [e for e in entries(path, kind="response") if e.jti == report_ect.jti]
    assert response.meta["out_hash"] == sha256_b64url(answer)  # the real result, not the priming event
    assert response.meta["bytes"] == len(answer)
    assert response.meta["status"] == 200 and response.meta["resumed"] is True
    assert "code" not in response.meta
    # The call joined the DAG: the next call follows it, and so does the record.
    fact_ect = ExecutionContextToken.decode(ects["quick_fact"].token or "")
    assert report_ect.jti in fact_ect.pred
    [record] = entries(path, kind="record")
    assert fact_ect.jti in ExecutionRecord.decode(record.token or "").pred
    report_ledger = verify_ledger(path, env.trust)
    assert report_ledger.ok, report_ledger.failures


async def test_a_call_whose_answer_never_arrives_is_flagged(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    run = env.run(path, capabilities=CAPS)
    async with (
        run,
        run.httpx_client_factory()() as http,
        streamable_http_client(env.url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                await session.call_tool("never_answers", {})
    [ect] = [e for e in entries(path, kind="ect") if e.meta.get("tool") == "never_answers"]
    assert not [e for e in entries(path, kind="response") if e.jti == ect.jti]  # no answer was hashed
    [error] = [e for e in entries(path, kind="error") if e.jti == ect.jti]
    assert error.meta["code"] == "incomplete"
    [record] = entries(path, kind="record")
    assert ect.jti not in ExecutionRecord.decode(record.token or "").pred
    report = verify_ledger(path, env.trust)
    assert not report.ok
    assert [(f.check, f.jti) for f in report.failures] == [("response_missing", ect.jti)]
