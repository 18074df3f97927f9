"""A pure ASGI middleware that verifies mcpclient-auth requests before an MCP server sees them.

    from starlette.middleware import Middleware
    from mcpclient_auth.server import McpAuthMiddleware

    app = mcp.http_app(path="/mcp", middleware=[
        Middleware(McpAuthMiddleware, trust=trust, audience="http://127.0.0.1:8000/mcp"),
    ])

Inside a tool, :func:`verified_request` returns what the request proved (principal, mandate, ECT):

    from fastmcp.server.dependencies import get_http_request
    who = verified_request(get_http_request()).principal

Failures are answered with RFC 9457 ``application/problem+json``: 401 for missing or invalid
credentials, 403 for valid credentials asking for an action the mandate does not grant. The body of a
POST is buffered (bounded), verified and replayed to the app unchanged; the SSE ``GET`` is verified
from its headers and never buffered. OAuth discovery (``/.well-known/...``) passes untouched.

Every MCP session is bound to the caller that opened it (mandate ``iss``/``sub`` and agent key): a
request on someone else's ``mcp-session-id`` is refused 403 ``session_not_yours``, one on a session id
the middleware holds no owner for 404 ``session_unknown`` (:mod:`._sessions`; ``bind_sessions=False``
turns this off). ECTs must name their run (``wid``) and only predecessors this server accepted for
that run, unless ``multi_server_runs=True`` (:mod:`._dagshape`; one process's memory: see there).

``ledger=`` adds the server's audit ledger (same format as the client's): each run's mandate once,
each accepted ECT, and each refusal whose mandate verified (earlier refusals cannot be filed under a
run, so they are only logged). The server cannot seal a client's run: verify it with
``verify_ledger(path, trust, allow_unsealed=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from ..act import Mandate
from ..keys import TrustStore
from ..ledger import Ledger
from ..policy import ActionPolicy
from ._sessions import SESSION_HEADER, Caller, SessionBindings
from .verify import IncomingHeaders, IncomingRequest, McpRequestVerifier, Rejection, VerifiedRequest

__all__ = ["PROBLEM_TYPE_PREFIX", "STATE_KEY", "McpAuthMiddleware", "verified_request"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: ``scope["state"][STATE_KEY]`` holds the :class:`VerifiedRequest` of an accepted request.
STATE_KEY = "mcpclient_auth"
#: Problem ``type`` URIs are URNs: stable identifiers that point at no network location.
PROBLEM_TYPE_PREFIX = "urn:mcpclient-auth:problem:"

_log = logging.getLogger("mcpclient_auth.server")


def verified_request(request_or_scope: Any) -> VerifiedRequest | None:
    """The :class:`VerifiedRequest` for a Starlette ``Request`` (or an ASGI scope), if verified."""
    scope = getattr(request_or_scope, "scope", request_or_scope)
    state = scope.get("state") if isinstance(scope, MutableMapping) else None
    value = state.get(STATE_KEY) if isinstance(state, MutableMapping) else None
    return value if isinstance(value, VerifiedRequest) else None


class McpAuthMiddleware:
    """Verify every request to the MCP endpoint(s); pass everything else through untouched.

    ``paths`` are the protected MCP paths (default ``("/mcp",)``; the legacy SSE ``/messages/`` path
    can be added). ``public_url`` is the origin clients use (``https://hr.example``) when the server
    sits behind a proxy; otherwise the request's ``Host`` header and scheme are used, because the
    signature covers the URI the *client* sent to.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        trust: TrustStore,
        audience: str,
        paths: Sequence[str] = ("/mcp",),
        public_url: str | None = None,
        max_age: int = 60,
        skew: int = 60,
        policy: ActionPolicy | None = None,
        require_ect: bool = True,
        ect_header: str = "Execution-Context",
        mandate_header: str = "ACT-Mandate",
        require_key_binding: bool = True,
        max_body_bytes: int = 4 * 1024 * 1024,
        ledger: Ledger | str | os.PathLike[str] | None = None,
        passthrough_prefixes: Sequence[str] = ("/.well-known/",),
        bind_sessions: bool = True,
        multi_server_runs: bool = False,
    ) -> None:
        self.app = app
        self.paths = tuple(p.rstrip("/") or "/" for p in paths)
        self.public_url = public_url.rstrip("/") if public_url else None
        self.max_body_bytes = max_body_bytes
        self.passthrough_prefixes = tuple(passthrough_prefixes)
        self.verifier = McpRequestVerifier(
            trust,
            audience=audience,
            max_age=max_age,
            skew=skew,
            policy=policy,
            require_ect=require_ect,
            require_key_binding=require_key_binding,
            ect_header=ect_header,
            mandate_header=mandate_header,
            multi_server_runs=multi_server_runs,
        )
        #: who opened which MCP session (``None``: sessions are not bound)
        self.sessions: SessionBindings | None = SessionBindings() if bind_sessions else None
        self.ledger = ledger if isinstance(ledger, Ledger) or ledger is None else Ledger(ledger)
        self._ledgered_mandates: OrderedDict[str, None] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._protected(scope):
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET")).upper()
        if method == "OPTIONS":  # CORS preflight carries no credentials by design
            await self.app(scope, receive, send)
            return

        body = b""
        if method in ("POST", "PUT", "PATCH"):
            buffered = await self._read_body(receive)
            if buffered is None:
                await _problem(send, 413, "body_too_large", "The request body exceeds the allowed size.")
                return
            body = buffered
            receive = _replay(body, receive)

        request = IncomingRequest(method, self._url(scope), IncomingHeaders(scope.get("headers", [])), body)
        verified = self.verifier.check(request, now=time.time())
        if isinstance(verified, Rejection):
            error, status = verified.error, verified.status
            _log.info("rejected %s %s: %s (%s)", method, scope.get("path"), error.code, status)
            self._audit_denial(request, verified)
            await _problem(send, status, error.code, error.message)
            return

        if self.sessions is not None:
            session_id, caller = request.headers.get(SESSION_HEADER), Caller.of(verified)
            refusal = self.sessions.admit(session_id, caller)
            if refusal is not None:
                _log.info("rejected %s %s: %s", method, scope.get("path"), refusal.code)
                denied = Rejection(refusal, verified.mandate, verified.call, verified.action)
                self._audit_denial(request, denied)
                await _problem(send, refusal.http_status, refusal.code, refusal.message)
                return
            send = self.sessions.watch(send, method, session_id, caller)

        scope.setdefault("state", {})[STATE_KEY] = verified
        self._audit_accept(request, verified)
        await self.app(scope, receive, send)

    # --- helpers -----------------------------------------------------------------------------------

    def _protected(self, scope: Scope) -> bool:
        path = str(scope.get("path", ""))
        if path.startswith(self.passthrough_prefixes):
            return False
        trimmed = path.rstrip("/") or "/"
        return any(trimmed == p or trimmed.startswith(p + "/") for p in self.paths)

    def _url(self, scope: Scope) -> str:
        path = scope.get("raw_path") or str(scope.get("path", "")).encode("utf-8")
        target = path.decode("latin-1") if isinstance(path, bytes) else str(path)
        query = scope.get("query_string", b"")
        if query:
            target += "?" + (query.decode("latin-1") if isinstance(query, bytes) else str(query))
        if self.public_url:
            return self.public_url + target
        host = ""
        for name, value in scope.get("headers", []):
            if name == b"host":
                host = value.decode("latin-1")
                break
        if not host:
            server = scope.get("server") or ("localhost", None)
            host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}{target}"

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _audit_mandate(self, mandate: Mandate) -> str:
        """File the mandate once per run (per process) so the run's later entries verify against it."""
        run = mandate.jti
        if run not in self._ledgered_mandates:
            assert self.ledger is not None
            self.ledger.append(
                run=run, kind="mandate", jti=run, token=mandate.token, meta={"agent": mandate.sub}
            )
            self._ledgered_mandates[run] = None
            while len(self._ledgered_mandates) > 10_000:
                self._ledgered_mandates.popitem(last=False)
        return run

    def _audit_accept(self, request: IncomingRequest, verified: VerifiedRequest) -> None:
        if self.ledger is None or verified.mandate is None:
            return
        run = self._audit_mandate(verified.mandate)
        if verified.ect is not None:
            # Same meta as the client's ``ect`` entries (internals.md), so one renderer reads both.
            meta: dict[str, Any] = {"method": verified.call.method if verified.call else None}
            if verified.call is not None:
                meta["id"] = verified.call.id
                if verified.call.tool is not None:
                    meta["tool"] = verified.call.tool
            meta.update(url=_without_query(request.url), action=verified.action, principal=verified.principal)
            self.ledger.append(run=run, kind="ect", jti=verified.ect.jti, token=verified.ect.token, meta=meta)

    def _audit_denial(self, request: IncomingRequest, rejection: Rejection) -> None:
        # Only a rejection whose mandate verified can be filed under a run: the ledger verifier
        # insists every run starts with a valid mandate. Anything earlier is logged, not ledgered.
        if self.ledger is None or rejection.mandate is None:
            return
        run = self._audit_mandate(rejection.mandate)
        call = rejection.call
        meta = {
            "method": call.method if call else None,
            "tool": call.tool if call else None,
            "id": call.id if call else None,
            "action": rejection.action,
            "code": rejection.error.code,
            "principal": rejection.mandate.iss,
            "status": rejection.status,
            "url": _without_query(request.url),
        }
        self.ledger.append(run=run, kind="denial", meta=meta)


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the buffered body to the app once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _problem(send: Send, status: int, code: str, detail: str) -> None:
    """An RFC 9457 problem document; ``detail`` is an SDK error message (never holds credentials)."""
    titles = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        413: "Content Too Large",
    }
    document = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": titles.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    payload = json.dumps(document, separators=(",", ":")).encode("utf-8")
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(payload)).encode("ascii")),
    ]
    if status == 401:
        # RFC 9110 wants a challenge on 401; say which signature profile we expect.
        headers.append((b"www-authenticate", b'HTTPSig realm="mcp", tag="mcpclient-auth/1"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
