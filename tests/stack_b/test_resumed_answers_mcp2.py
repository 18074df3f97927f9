"""Stack B (mcp 2.x client over httpx2): a tool result delivered on a resumed SSE stream is recorded.

The same case as ``tests/e2e/test_sse_resumption.py`` on stack A: mcp 2.x's own server (``MCPServer``
with an event store, under uvicorn, behind our ``McpAuthMiddleware``) ends the POST stream of a
``tools/call`` after its priming event; mcp 2.x's client resumes with ``GET`` + ``Last-Event-ID`` and
gets the result there. The client ledger hashes that result, the call joins the DAG, the ledger
verifies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import ExecutionRecord
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.factory import httpx2_client_factory
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import McpAuthMiddleware
from tests.stack_b.signing import Actors

pytestmark = pytest.mark.e2e

HANG_GUARD = 60  # seconds; only stops a hung test, never asserts on speed
CAPS = ["mcp.resumable_report", "mcp.quick_fact"]


class MemoryEventStore(EventStore):
    """The smallest real event store: every event of every stream, replayed per stream."""

    def __init__(self) -> None:
        self.events: list[tuple[StreamId, EventId, Any]] = []

    async def store_event(self, stream_id: StreamId, message: Any) -> EventId:
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


class _Tap(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, chunks: list[bytes]) -> None:
        self._inner, self._chunks = inner, chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._chunks.append(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class Recorder(httpx2.AsyncBaseTransport):
    """A real network transport that also keeps each request's headers and the bytes that came back."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.wire: list[tuple[str, dict[str, str], list[bytes]]] = []

    async def handle_async_request(self, request: Any) -> Any:
        chunks: list[bytes] = []
        self.wire.append((request.method, dict(request.headers), chunks))
        response = await self.inner.handle_async_request(request)
        response.stream = _Tap(response.stream, chunks)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(scope="module")
def actors() -> Actors:
    return Actors.generate("alice")


@pytest.fixture(scope="module")
def url(actors: Actors) -> Iterator[str]:
    mcp = MCPServer("resumable")

    @mcp.tool()
    async def resumable_report(ctx: Context) -> str:
        """Closes the POST stream after the priming event; the result goes to the event store."""
        await ctx.close_sse_stream()
        await asyncio.sleep(0.05)
        return "quarterly report: 42 offices"

    @mcp.tool()
    async def quick_fact() -> str:
        """Answers on the POST stream."""
        return "Lisbon"

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/mcp"
    inner = mcp.streamable_http_app(event_store=MemoryEventStore(), retry_interval=50)
    app = McpAuthMiddleware(inner, trust=actors.trust, audience=endpoint)
    with running(app, port, startup_timeout=15.0):
        yield endpoint


def _answers(body: bytes, request_id: int) -> list[bytes]:
    found = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(
            line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")
        )
        if data and b'"result"' in data and json.loads(data).get("id") == request_id:
            found.append(data)
    return found


async def test_mcp2_resumes_and_the_ledger_hashes_the_resumed_result(
    actors: Actors, url: str, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.jsonl"
    run = AgentRun(
        agent=actors.agent,
        issuer=actors.users["alice"],
        purpose="resumption",
        capabilities=CAPS,
        endpoint=url,
        ledger=path,
    )
    recorder = Recorder()
    async with asyncio.timeout(HANG_GUARD), run:
        http = httpx2_client_factory(run)(transport=recorder)
        async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            report = await client.call_tool("resumable_report", {})
            fact = await client.call_tool("quick_fact", {})
    assert not report.is_error and not fact.is_error
    ledger = list(Ledger.open(path).entries())
    ects = {e.meta.get("tool"): e for e in ledger if e.kind == "ect" and e.meta.get("tool")}
    report_ect = ects["resumable_report"]
    resumed = [
        chunks for method, headers, chunks in recorder.wire if method == "GET" and "last-event-id" in headers
    ]
    assert resumed, "mcp 2.x did not resume"
    [answer] = [data for chunks in resumed for data in _answers(b"".join(chunks), report_ect.meta["id"])]
    [response] = [e for e in ledger if e.kind == "response" and e.jti == report_ect.jti]
    assert response.meta["out_hash"] == sha256_b64url(answer) and response.meta["resumed"] is True
    fact_ect = ExecutionContextToken.decode(ects["quick_fact"].token or "")
    assert report_ect.jti in fact_ect.pred
    [record] = [e for e in ledger if e.kind == "record"]
    assert fact_ect.jti in ExecutionRecord.decode(record.token or "").pred
    verdict = verify_ledger(path, actors.trust)
    assert verdict.ok, verdict.failures
