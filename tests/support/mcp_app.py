"""A real FastMCP server for end-to-end tests, behind a pure-ASGI guard that verifies every request.

    guard_state = GuardState(trust, audience=f"{base}/mcp")      # audience filled in once served
    app = build_app(guard_state)
    with serve(app) as base:
        guard_state.audience = f"{base}/mcp"
        ...
    guard_state.verified_ects, guard_state.rejected, guard_state.seen

The guard buffers ``receive()``, verifies the raw request with the SDK's own verifiers and replays the
body to FastMCP unchanged:

- ``Content-Digest`` against the body bytes (``verify_content_digest``);
- the RFC 9421 signature (``RequestVerifier``, nonce replay cache);
- the mandate (``Mandate.verify`` with the audience), its key binding to the signing key;
- for POSTs: the ECT (``ExecutionContextToken.verify`` with audience and a replay cache), ``inp_hash``
  equal to the SHA-256 of the body, ``wid`` = mandate ``jti``, ``iss`` = mandate ``sub``, the ECT's
  ``exec_act`` equal to the action the body names, and ``exec_act`` ∈ ``cap`` for tool calls.

Requests on other paths (OAuth metadata, token) are recorded and passed through. Optional behaviour
for specific tests: ``require_bearer`` (401 + ``WWW-Authenticate`` until the right bearer token is
sent), ``redirect_slash`` (307 from ``/mcp`` to ``/mcp/``; the app serves both).
The mcpclient_auth.server middleware may later replace this guard; it deliberately stays in tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastmcp import Context, FastMCP
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.digest import verify_content_digest
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import McpClientAuthError
from mcpclient_auth.httpsig import RequestVerifier
from mcpclient_auth.jsonrpc import Call, parse
from mcpclient_auth.keys import TrustStore
from mcpclient_auth.policy import McpActionPolicy
from mcpclient_auth.replay import ReplayCache

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OUR_HEADERS = ("act-mandate", "execution-context", "signature", "signature-input", "content-digest")
MCP_PATH = "/mcp"
SALARIES = {"alice": 120_000, "bob": 95_000}


# --- the MCP server ------------------------------------------------------------------------------------


class Rendezvous:
    """Lets N concurrent tool calls wait for each other, so they are provably in flight together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[str, tuple[int, asyncio.Event]] = {}

    async def arrive(self, key: str, size: int, timeout: float = 10.0) -> int:
        with self._lock:
            count, event = self._groups.get(key, (0, asyncio.Event()))
            count += 1
            self._groups[key] = (count, event)
            if count >= size:
                event.set()
        await asyncio.wait_for(event.wait(), timeout)
        return count


class ProgressGates:
    """Client and server share this process: the client releases step *i* of ``stepwise`` only after
    it has *seen* progress notification *i*. A buffered response would deadlock (bounded) instead."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._released: Counter[str] = Counter()

    def release(self, key: str) -> None:
        with self._lock:
            self._released[key] += 1

    def released(self, key: str) -> int:
        with self._lock:
            return self._released[key]


GATES = ProgressGates()


def build_mcp(name: str = "hr") -> FastMCP:
    mcp = FastMCP(name)
    rendezvous = Rendezvous()

    @mcp.tool
    def search(query: str) -> str:
        """Search the HR handbook."""
        return f"results for {query!r}: 3 documents"

    @mcp.tool
    def get_office_locations() -> list[str]:
        """List the company's offices."""
        return ["Berlin", "Lisbon", "Toronto"]

    @mcp.tool
    def get_employee_salary(employee: str) -> int:
        """An employee's salary (sensitive)."""
        return SALARIES.get(employee, 0)

    @mcp.tool
    async def slow_echo(text: str, steps: int = 3, ctx: Context | None = None) -> str:
        """Echo ``text`` after reporting ``steps`` progress notifications."""
        assert ctx is not None
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
            await asyncio.sleep(0.01)
        return text

    @mcp.tool
    async def stepwise(key: str, steps: int = 3, ctx: Context | None = None) -> str:
        """Reports progress, then waits (bounded) until the client saw it, ``steps`` times."""
        assert ctx is not None
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
            for _ in range(1000):  # at most ~5 s
                if GATES.released(key) > i:
                    break
                await asyncio.sleep(0.005)
            else:
                return f"progress {i + 1} never reached the client"
        return "streamed"

    @mcp.tool
    async def gather_point(key: str, size: int) -> str:
        """Returns only when ``size`` calls with this ``key`` have arrived (bounded wait)."""
        await rendezvous.arrive(key, size)
        return f"{key} complete"

    return mcp


# --- the guard -----------------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the guard saw it."""

    method: str
    path: str
    carried_our_headers: list[str]
    authorization: str | None
    verified: bool = False
    ect: ExecutionContextToken | None = None
    error: str | None = None
    body: bytes = b""


@dataclass
class GuardState:
    trust: TrustStore
    audience: str = ""
    #: Paths the guard verifies (trailing slash ignored); others pass through, recorded.
    mcp_paths: frozenset[str] = frozenset({MCP_PATH})
    require_bearer: str | None = None
    redirect_slash: bool = False
    resource_metadata_url: str | None = None
    verified_ects: int = 0
    verified_requests: int = 0
    rejected: int = 0
    requests: list[Seen] = field(default_factory=list)
    per_path: Counter[str] = field(default_factory=Counter)
    ect_cache: ReplayCache = field(default_factory=ReplayCache)
    nonce_cache: ReplayCache = field(default_factory=ReplayCache)

    def reset(self) -> None:
        self.verified_ects = self.verified_requests = self.rejected = 0
        self.requests.clear()
        self.per_path.clear()

    @property
    def ects(self) -> list[ExecutionContextToken]:
        return [r.ect for r in self.requests if r.ect is not None]

    def errors(self) -> list[str]:
        return [f"{r.method} {r.path}: {r.error}" for r in self.requests if r.error]


class _Rejected(Exception):
    """A verification failure: counted in ``rejected``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class _Answer(_Rejected):
    """A deliberate test behaviour (401 challenge, 307 redirect) for a request that verified."""


def _headers_of(scope: Scope) -> httpx.Headers:
    return httpx.Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]])


def _url_of(scope: Scope, headers: httpx.Headers) -> str:
    host = headers.get("host", "")
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('raw_path', scope['path'].encode()).decode('latin-1')}" + (
        f"?{query}" if query else ""
    )


class Guard:
    """Pure ASGI middleware: buffer, verify with the SDK's verifiers, replay."""

    def __init__(self, app: Callable[..., Awaitable[None]], state: GuardState) -> None:
        self.app = app
        self.state = state
        self.policy = McpActionPolicy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        headers = _headers_of(scope)
        path = scope["path"]
        state.per_path[path] += 1
        seen = Seen(
            method=scope["method"],
            path=path,
            carried_our_headers=[h for h in OUR_HEADERS if h in headers],
            authorization=headers.get("authorization"),
        )
        state.requests.append(seen)
        if path.rstrip("/") not in state.mcp_paths:
            await self.app(scope, receive, send)
            return

        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        seen.body = body

        try:
            self._verify(scope, headers, body, seen)
            if state.require_bearer is not None and headers.get("authorization") != f"Bearer {state.require_bearer}":
                meta = state.resource_metadata_url or ""
                raise _Answer(
                    401, "bearer token required", {"www-authenticate": f'Bearer resource_metadata="{meta}"'}
                )
            if state.redirect_slash and path == MCP_PATH:
                raise _Answer(307, "moved", {"location": MCP_PATH + "/"})
        except _Answer as exc:
            await _respond(send, exc.status, {"error": str(exc)}, exc.headers)
            return
        except _Rejected as exc:
            state.rejected += 1
            seen.error = str(exc)
            await _respond(send, exc.status, {"error": str(exc)}, exc.headers)
            return
        except McpClientAuthError as exc:
            state.rejected += 1
            seen.error = f"{exc.code}: {exc}"
            await _respond(send, 403, {"error": exc.code})
            return

        if state.redirect_slash and path == MCP_PATH + "/":  # the app serves /mcp; /mcp/ is the redirect target
            scope = dict(scope, path=MCP_PATH, raw_path=MCP_PATH.encode())
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _verify(self, scope: Scope, headers: httpx.Headers, body: bytes, seen: Seen) -> None:
        state = self.state
        request = httpx.Request(scope["method"], _url_of(scope, headers), headers=headers, content=body)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            verify_content_digest(headers.get("content-digest"), body)
        # wimse-aud names the endpoint (the tokens' aud), also on a /mcp/ hop or the legacy /messages/ path
        verifier = RequestVerifier(state.trust, nonce_cache=state.nonce_cache, audience=state.audience)
        signature = verifier.verify(request, body=body)
        mandate_token = headers.get("act-mandate")
        if mandate_token is None:
            auth = headers.get("authorization", "")
            mandate_token = auth[7:] if auth.startswith("Bearer ") else None
        if mandate_token is None:
            raise _Rejected(401, "no mandate")
        mandate = Mandate.verify(mandate_token, state.trust, audience=state.audience)
        if mandate.agent_kid is not None and mandate.agent_kid != signature.keyid:
            raise _Rejected(403, "request not signed by the mandate's agent key")
        state.verified_requests += 1
        seen.verified = True
        if scope["method"] != "POST":
            return
        ect_token = headers.get("execution-context")
        if ect_token is None:
            raise _Rejected(403, "POST without an ECT")
        ect = ExecutionContextToken.verify(ect_token, state.trust, audience=state.audience, replay=state.ect_cache)
        if ect.inp_hash != sha256_b64url(body):
            raise _Rejected(403, "inp_hash is not the hash of the body")
        if ect.wid != mandate.jti or ect.iss != mandate.sub:
            raise _Rejected(403, "ECT not bound to the mandate")
        call = parse(body)
        assert isinstance(call, Call)
        action = self.policy.action_for(call)
        if ect.exec_act != action:
            raise _Rejected(403, "exec_act does not name the call in the body")
        if call.is_tool_call and not mandate.allows(ect.exec_act):
            raise _Rejected(403, "exec_act outside the mandate")
        seen.ect = ect
        state.verified_ects += 1


async def _respond(send: Send, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# --- OAuth endpoints on the same origin (for the scope-guard test) -------------------------------------


def oauth_routes(issued_token: str) -> list[Route]:
    """RFC 9728 resource metadata, RFC 8414 server metadata and a client-credentials token endpoint."""

    def base(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}"

    async def resource_metadata(request: Request) -> JSONResponse:
        return JSONResponse({"resource": f"{base(request)}{MCP_PATH}", "authorization_servers": [base(request)]})

    async def server_metadata(request: Request) -> JSONResponse:
        b = base(request)
        return JSONResponse(
            {
                "issuer": b,
                "authorization_endpoint": f"{b}/authorize",
                "token_endpoint": f"{b}/token",
                "response_types_supported": ["code"],
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            }
        )

    async def token(request: Request) -> JSONResponse:
        form = await request.form()
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        return JSONResponse({"access_token": issued_token, "token_type": "Bearer", "expires_in": 3600})

    return [
        Route("/.well-known/oauth-protected-resource/mcp", resource_metadata),
        Route("/.well-known/oauth-protected-resource", resource_metadata),
        Route("/.well-known/oauth-authorization-server", server_metadata),
        Route("/token", token, methods=["POST"]),
    ]


def build_app(
    state: GuardState,
    *,
    mcp: FastMCP | None = None,
    json_response: bool = False,
    extra_routes: list[Route] | None = None,
    legacy_sse: bool = False,
) -> Starlette:
    """FastMCP's streamable-HTTP app at ``/mcp`` behind the guard (plus optional extra routes).

    ``legacy_sse=True``: the deprecated HTTP+SSE transport instead (GET ``/sse``, POST ``/messages/``).
    """
    server = mcp or build_mcp()
    if legacy_sse:
        state.mcp_paths = frozenset({"/sse", "/messages"})
        mcp_app = server.http_app(path="/sse", transport="sse")
    else:
        mcp_app = server.http_app(path=MCP_PATH, json_response=json_response)
    routes: list[Any] = list(extra_routes or [])
    routes.append(Mount("/", app=mcp_app))
    return Starlette(routes=routes, middleware=[Middleware(Guard, state=state)], lifespan=mcp_app.lifespan)


class EchoApp:
    """Another origin. Records the headers of every request; answers with them as JSON. ``/hop?to=URL``
    answers 307 to ``URL`` (to test what a redirect to another origin carries)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, str]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        got = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.received.append((scope["method"], scope["path"], got))
        query = scope.get("query_string", b"").decode("latin-1")
        if scope["path"] == "/hop" and query.startswith("to="):
            await _respond(send, 307, {}, {"location": query[3:]})
            return
        await _respond(send, 200, {"path": scope["path"], "headers": got})

    def ours(self) -> list[str]:
        """Our header names seen on any request this app received."""
        return sorted({h for _, _, headers in self.received for h in OUR_HEADERS if h in headers})
