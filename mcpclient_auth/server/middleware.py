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
credentials, 403 for valid credentials asking for an action the mandate does not grant, 503 (with
``Retry-After``) when the replay store is full or unreachable. Before any body byte is read, a request
without ``Signature-Input``, without a mandate, naming an unknown ``keyid`` or declaring a body over
the limit is refused; the body is then read under a deadline and a bound on concurrent reads
(``limits=RequestLimits(...)``, see :mod:`mcpclient_auth.server._limits`). The body of a POST is
buffered (bounded), verified and replayed to the app unchanged; the SSE ``GET`` is verified from its
headers and never buffered. OAuth discovery (``/.well-known/...``) passes untouched.

``replay_store=`` shares replay protection between worker processes
(:class:`~mcpclient_auth.replay_redis.RedisReplayStore`); the default is one in-memory store per
middleware (``replay_cache_size`` ids, ``replay_entries_per_key`` per signing key).
Every method but protocol plumbing needs a capability; constraints are enforced, unknown ones
refused (403). ``tools/list``, ``prompts/list``, ``resources/list`` and ``resources/templates/list``
answers are narrowed to what the caller's mandate grants (``filter_lists=True``, :mod:`._listfilter`).

Every MCP session is bound to the caller that opened it (mandate ``iss``/``sub`` and agent key): a
request on someone else's ``mcp-session-id`` is refused 403 ``session_not_yours``, one on a session id
the middleware holds no owner for 404 ``session_unknown`` (:mod:`._sessions`; ``bind_sessions=False``
turns this off). ECTs must name their run (``wid``) and only predecessors this server accepted for
that run, unless ``multi_server_runs=True`` (:mod:`._dagshape`; one process's memory: see there).

``ledger=`` adds the server's audit ledger (same format as the client's): each run's mandate once
per file (across restarts and workers), each accepted ECT, and each refusal whose mandate verified
(earlier refusals cannot be filed under a run, so they are only logged). The server cannot seal a
client's run; with ``ledger_key=`` it writes a signed checkpoint every ``checkpoint_every`` entries
and at shutdown (ASGI lifespan, or :meth:`McpAuthMiddleware.close`), see :mod:`._audit`. Verify it
with ``verify_ledger(path, trust, allow_unsealed=True)`` (the server key in ``trust``, with no role).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from .. import _telemetry
from ..act import Mandate
from ..constraints import ConstraintRegistry
from ..errors import ConfigurationError, McpClientAuthError, RequestIdInFlight, ServerLimitError
from ..keys import Identity, TrustStore
from ..ledger import Ledger
from ..ledger.anchor import Anchor
from ..policy import ActionPolicy
from ..replay import ReplayStore
from ._audit import DEFAULT_CHECKPOINT_EVERY, ServerAudit
from ._inflight import InFlightIds
from ._limits import BODY_METHODS, PreAuthGate, RequestLimits, Screened
from ._listfilter import list_filter_send
from ._sessions import SESSION_HEADER, Caller, SessionBindings
from .verify import (
    VERIFIED_METHODS,
    IncomingHeaders,
    IncomingRequest,
    McpRequestVerifier,
    Rejection,
    VerifiedRequest,
    http_status_for,
)

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
        max_body_bytes: int | None = None,
        ledger: Ledger | str | os.PathLike[str] | None = None,
        passthrough_prefixes: Sequence[str] = ("/.well-known/",),
        replay_store: ReplayStore | None = None,
        replay_cache_size: int = 200_000,
        replay_entries_per_key: int | None = None,
        limits: RequestLimits | None = None,
        filter_lists: bool = True,
        constraints: ConstraintRegistry | None = None,
        bind_sessions: bool = True,
        multi_server_runs: bool = False,
        budget_runs: int = 100_000,
        budget_runs_per_root: int | None = None,
        ledger_key: Identity | None = None,
        checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
        ledger_anchor: Anchor | None = None,
    ) -> None:
        self.app = app
        self.paths = paths  # normalised, with the per-request lookups derived (the setter below)
        self.public_url = public_url.rstrip("/") if public_url else None
        limits = limits or RequestLimits()
        if max_body_bytes is not None:  # the older keyword wins over limits.max_body_bytes
            limits = dataclasses.replace(limits, max_body_bytes=max_body_bytes)
        self.limits = limits
        self.max_body_bytes = limits.max_body_bytes
        self.gate = PreAuthGate(trust, limits, mandate_header=mandate_header)
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
            replay_store=replay_store,
            replay_cache_size=replay_cache_size,
            replay_entries_per_key=replay_entries_per_key,
            multi_server_runs=multi_server_runs,
            constraints=constraints,
            budget_runs=budget_runs,
            budget_runs_per_root=budget_runs_per_root,
        )
        self.filter_lists = filter_lists
        #: request ids pending per MCP session (a colliding id could misroute a listing: _inflight.py)
        self.inflight = InFlightIds()
        #: who opened which MCP session (``None``: sessions are not bound)
        self.sessions: SessionBindings | None = SessionBindings() if bind_sessions else None
        self.audit = (
            None
            if ledger is None
            else ServerAudit(
                ledger, key=ledger_key, checkpoint_every=checkpoint_every, anchor=ledger_anchor, skew=skew
            )
        )
        self.ledger = self.audit.ledger if self.audit is not None else None

    def close(self) -> None:
        """Write the audit ledger's last checkpoint and close it (also done at lifespan shutdown)."""
        if self.audit is not None:
            self.audit.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.audit is not None:
            await self.app(scope, receive, self.audit.lifespan_send(send))
            return
        if scope["type"] != "http" or not self._protected(scope):
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET")).upper()
        if method == "OPTIONS":  # CORS preflight carries no credentials by design
            await self.app(scope, receive, send)
            return

        headers = IncomingHeaders(scope.get("headers", []))
        screened = self.gate.check(method, headers)  # headers only: nothing read, nothing verified
        refusal = screened if isinstance(screened, McpClientAuthError) else None
        body = b""
        if isinstance(screened, Screened) and method in BODY_METHODS:
            try:
                body = await self.gate.read_body(receive, headers, screened.keyid)
            except ServerLimitError as exc:
                refusal = exc
            else:
                receive = _replay(body, receive)
        if refusal is not None:
            status = http_status_for(refusal)
            _log.info("refused %s %s early: %s (%s)", method, scope.get("path"), refusal.code, status)
            # The body was not (fully) read: close the connection rather than drain it.
            close = method in BODY_METHODS or method not in VERIFIED_METHODS
            await _problem(send, status, refusal.code, refusal.message, error=refusal, close=close)
            return

        # The gate's parse of Signature-Input goes to the verifier (used only for that exact value).
        parsed_input = screened.signature_input if isinstance(screened, Screened) else None
        request = IncomingRequest(method, self._url(scope), headers, body, signature_input=parsed_input)
        with _telemetry.server_span(method, body, headers):  # no-op unless OpenTelemetry is configured
            await self._verify_and_serve(scope, receive, send, method, request)

    async def _verify_and_serve(
        self, scope: Scope, receive: Receive, send: Send, method: str, request: IncomingRequest
    ) -> None:
        now = time.time()
        pending = self.verifier.check_unclaimed(request, now=now)
        # The replay ids are claimed only now that every other check passed; a shared store is
        # awaited, never blocking the loop.
        verified = (
            pending if isinstance(pending, Rejection) else await self.verifier.acommit(pending, now=now)
        )
        if isinstance(verified, Rejection):
            error, status = verified.error, verified.status
            _log.info("rejected %s %s: %s (%s)", method, scope.get("path"), error.code, status)
            self._audit_denial(request, verified)
            await _problem(send, status, error.code, error.message, error=error)
            return

        session_id = request.headers.get(SESSION_HEADER)
        caller = None
        if self.sessions is not None:
            caller = Caller.of(verified)
            not_yours = self.sessions.admit(session_id, caller)
            if not_yours is not None:
                _log.info("rejected %s %s: %s", method, scope.get("path"), not_yours.code)
                denied = Rejection(not_yours, verified.mandate, verified.call, verified.action)
                self._audit_denial(request, denied)
                await _problem(send, denied.status, not_yours.code, not_yours.message, error=not_yours)
                return

        pending_key = None
        call = verified.call
        is_request = call is not None and call.kind == "request"
        if self.filter_lists and method == "POST" and session_id and call is not None and is_request:
            pending_key = self.inflight.claim(session_id, call.id)
            if pending_key is None:
                # (A 400 start never binds or drops a session: sent past the session watch, as before.)
                collision = RequestIdInFlight("a request with this id is still pending in this MCP session")
                _log.info("rejected %s %s: %s", method, scope.get("path"), collision.code)
                denied = Rejection(collision, verified.mandate, call, verified.action)
                self._audit_denial(request, denied)
                await _problem(send, denied.status, collision.code, collision.message, error=collision)
                return
        if caller is not None or pending_key is not None:
            # One wrapper for what SessionBindings.watch and InFlightIds.watch do (a layer less per
            # ASGI message; test_server_send_watch.py holds it to the two nested wrappers).
            send = _watch(send, self.sessions, method, session_id, caller, self.inflight, pending_key)
        try:
            scope.setdefault("state", {})[STATE_KEY] = verified
            _telemetry.server_accepted(verified)
            self._audit_accept(request, verified)
            if self.filter_lists:  # list answers narrowed to the caller's mandate (server/_listfilter.py)
                verifier = self.verifier
                send = list_filter_send(
                    send, method, verified.call, verified.mandate, verifier.policy, verifier.constraints,
                    max_bytes=self.max_body_bytes,
                )
            await self.app(scope, receive, send)
        finally:
            if pending_key is not None:
                self.inflight.release(pending_key)

    # --- helpers -----------------------------------------------------------------------------------

    @property
    def paths(self) -> tuple[str, ...]:
        """The protected paths (and everything below them), without trailing slashes."""
        return self._paths

    @paths.setter
    def paths(self, paths: Sequence[str]) -> None:
        # _protected runs on every request, so the set and the "below" prefixes are derived once —
        # here, so that assigning new paths protects them at once (a copy made only in __init__
        # once left reassigned paths unprotected: review 5, F1).
        if isinstance(paths, str):
            raise ConfigurationError("paths must be a sequence of paths, not one string")
        normalised = tuple(p.rstrip("/") or "/" for p in paths)
        self._paths = normalised
        self._path_set = frozenset(normalised)
        # "Below /" is every path: its prefix is "" (every path starts with it), never "//" (which
        # no path starts with: "/" once protected itself alone).
        self._below_paths = tuple("" if p == "/" else p + "/" for p in normalised)

    def _protected(self, scope: Scope) -> bool:
        path = str(scope.get("path", ""))
        if path.startswith(self.passthrough_prefixes):
            return False
        trimmed = path.rstrip("/") or "/"
        # any(trimmed == p or trimmed.startswith(p + "/") for p in self.paths), without a generator
        return trimmed in self._path_set or trimmed.startswith(self._below_paths)

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

    def _audit_mandate(self, mandate: Mandate) -> str:
        """File the mandate once per run (per ledger file) so the run's later entries verify against it."""
        assert self.audit is not None
        return self.audit.mandate(mandate)

    def _audit_accept(self, request: IncomingRequest, verified: VerifiedRequest) -> None:
        if self.audit is None or verified.mandate is None:
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
            self.audit.append(run=run, kind="ect", jti=verified.ect.jti, token=verified.ect.token, meta=meta)

    def _audit_denial(self, request: IncomingRequest, rejection: Rejection) -> None:
        # Only a rejection whose mandate verified can be filed under a run: the ledger verifier
        # insists every run starts with a valid mandate. Anything earlier is logged, not ledgered.
        if self.audit is None or rejection.mandate is None:
            return
        run = self._audit_mandate(rejection.mandate)
        call = rejection.call
        meta = {
            "method": call.method if call else None,
            "tool": call.tool if call else None,
            "id": call.id if call else None,
            "action": rejection.action,
            "code": rejection.error.code,
            "principal": rejection.mandate.principal,
            "status": rejection.status,
            "url": _without_query(request.url),
        }
        self.audit.append(run=run, kind="denial", meta=meta)


def _watch(
    send: Send,
    sessions: SessionBindings | None,
    method: str,
    session_id: str | None,
    caller: Caller | None,
    inflight: InFlightIds,
    pending_key: tuple[str, str] | None,
) -> Send:
    """``send`` watched for the session binding (``sessions.watch``) and the in-flight id
    (``inflight.watch``: freed just before the response's last chunk goes out), in one layer."""

    async def watched(message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            if sessions is not None and caller is not None:
                sessions.response_started(message, method, session_id, caller)
        elif kind == "http.response.body" and pending_key is not None and not message.get("more_body", False):
            inflight.release(pending_key)
        await send(message)

    return watched


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


async def _problem(
    send: Send,
    status: int,
    code: str,
    detail: str,
    *,
    error: McpClientAuthError | None = None,
    close: bool = False,
) -> None:
    """An RFC 9457 problem document; ``detail`` is an SDK error message (never holds credentials)."""
    _telemetry.server_rejected(code, status)
    titles = {
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        408: "Request Timeout",
        413: "Content Too Large",
        503: "Service Unavailable",
    }
    document: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": titles.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    retry_after = error.retry_after if isinstance(error, ServerLimitError) else None
    if retry_after is not None:
        document["retryable"] = True
    payload = json.dumps(document, separators=(",", ":")).encode("utf-8")
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(payload)).encode("ascii")),
    ]
    if status == 401:
        # RFC 9110 wants a challenge on 401; say which signature profile we expect.
        headers.append((b"www-authenticate", b'HTTPSig realm="mcp", tag="mcpclient-auth/1"'))
    if status == 405:
        headers.append((b"allow", ", ".join(sorted(VERIFIED_METHODS | {"OPTIONS"})).encode("ascii")))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode("ascii")))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
