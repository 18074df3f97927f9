"""Stack-B smoke tests: unsigned clients against a real fastmcp 4 server in both modes.

They pin the request sequences (the baseline the signed stack-B tests compare against) and the
library behaviours the stack-B hooks rely on: where session ids and ``mcp-*`` headers appear, that a
local JSON-RPC refusal is an ordinary error while an exception in a hook kills the client, that SSE
responses are closed before their stream is exhausted, fastmcp's factory contract, and that a
contextvar set by agent middleware reaches the httpx2 hooks of an already open session.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
from fastmcp import Client as FastMCPClient
from fastmcp.client.transports import StreamableHttpTransport
from langchain.agents import create_agent
from langchain_core._api import LangChainBetaWarning
from langchain_core.messages import HumanMessage, ToolMessage
from mcp.shared.exceptions import MCPError

from tests.stack_b.support import (
    AGENT_BASELINE,
    CURRENT_USER,
    MODERN_VERSION,
    OFFICES,
    PLAIN_BASELINE,
    REFUSAL_CODE,
    TOOL_NAMES,
    PerUserMiddleware,
    RecordingFactory,
    RefusalToToolError,
    RefusingTransport,
    RunningServer,
    UserContext,
    plain_client,
    plain_workload,
    running_server,
    scripted_model,
    signature_verifier,
    tool_call,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", LangChainBetaWarning)
    from langchain.mcp import MCPAdapter

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::langchain_core._api.LangChainBetaWarning")]

SERVER_MODES = ["stateless", "legacy"]
HANG_GUARD = 60  # seconds; only stops a hung test, never asserts on speed


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, RunningServer]]:
    with running_server("stateless") as stateless, running_server("legacy") as legacy:
        yield {"stateless": stateless, "legacy": legacy}


def fresh(servers: dict[str, RunningServer], mode: str) -> RunningServer:
    server = servers[mode]
    server.log.clear()
    return server


def is_compact_json(body: bytes) -> bool:
    return json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode() == body


# ------------------------------------------------------------------------------------------ plain client


@pytest.mark.parametrize(("server_mode", "client_mode"), sorted(PLAIN_BASELINE))
async def test_plain_client_request_sequence(
    servers: dict[str, RunningServer], server_mode: str, client_mode: str
) -> None:
    server = fresh(servers, server_mode)
    async with asyncio.timeout(HANG_GUARD), plain_client(server.url, mode=client_mode) as client:
        result = await plain_workload(client)

    assert result.tools == list(TOOL_NAMES)
    assert result.search == "results for vacation policy"
    assert result.offices == {"result": OFFICES}
    assert result.echo == "hello"
    assert result.progress == [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)]

    expected, gets = PLAIN_BASELINE[(server_mode, client_mode)]
    assert server.log.steps(methods=["POST", "DELETE"]) == expected
    assert server.log.count("GET") == gets

    entries = server.log.entries()
    for entry in entries:
        if entry.method == "POST":
            assert entry.header("content-type") == "application/json"
            assert entry.header("accept") == "application/json, text/event-stream"
            assert isinstance(entry.message, dict)  # never a JSON-RPC batch
            assert is_compact_json(entry.body)
        else:
            assert entry.body == b""

    served = [e for e in entries if e.status != 400]  # the refused discover probe aside
    if result.protocol_version == MODERN_VERSION:
        for entry in served:
            assert entry.header("mcp-method") == entry.rpc_method
            assert entry.header("mcp-name") == entry.tool  # only tools/call carries it
            assert entry.header("mcp-protocol-version") == MODERN_VERSION
            assert entry.header("mcp-session-id") is None
            assert entry.status == 200
    else:
        assert served[0].rpc_method == "initialize"
        assert served[0].header("mcp-protocol-version") is None
        assert served[0].header("mcp-session-id") is None
        later = served[1:]
        assert {e.header("mcp-protocol-version") for e in later} == {result.protocol_version}
        assert all(e.header("mcp-method") is None and e.header("mcp-name") is None for e in served)
        session_ids = {e.header("mcp-session-id") for e in later}
        assert session_ids == ({None} if server_mode == "stateless" else {served[0].session_id_answered})
        initialized = next(e for e in served if e.rpc_method == "notifications/initialized")
        assert initialized.status == 202

    if server_mode == "legacy" and client_mode == "auto":
        probe = entries[0]
        assert (probe.rpc_method, probe.status) == ("server/discover", 400)
        assert probe.header("mcp-protocol-version") == MODERN_VERSION


async def test_pinned_modern_client_fails_against_legacy_server(servers: dict[str, RunningServer]) -> None:
    server = fresh(servers, "legacy")
    async with asyncio.timeout(HANG_GUARD), plain_client(server.url, mode=MODERN_VERSION) as client:
        assert server.log.steps() == []  # a pinned version adopts without a probe
        with pytest.raises(MCPError) as raised:
            await client.call_tool("search", {"query": "q"})
    assert raised.value.code == -32600
    assert server.log.steps() == [("POST", "tools/call", "search")]


# ------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("client_mode", ["auto", "legacy"])
@pytest.mark.parametrize("server_mode", SERVER_MODES)
async def test_local_refusal_is_an_ordinary_error(
    servers: dict[str, RunningServer], server_mode: str, client_mode: str
) -> None:
    server = fresh(servers, server_mode)
    transport = RefusingTransport(httpx2.AsyncHTTPTransport())
    async with (
        asyncio.timeout(HANG_GUARD),
        httpx2.AsyncClient(transport=transport) as http,
        plain_client(server.url, mode=client_mode, http_client=http) as client,
    ):
        with pytest.raises(MCPError) as raised:
            await client.call_tool("get_employee_salary", {"employee": "bob"})
        assert raised.value.code == REFUSAL_CODE
        assert raised.value.error.data == {"code": "mandate_denied"}

        # The session survives, also for a call in flight while another one is refused.
        after = await client.call_tool("search", {"query": "after"})
        refused, echoed = await asyncio.gather(
            client.call_tool("get_employee_salary", {"employee": "eve"}),
            client.call_tool("slow_echo", {"text": "parallel", "steps": 2}),
            return_exceptions=True,
        )
    assert after.content[0].text == "results for after"  # type: ignore[union-attr]
    assert isinstance(refused, MCPError) and refused.code == REFUSAL_CODE
    assert not isinstance(echoed, BaseException) and echoed.content[0].text == "parallel"  # type: ignore[union-attr]
    assert "get_employee_salary" not in {e.tool for e in server.log.entries()}  # never sent


class HookRefusal(Exception):
    pass


@pytest.mark.parametrize("server_mode", SERVER_MODES)
async def test_exception_in_request_hook_tears_down_the_client(
    servers: dict[str, RunningServer], server_mode: str
) -> None:
    """Why refusals must be answered locally: a hook exception escapes as an ExceptionGroup from the
    whole ``Client`` context (every call in flight dies), not from the one ``call_tool``."""
    server = fresh(servers, server_mode)

    async def refuse_salary(request: httpx2.Request) -> None:
        if b'"get_employee_salary"' in await request.aread():
            raise HookRefusal("refused")

    with pytest.raises(BaseExceptionGroup) as raised:
        async with (
            asyncio.timeout(HANG_GUARD),
            httpx2.AsyncClient(event_hooks={"request": [refuse_salary]}) as http,
            plain_client(server.url, http_client=http) as client,
        ):
            await client.call_tool("get_employee_salary", {"employee": "bob"})
    assert raised.group_contains(HookRefusal)
    assert "get_employee_salary" not in {e.tool for e in server.log.entries()}


# ------------------------------------------------------------------------------------------ signatures


@pytest.mark.parametrize(("server_mode", "client_mode"), [("stateless", "auto"), ("legacy", "auto")])
async def test_guard_verifies_signatures_made_on_httpx2_requests(server_mode: str, client_mode: str) -> None:
    """httpsig's duck-typed request protocol covers httpx2: a request hook that signs with
    ``RequestSigner`` passes the guard's ``RequestVerifier``; the ``mcp`` profile covers ``mcp-method``
    and ``mcp-name`` on 2026-07-28 requests and ``mcp-session-id`` on legacy ones."""
    from mcpclient_auth.httpsig import RequestSigner
    from mcpclient_auth.keys import Identity, TrustStore

    agent = Identity.generate("ES256", name="agent-b")
    signer = RequestSigner(agent)

    async def sign(request: httpx2.Request) -> None:
        signer.sign(request, body=await request.aread())

    with running_server(server_mode, verifier=signature_verifier(TrustStore([agent]))) as server:
        async with (
            asyncio.timeout(HANG_GUARD),
            httpx2.AsyncClient(event_hooks={"request": [sign]}) as http,
            plain_client(server.url, mode=client_mode, http_client=http) as client,
        ):
            result = await plain_workload(client)
        assert result.echo == "hello"

        accepted = [e for e in server.log.entries() if e.status != 400]  # the legacy probe refusal aside
        assert accepted and all(e.verified is not None and e.rejected is None for e in accepted)
        assert {e.verified.keyid for e in accepted} == {agent.kid}
        call = next(e for e in accepted if e.tool == "search")
        if server_mode == "stateless":
            assert {"mcp-method", "mcp-name", "mcp-protocol-version"} <= set(call.verified.covered)
        else:
            assert "mcp-session-id" in call.verified.covered and "mcp-method" not in call.verified.covered
        assert call.verified.covered[:2] == ("@method", "@target-uri")

        # An unsigned client is refused before the MCP app sees anything; the connect fails (the
        # MCPError leaves the transport's task group inside an ExceptionGroup).
        server.log.clear()
        with pytest.raises(BaseExceptionGroup) as raised:
            async with asyncio.timeout(HANG_GUARD), plain_client(server.url, mode=client_mode) as client:
                await client.call_tool("search", {"query": "q"})
        assert raised.group_contains(MCPError)
        refused = [e for e in server.log.entries() if e.status == 401]
        assert refused and {e.rejected for e in refused} == {"signature_missing"}
        assert all(e.status in (400, 401) for e in server.log.entries())


# ------------------------------------------------------------------------------------------ streams


class ObservedStream(httpx2.AsyncByteStream):
    """Counts the bytes a response body yields; notes whether it was exhausted and/or closed."""

    def __init__(self, inner: httpx2.AsyncByteStream, content_type: str | None) -> None:
        self.inner = inner
        self.content_type = content_type
        self.data = bytearray()
        self.exhausted = False
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            self.data.extend(chunk)
            yield chunk
        self.exhausted = True

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()

    @property
    def elapsed(self) -> Any:
        # httpx2's Response.elapsed reads response.stream.elapsed (httpx 0.28 sets it on the response).
        return getattr(self.inner, "elapsed", None)


@pytest.mark.parametrize("server_mode", SERVER_MODES)
async def test_sse_responses_are_closed_before_they_are_exhausted(
    servers: dict[str, RunningServer], server_mode: str
) -> None:
    """A response hook may wrap ``response.stream`` (an ``httpx2.AsyncByteStream``); the transport
    closes an SSE response right after the final event, so per-response bookkeeping (ledger entry,
    out_hash) must be finished in ``aclose()``, not at the end of iteration."""
    server = fresh(servers, server_mode)
    observed: list[ObservedStream] = []

    async def wrap(response: httpx2.Response) -> None:
        stream = ObservedStream(response.stream, response.headers.get("content-type"))  # type: ignore[arg-type]
        response.stream = stream
        observed.append(stream)

    mode = "legacy" if server_mode == "legacy" else "auto"
    async with (
        asyncio.timeout(HANG_GUARD),
        httpx2.AsyncClient(event_hooks={"response": [wrap]}) as http,
        plain_client(server.url, mode=mode, http_client=http) as client,
    ):
        progress: list[float] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(done)

        result = await client.call_tool(
            "slow_echo", {"text": "streamed", "steps": 2}, progress_callback=on_progress
        )
    assert result.content[0].text == "streamed"  # type: ignore[union-attr]
    assert progress == [1.0, 2.0]

    assert observed and all(stream.closed for stream in observed)
    sse = [s for s in observed if (s.content_type or "").startswith("text/event-stream") and s.data]
    answered = [s for s in sse if b'"streamed"' in s.data]
    assert len(answered) == 1
    assert not answered[0].exhausted
    assert answered[0].data.count(b"notifications/progress") == 2


async def test_stream_wrapper_must_forward_elapsed(servers: dict[str, RunningServer]) -> None:
    """A bridging difference: httpx2 keeps ``elapsed`` on the response's stream, so a wrapper that does
    not forward it breaks ``response.elapsed``; httpx 0.28 sets it on the response itself."""
    server = fresh(servers, "stateless")

    class Bare(httpx2.AsyncByteStream):
        def __init__(self, inner: httpx2.AsyncByteStream) -> None:
            self.inner = inner

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self.inner:
                yield chunk

        async def aclose(self) -> None:
            await self.inner.aclose()

    for wrapper, forwards in ((Bare, False), (lambda inner: ObservedStream(inner, None), True)):

        async def wrap(response: httpx2.Response, wrapper: Any = wrapper) -> None:
            response.stream = wrapper(response.stream)

        async with httpx2.AsyncClient(event_hooks={"response": [wrap]}) as http:
            response = await http.get(server.base_url + "/not-mcp")
        assert response.status_code == 404
        if forwards:
            assert response.elapsed.total_seconds() >= 0
        else:
            with pytest.raises(RuntimeError, match="elapsed"):
                _ = response.elapsed


# ------------------------------------------------------------------------------------------ fastmcp


@pytest.mark.parametrize("server_mode", SERVER_MODES)
async def test_fastmcp_client_factory_contract(servers: dict[str, RunningServer], server_mode: str) -> None:
    server = fresh(servers, server_mode)
    factory = RecordingFactory()
    transport = StreamableHttpTransport(server.url, httpx_client_factory=factory)
    async with asyncio.timeout(HANG_GUARD), FastMCPClient(transport) as client:
        found = await client.call_tool("search", {"query": "q"})
        (http,) = factory.clients
        request_hooks = list(http.event_hooks["request"])
        response_hooks = list(http.event_hooks["response"])
        session_id = transport.get_session_id()

    assert found.data == "results for q"
    # fastmcp passes follow_redirects=True (factories need **kwargs) and no timeout by default.
    assert factory.calls == [{"headers": {}, "timeout": None, "auth": None, "follow_redirects": True}]
    # It appends its own response hook (session-id capture) and leaves ours in place.
    assert request_hooks == [factory._record]
    assert [getattr(h, "__name__", "") for h in response_hooks] == ["_capture_session_id"]
    served = {e.header("mcp-session-id") for e in server.log.entries()} - {None}
    if server_mode == "legacy":
        assert served == {session_id} and session_id is not None
    else:
        assert served == set() and session_id is None
    assert [r.step for r in factory.records] == server.log.steps()


# ------------------------------------------------------------------------------------------ agents


@pytest.mark.parametrize("hold", [True, False], ids=["held-session", "session-per-call"])
@pytest.mark.parametrize("server_mode", SERVER_MODES)
async def test_adapter_agent_request_sequence_and_user_context(
    servers: dict[str, RunningServer], server_mode: str, hold: bool
) -> None:
    server = servers[server_mode]
    factory = RecordingFactory()
    adapter = MCPAdapter(FastMCPClient(StreamableHttpTransport(server.url, httpx_client_factory=factory)))
    tools = await adapter.list_tools()
    assert [t.name for t in tools] == list(TOOL_NAMES)
    server.log.clear()
    factory.records.clear()

    model = scripted_model(
        [tool_call("search", {"query": "vacation policy"}, call_id="c1")],
        [tool_call("get_office_locations", call_id="c2")],
        "Berlin, Lisbon and Montreal.",
    )
    agent = create_agent(model, tools, middleware=[PerUserMiddleware()], context_schema=UserContext)
    async with asyncio.timeout(HANG_GUARD):
        if hold:
            async with adapter:
                out = await agent.ainvoke(
                    {"messages": [HumanMessage("Where are we?")]}, context=UserContext("alice")
                )
        else:
            out = await agent.ainvoke(
                {"messages": [HumanMessage("Where are we?")]}, context=UserContext("alice")
            )

    tool_messages = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in tool_messages] == ["success", "success"]
    assert "results for vacation policy" in str(tool_messages[0].content)
    assert json.loads(tool_messages[1].content[0]["text"]) == OFFICES  # type: ignore[index]
    assert tool_messages[1].artifact == {"structured_content": {"result": OFFICES}}
    assert out["messages"][-1].content == "Berlin, Lisbon and Montreal."

    expected, gets = AGENT_BASELINE[(server_mode, hold)]
    assert server.log.steps(methods=["POST", "DELETE"]) == expected
    assert server.log.count("GET") == gets
    # Every request a tool call causes runs in that call's context — also on a session opened earlier;
    # requests of a held session's setup and teardown run in the opener's context (no user).
    for record in factory.records:
        in_tool_call = record.step[1] in ("tools/call", "tools/list") or not hold
        assert record.user == ("alice" if in_tool_call else None), record
    assert CURRENT_USER.get() is None


async def test_adapter_selects_the_user_per_concurrent_run(servers: dict[str, RunningServer]) -> None:
    """Two agent runs for two users share one held session: each tools/call carries its own user."""
    server = fresh(servers, "legacy")
    factory = RecordingFactory()
    adapter = MCPAdapter(FastMCPClient(StreamableHttpTransport(server.url, httpx_client_factory=factory)))
    tools = await adapter.list_tools()

    def agent_for(user: str) -> Any:
        model = scripted_model(
            [tool_call("search", {"query": user}, call_id=f"{user}-1")],
            [tool_call("search", {"query": user + "-again"}, call_id=f"{user}-2")],
            "done",
        )
        return create_agent(model, tools, middleware=[PerUserMiddleware()], context_schema=UserContext)

    async with asyncio.timeout(HANG_GUARD), adapter:
        factory.records.clear()
        await asyncio.gather(
            *(
                agent_for(user).ainvoke({"messages": [HumanMessage("hi")]}, context=UserContext(user))
                for user in ("alice", "bob")
            )
        )

    calls = [r for r in factory.records if r.step[1] == "tools/call"]
    assert len(calls) == 4
    assert sorted(r.user for r in calls) == ["alice", "alice", "bob", "bob"]
    assert len({r.session_id for r in calls}) == 1  # one shared session
    for record in calls:  # each request carries the user of the run whose model asked for it
        assert record.arguments["query"].split("-")[0] == record.user
    queries = [json.loads(e.body)["params"]["arguments"]["query"] for e in server.log.tool_calls()]
    assert sorted(queries) == ["alice", "alice-again", "bob", "bob-again"]


@pytest.mark.parametrize("server_mode", SERVER_MODES)
async def test_adapter_refusal_needs_middleware_to_reach_the_model(
    servers: dict[str, RunningServer], server_mode: str
) -> None:
    server = fresh(servers, server_mode)
    factory = RecordingFactory(transport=RefusingTransport(httpx2.AsyncHTTPTransport()))
    adapter = MCPAdapter(FastMCPClient(StreamableHttpTransport(server.url, httpx_client_factory=factory)))
    tools = await adapter.list_tools()

    def script() -> Any:
        return scripted_model(
            [
                tool_call("get_employee_salary", {"employee": "bob"}, call_id="s1"),
                tool_call("search", {"query": "q"}, call_id="s2"),
            ],
            "I may not see salaries.",
        )

    async with asyncio.timeout(HANG_GUARD):
        # Without middleware the MCPError ends the agent run.
        with pytest.raises(MCPError) as raised:
            await create_agent(script(), tools).ainvoke({"messages": [HumanMessage("salary?")]})
        assert raised.value.code == REFUSAL_CODE

        out = await create_agent(script(), tools, middleware=[RefusalToToolError()]).ainvoke(
            {"messages": [HumanMessage("salary?")]}
        )
    by_id = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    assert by_id["s1"].status == "error" and "mcp.get_employee_salary" in str(by_id["s1"].content)
    assert by_id["s2"].status == "success"
    assert out["messages"][-1].content == "I may not see salaries."
    assert "get_employee_salary" not in {e.tool for e in server.log.entries()}
