"""Stack-B test support: a fastmcp 4 server behind a recording ASGI guard, plus client helpers.

Stack B is mcp 2.x + httpx2 + fastmcp 4 + ``langchain.mcp.MCPAdapter``. The server runs under uvicorn
on 127.0.0.1 (``tests/support/servers.py::serve``) in one of two modes:

- ``stateless`` — ``http_app(stateless_http=True)``. A 2.x client in ``auto`` mode discovers the
  2026-07-28 protocol: one POST per message, ``mcp-method`` / ``mcp-name`` headers, no session.
- ``legacy`` — ``http_app(stateless_http=False)`` and the guard refuses 2026-era requests the way an
  mcp 1.x server does (HTTP 400, JSON-RPC -32600 "Missing session ID"), so ``auto`` falls back to the
  initialize handshake: ``mcp-session-id``, the SSE ``GET`` and the closing ``DELETE``. Without the
  refusal a fastmcp 4 server answers modern requests in every mode (the mcp 2.x session manager routes
  on the ``mcp-protocol-version`` header before it looks at ``stateless``).

    with running_server("stateless") as server:
        async with plain_client(server.url) as client:
            await client.call_tool("search", {"query": "q"})
        assert server.log.steps() == [("POST", "server/discover", None), ("POST", "tools/call", "search"), ...]

The guard records every request (method, path, headers, body, response status) into a thread-safe
:class:`RequestLog`. A ``verifier`` callable (later: the SDK's ``RequestVerifier`` / ECT / mandate checks)
can refuse a request with 401 before the MCP app sees it; further ASGI middleware (e.g. the reference
``McpAuthMiddleware``) can be stacked inside the guard with ``middleware=``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx2
from fastmcp import Context, FastMCP
from langchain.agents.middleware import AgentMiddleware
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.middleware import Middleware

from tests.support.servers import serve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: (HTTP method, JSON-RPC method or None, tool name or None) — one request, as the baseline compares it.
Step = tuple[str, str | None, str | None]

MCP_PATH = "/mcp"
MODERN_VERSION = "2026-07-28"
#: The tools every stack-B server offers, in registration order.
TOOL_NAMES = ("search", "get_office_locations", "get_employee_salary", "slow_echo")
OFFICES = ["Berlin", "Lisbon", "Montreal"]
_MAX_BODY = 1 << 20


# --------------------------------------------------------------------------------------------- server


def build_mcp_server() -> FastMCP:
    """The HR demo server: two harmless tools, one sensitive tool, one progress-streaming tool."""
    mcp = FastMCP("stack-b-hr")

    @mcp.tool
    def search(query: str) -> str:
        """Search the HR knowledge base."""
        return f"results for {query}"

    @mcp.tool
    def get_office_locations() -> list[str]:
        """List the company's offices."""
        return list(OFFICES)

    @mcp.tool
    def get_employee_salary(employee: str) -> dict[str, Any]:
        """Salary of one employee (the tool a mandate usually does not grant)."""
        return {"employee": employee, "salary": 4242}

    @mcp.tool
    async def slow_echo(text: str, steps: int, ctx: Context) -> str:
        """Echo ``text`` after reporting ``steps`` progress notifications (an SSE response)."""
        for done in range(1, steps + 1):
            await ctx.report_progress(done, steps)
        return text

    return mcp


@dataclass
class RecordedRequest:
    """One HTTP request as the server received it; ``status`` is filled in when the answer starts."""

    method: str
    url: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    content_type: str | None = None
    session_id_answered: str | None = None
    rejected: str | None = None
    verified: Any = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def content(self) -> bytes:
        # With .method, .url and .headers this is the request shape httpsig verifies.
        return self.body

    @property
    def message(self) -> dict[str, Any] | None:
        """The JSON-RPC message in the body, or None for an empty / non-JSON body."""
        if not self.body:
            return None
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    @property
    def rpc_method(self) -> str | None:
        message = self.message
        return message.get("method") if message else None

    @property
    def tool(self) -> str | None:
        message = self.message
        if not message or message.get("method") != "tools/call":
            return None
        params = message.get("params") or {}
        return params.get("name")

    @property
    def step(self) -> Step:
        return (self.method, self.rpc_method, self.tool)


class RequestLog:
    """Thread-safe list of :class:`RecordedRequest` (the server runs in its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[RecordedRequest] = []

    def append(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def entries(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._entries)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def steps(self, *, methods: Sequence[str] | None = None) -> list[Step]:
        """Steps in arrival order, optionally only some HTTP methods.

        The legacy SSE ``GET`` runs in parallel with the first POSTs, so compare POSTs in order and
        count the GETs separately: ``log.steps(methods=["POST", "DELETE"])``.
        """
        return [e.step for e in self.entries() if methods is None or e.method in methods]

    def count(self, method: str) -> int:
        return sum(1 for e in self.entries() if e.method == method)

    def tool_calls(self) -> list[RecordedRequest]:
        return [e for e in self.entries() if e.rpc_method == "tools/call"]


Verifier = Callable[[RecordedRequest], None]


class RecordingGuard:
    """Pure ASGI middleware: buffer the body, record the request, optionally verify, replay.

    ``verifier(request)`` raises to refuse (answered 401 ``application/problem+json`` with the error's
    ``code`` attribute, never reaching the MCP app). ``legacy_only`` answers 2026-era requests like an
    mcp 1.x server. Bodies over 1 MiB are refused with 413 (bounded buffering).
    """

    def __init__(
        self, app: ASGIApp, *, log: RequestLog, verifier: Verifier | None = None, legacy_only: bool = False
    ) -> None:
        self.app = app
        self.log = log
        self.verifier = verifier
        self.legacy_only = legacy_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        query = scope.get("query_string", b"").decode("latin-1")
        # The URI the client sent to (what @target-uri covers): scheme, Host header, raw path, query.
        raw_path = scope.get("raw_path") or scope["path"].encode()
        target = raw_path.decode("latin-1") + (f"?{query}" if query else "")
        entry = RecordedRequest(
            method=scope["method"],
            url=f"{scope['scheme']}://{headers.get('host', '')}{target}",
            path=scope["path"],
            query=query,
            headers=headers,
            body=body or b"",
        )
        self.log.append(entry)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                for raw_name, raw_value in message.get("headers", []):
                    if raw_name.lower() == b"content-type":
                        entry.content_type = raw_value.decode("latin-1")
                    elif raw_name.lower() == b"mcp-session-id":
                        entry.session_id_answered = raw_value.decode("latin-1")
            await send(message)

        if body is None:
            await _answer_json(recording_send, 413, {"error": "body too large"})
            return
        version = headers.get("mcp-protocol-version")
        if self.legacy_only and version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            # What mcp 1.x's stateful transport answers to a POST without a session id.
            await _answer_json(
                recording_send,
                400,
                {
                    "jsonrpc": "2.0",
                    "id": "server-error",
                    "error": {"code": -32600, "message": "Bad Request: Missing session ID"},
                },
            )
            return
        if self.verifier is not None:
            try:
                self.verifier(entry)
            except Exception as exc:
                entry.rejected = str(getattr(exc, "code", type(exc).__name__))
                await _answer_json(
                    recording_send,
                    401,
                    {"type": "urn:mcpclient-auth:problem:" + entry.rejected, "title": "request refused"},
                    content_type="application/problem+json",
                )
                return
        await self.app(scope, _replay(body, receive), recording_send)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later: http.disconnect, which the SSE responses wait for

    return replay


async def _answer_json(
    send: Send, status: int, payload: Any, *, content_type: str = "application/json"
) -> None:
    data = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def signature_verifier(
    trust: Any,
    *,
    audience: str | None = None,
    ect_header: str = "Execution-Context",
    ect_audience: str | None = None,
    mandate_audience: str | None = None,
) -> Verifier:
    """A guard ``verifier`` built from the SDK's own verifiers (``RequestVerifier`` for the RFC 9421
    signature; with ``ect_audience`` / ``mandate_audience`` also the ECT and the ``ACT-Mandate``).

    The ``VerifiedSignature`` lands in ``recorded.verified``. Imported lazily: the request-path modules
    are built in parallel with this support code.
    """
    from mcpclient_auth.httpsig import RequestVerifier

    verifier = RequestVerifier(trust, audience=audience, ect_header=ect_header)

    def verify(entry: RecordedRequest) -> None:
        entry.verified = verifier.verify(entry, body=entry.body)
        if ect_audience is not None:
            from mcpclient_auth.ect import ExecutionContextToken

            ExecutionContextToken.verify(entry.header(ect_header) or "", trust, audience=ect_audience)
        if mandate_audience is not None:
            from mcpclient_auth.act import Mandate

            Mandate.verify(entry.header("act-mandate") or "", trust, audience=mandate_audience)

    return verify


@dataclass(frozen=True)
class ServerMode:
    """How the fastmcp 4 app is built and which protocol era the guard lets through."""

    name: str
    stateless_http: bool
    legacy_only: bool


#: Registry of the two server modes the stack-B suite runs against.
SERVER_MODES: dict[str, ServerMode] = {
    "stateless": ServerMode("stateless", stateless_http=True, legacy_only=False),
    "legacy": ServerMode("legacy", stateless_http=False, legacy_only=True),
}


def build_app(
    mode: str | ServerMode,
    *,
    log: RequestLog,
    verifier: Verifier | None = None,
    middleware: Sequence[Middleware] = (),
    server: FastMCP | None = None,
) -> Any:
    """The Starlette app: guard outermost (it sees every request), then ``middleware``, then MCP."""
    spec = SERVER_MODES[mode] if isinstance(mode, str) else mode
    stack = [
        Middleware(RecordingGuard, log=log, verifier=verifier, legacy_only=spec.legacy_only),
        *middleware,
    ]
    return (server or build_mcp_server()).http_app(
        path=MCP_PATH, stateless_http=spec.stateless_http, middleware=stack
    )


@dataclass
class RunningServer:
    mode: ServerMode
    base_url: str
    log: RequestLog = field(default_factory=RequestLog)

    @property
    def url(self) -> str:
        return self.base_url + MCP_PATH


@contextmanager
def running_server(
    mode: str | ServerMode,
    *,
    verifier: Verifier | None = None,
    middleware: Sequence[Middleware] = (),
    server: FastMCP | None = None,
) -> Iterator[RunningServer]:
    """Serve a fresh fastmcp 4 app in ``mode`` on 127.0.0.1; yields its URL and request log."""
    spec = SERVER_MODES[mode] if isinstance(mode, str) else mode
    log = RequestLog()
    app = build_app(spec, log=log, verifier=verifier, middleware=middleware, server=server)
    with serve(app) as base_url:
        yield RunningServer(spec, base_url, log)


# --------------------------------------------------------------------------------------------- clients


@asynccontextmanager
async def plain_client(
    url: str, *, mode: str = "auto", http_client: httpx2.AsyncClient | None = None
) -> AsyncIterator[Client]:
    """An unsigned mcp 2.x ``Client`` over ``streamable_http_client(url, http_client=...)``."""
    if http_client is None:
        async with httpx2.AsyncClient() as owned, plain_client(url, mode=mode, http_client=owned) as client:
            yield client
        return
    async with Client(streamable_http_client(url, http_client=http_client), mode=mode) as client:
        yield client


class ScriptedChatModel(GenericFakeChatModel):
    """A chat model that replays scripted ``AIMessage`` s and accepts any tools (offline agents)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:  # type: ignore[override]
        return self


def tool_call(name: str, args: dict[str, Any] | None = None, *, call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args or {}, "id": call_id, "type": "tool_call"}


def scripted_model(*turns: Sequence[dict[str, Any]] | str) -> ScriptedChatModel:
    """``scripted_model([tool_call(...)], [tool_call(...), tool_call(...)], "final answer")``."""
    messages = [
        AIMessage(content=turn) if isinstance(turn, str) else AIMessage(content="", tool_calls=list(turn))
        for turn in turns
    ]
    return ScriptedChatModel(messages=iter(messages))


# --------------------------------------------------------------------------------------------- baselines
#
# The exact request sequences of an *unsigned* client, per (server mode, client mode), for the standard
# plain workload below. Signed runs must produce the same sequence (the hooks add headers, never
# requests) — except for local refusals, which never reach the server.

_WORKLOAD: list[Step] = [
    ("POST", "tools/list", None),
    ("POST", "tools/call", "search"),
    ("POST", "tools/call", "get_office_locations"),
    ("POST", "tools/call", "slow_echo"),
]
_HANDSHAKE: list[Step] = [("POST", "initialize", None), ("POST", "notifications/initialized", None)]
_DISCOVER: list[Step] = [("POST", "server/discover", None)]

#: (server mode, client mode) -> (POST/DELETE steps in order, number of GETs)
PLAIN_BASELINE: dict[tuple[str, str], tuple[list[Step], int]] = {
    ("stateless", "auto"): (_DISCOVER + _WORKLOAD, 0),
    ("stateless", MODERN_VERSION): (_WORKLOAD, 0),
    # Stateless legacy: the handshake happens, but no session id, no GET stream, no DELETE.
    ("stateless", "legacy"): (_HANDSHAKE + _WORKLOAD, 0),
    # The discover probe is refused (400), auto falls back to the handshake.
    ("legacy", "auto"): (_DISCOVER + _HANDSHAKE + _WORKLOAD + [("DELETE", None, None)], 1),
    ("legacy", "legacy"): (_HANDSHAKE + _WORKLOAD + [("DELETE", None, None)], 1),
}


@dataclass
class WorkloadResult:
    tools: list[str]
    search: str
    offices: Any
    echo: str
    progress: list[tuple[float, float | None]]
    protocol_version: str | None


async def plain_workload(client: Client) -> WorkloadResult:
    """list_tools, search, get_office_locations, slow_echo(steps=3) with a progress callback."""
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    listed = await client.list_tools()
    found = await client.call_tool("search", {"query": "vacation policy"})
    offices = await client.call_tool("get_office_locations", {})
    echoed = await client.call_tool("slow_echo", {"text": "hello", "steps": 3}, progress_callback=on_progress)
    return WorkloadResult(
        tools=[tool.name for tool in listed.tools],
        search=found.content[0].text,  # type: ignore[union-attr]
        offices=offices.structured_content,
        echo=echoed.content[0].text,  # type: ignore[union-attr]
        progress=progress,
        protocol_version=client.session.protocol_version,
    )


# --------------------------------------------------------------------------------------------- agents
#
# Stand-ins for the SDK's stack-B adapter, built from public extension points only: a fastmcp client
# factory (``httpx_client_factory``) and LangChain agent middleware that selects the user per tool call.

CURRENT_USER: ContextVar[str | None] = ContextVar("stack_b_current_user", default=None)


@dataclass
class HookRecord:
    step: Step
    user: str | None
    session_id: str | None
    body: bytes

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(json.loads(self.body)["params"].get("arguments") or {})


class RecordingFactory:
    """A fastmcp ``httpx_client_factory``: accepts ``**kwargs`` (fastmcp adds ``follow_redirects``) and
    puts a request hook on every client that records which user's context the request was sent in."""

    def __init__(self, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.clients: list[httpx2.AsyncClient] = []
        self.records: list[HookRecord] = []
        self._transport = transport

    def __call__(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
        **kwargs: Any,
    ) -> httpx2.AsyncClient:
        self.calls.append({"headers": headers, "timeout": timeout, "auth": auth, **kwargs})
        client = httpx2.AsyncClient(
            headers=headers,
            timeout=timeout if timeout is not None else httpx2.Timeout(30.0, read=300.0),
            auth=auth,
            transport=self._transport,
            event_hooks={"request": [self._record]},
            **kwargs,
        )
        self.clients.append(client)
        return client

    async def _record(self, request: httpx2.Request) -> None:
        # aread(): a request rebuilt for a redirect raises RequestNotRead on .content
        body = await request.aread()
        message = json.loads(body) if body else {}
        method = message.get("method") if isinstance(message, dict) else None
        tool = (message.get("params") or {}).get("name") if method == "tools/call" else None
        self.records.append(
            HookRecord(
                (request.method, method, tool),
                CURRENT_USER.get(),
                request.headers.get("mcp-session-id"),
                body,
            )
        )


@dataclass
class UserContext:
    """LangGraph runtime context of one agent run (``agent.ainvoke(..., context=UserContext("alice"))``)."""

    user: str


class PerUserMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Select the user for each tool call from ``request.runtime.context`` through a contextvar.

    mcp 2.x runs each POST in the context of the call that sent it, so the contextvar set here reaches
    the httpx2 request hooks even when the MCP session was opened earlier, in another context.
    """

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        token = CURRENT_USER.set(request.runtime.context.user)
        try:
            return await handler(request)
        finally:
            CURRENT_USER.reset(token)


class RefusalToToolError(AgentMiddleware):  # type: ignore[type-arg]
    """Turn a local refusal (JSON-RPC -32003) into an error ``ToolMessage`` the model can read.

    ``langchain.mcp`` only converts tool-reported errors (``isError``); an ``MCPError`` from the
    session propagates and would end the agent run.
    """

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        try:
            return await handler(request)
        except MCPError as exc:
            if exc.code != REFUSAL_CODE:
                raise
            return ToolMessage(
                content=f"refused: {exc.message}",
                tool_call_id=request.tool_call["id"],
                name=request.tool_call["name"],
                status="error",
            )


REFUSAL_CODE = -32003


class RefusingTransport(httpx2.AsyncBaseTransport):
    """Answer ``tools/call`` of the ``refused`` tools locally with HTTP 200 + JSON-RPC error -32003 —
    the shape ``factory.py`` produces for a mandate denial — without touching the network."""

    def __init__(
        self, inner: httpx2.AsyncBaseTransport, refused: Sequence[str] = ("get_employee_salary",)
    ) -> None:
        self.inner = inner
        self.refused = frozenset(refused)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        message = json.loads(body) if body else None
        if (
            isinstance(message, dict)
            and message.get("method") == "tools/call"
            and (message.get("params") or {}).get("name") in self.refused
            and "id" in message
        ):
            tool = message["params"]["name"]
            error = {
                "code": REFUSAL_CODE,
                "message": f"the mandate does not allow mcp.{tool}",
                "data": {"code": "mandate_denied"},
            }
            return httpx2.Response(
                200, json={"jsonrpc": "2.0", "id": message["id"], "error": error}, request=request
            )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


# The agent baseline: a scripted model calls ``search`` then ``get_office_locations`` (two turns) through
# ``MCPAdapter`` tools, with the adapter's session held open (``async with adapter``) or not (then every
# tool call opens and closes its own session). After the first ``tools/call`` of a session the client
# lists the tools once more (output-schema check), because the adapter's own list ran in another session.
_SEARCH_CALL: list[Step] = [("POST", "tools/call", "search"), ("POST", "tools/list", None)]
_OFFICES_CALL: list[Step] = [("POST", "tools/call", "get_office_locations")]
_FALLBACK: list[Step] = _DISCOVER + _HANDSHAKE
_DELETE: list[Step] = [("DELETE", None, None)]

#: (server mode, session held) -> (POST/DELETE steps in order, number of GETs)
AGENT_BASELINE: dict[tuple[str, bool], tuple[list[Step], int]] = {
    ("stateless", True): (_DISCOVER + _SEARCH_CALL + _OFFICES_CALL, 0),
    ("stateless", False): (
        _DISCOVER + _SEARCH_CALL + _DISCOVER + _OFFICES_CALL + [("POST", "tools/list", None)],
        0,
    ),
    ("legacy", True): (_FALLBACK + _SEARCH_CALL + _OFFICES_CALL + _DELETE, 1),
    ("legacy", False): (
        _FALLBACK
        + _SEARCH_CALL
        + _DELETE
        + _FALLBACK
        + _OFFICES_CALL
        + [("POST", "tools/list", None)]
        + _DELETE,
        2,
    ),
}
