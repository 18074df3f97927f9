"""httpx event hooks that authorise, chain, sign and record every MCP call of a run.

You rarely use this module directly: :meth:`AgentRun.httpx_client_factory` and
:meth:`AgentRun.install` put a :class:`RunHooks` on a client. What the hooks do, per request:

1. **scope guard** — only requests whose origin and path match the run's endpoint(s) are touched;
   anything else (other origins, OAuth discovery/registration/token requests) passes untouched, and
   headers we set on an earlier hop of a redirected request are removed before it leaves;
2. ``await request.aread()`` -> :func:`~mcpclient_auth.jsonrpc.parse` -> policy -> mandate check
   (refused: a ``denial`` ledger entry, then a local JSON-RPC error or the typed exception);
3. the user's access token (when the run has a token source);
4. an ECT with the DAG ``pred`` and ``inp_hash`` = SHA-256 of the exact body bytes;
5. headers overwritten (``Execution-Context``, ``ACT-Mandate``, ``Authorization``), then
   ``Content-Digest`` + RFC 9421 signature;
6. the ``ect`` ledger entry.

GET and DELETE to the endpoint carry the mandate and a signature but no ECT. The response hook
never reads the body: it wraps ``response.stream`` so the bytes are hashed as the transport consumes
them (JSON and ``text/event-stream`` alike), writes the ``response`` entry when the JSON-RPC answer
has arrived or the stream ends, and lets a successful tool call join the DAG frontier.

One client can serve several runs: the run is chosen per call from a context variable,

    with use_run(run_for_alice):        # or run.activate()
        ...                             # requests through a multi-run client act for this run

falling back to the run the client was built for. In mcp 1.x the context must be set when the
session is *opened* (its transport tasks copy the context then).
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from ._encoding import b64url_encode
from .authz._http import SIGNING_HOOK_MARKER
from .errors import ConfigurationError, McpClientAuthError
from .jsonrpc import Call
from .refusal import refusal_body
from .run import InFlight
from .sse import ResponseWatcher

if TYPE_CHECKING:
    from .run import AgentRun
    from .scope import Endpoint

__all__ = [
    "EXTENSION_INFLIGHT",
    "EXTENSION_REFUSAL",
    "LocalRefusal",
    "RunHooks",
    "current_run",
    "error_code_for",
    "use_run",
]

EXTENSION_INFLIGHT = "mcpclient_auth.inflight"
EXTENSION_REFUSAL = "mcpclient_auth.refusal"
_EXTENSION_STAMP = "mcpclient_auth.stamp"
_OUR_EXTENSIONS = (EXTENSION_INFLIGHT, EXTENSION_REFUSAL, _EXTENSION_STAMP)
_SIGNATURE_HEADERS = ("Signature", "Signature-Input", "Content-Digest")
_SSE = "text/event-stream"

_CURRENT_RUN: ContextVar[AgentRun | None] = ContextVar("mcpclient_auth_run", default=None)


@contextmanager
def use_run(run: AgentRun) -> Iterator[AgentRun]:
    """Select ``run`` for calls made in this context (see the module docstring)."""
    token = _CURRENT_RUN.set(run)
    try:
        yield run
    finally:
        _CURRENT_RUN.reset(token)


def current_run() -> AgentRun | None:
    """The run selected with :func:`use_run` in this context, if any."""
    return _CURRENT_RUN.get()


@dataclass(frozen=True, slots=True)
class LocalRefusal:
    """Marks a request that our transport must answer locally, without touching the network."""

    hooks: RunHooks
    body: bytes
    error: McpClientAuthError


def error_code_for(exc: BaseException) -> str:
    """The ledger ``error`` code of a failed request or response stream."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.TransportError):
        return "transport_error"
    return "stream_error"


# --- response side ------------------------------------------------------------------------------


class _ResponseTracker:
    """Hashes a response body as it streams and writes the call's outcome exactly once."""

    __slots__ = ("_bytes", "_hash", "_inflight", "_status", "_watcher")

    def __init__(self, inflight: InFlight, status: int, watcher: ResponseWatcher | None) -> None:
        self._inflight = inflight
        self._status = status
        self._watcher = watcher
        self._hash = hashlib.sha256()
        self._bytes = 0

    def feed(self, chunk: bytes) -> None:
        if self._inflight.finished:
            return
        self._hash.update(chunk)
        self._bytes += len(chunk)
        # An SSE answer completes when its JSON-RPC response event has arrived, which can be before
        # the stream ends: the transport may hand the result to the agent and stop reading. Writing
        # the entry (and extending the frontier) here, before the chunk is passed on, means the next
        # call the agent makes already sees this one as its predecessor.
        if self._watcher is not None and self._watcher.feed(chunk):
            self._finish(completed=True)

    def eof(self) -> None:
        # JSON (or any non-SSE) body read to the end: complete. An SSE stream that ended without the
        # response event: recorded, but the call does not join the frontier.
        self._finish(completed=self._watcher is None)

    def closed(self) -> None:
        self._finish(completed=False)

    def failed(self, exc: BaseException) -> None:
        if not self._inflight.finished:
            self._inflight.run._error(self._inflight, error_code_for(exc), type(exc).__name__)

    def _finish(self, *, completed: bool) -> None:
        if self._inflight.finished:
            return
        self._inflight.run._response(
            self._inflight,
            status=self._status,
            out_hash=b64url_encode(self._hash.digest()),
            nbytes=self._bytes,
            completed=completed,
        )


class _HashingAsyncStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, tracker: _ResponseTracker) -> None:
        self._inner = inner
        self._tracker = tracker

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._tracker.feed(chunk)
                yield chunk
        except GeneratorExit:  # the consumer stopped reading: not a failure (closed() decides)
            raise
        except BaseException as exc:
            self._tracker.failed(exc)
            raise
        self._tracker.eof()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._tracker.closed()


class _HashingSyncStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, tracker: _ResponseTracker) -> None:
        self._inner = inner
        self._tracker = tracker

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._tracker.feed(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._tracker.failed(exc)
            raise
        self._tracker.eof()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._tracker.closed()


def _tracker_for(response: httpx.Response) -> _ResponseTracker | None:
    inflight = response.request.extensions.get(EXTENSION_INFLIGHT)
    if not isinstance(inflight, InFlight) or inflight.finished:
        return None
    watcher: ResponseWatcher | None = None
    call = inflight.call
    if (
        call is not None
        and call.kind == "request"
        and call.id is not None
        and response.headers.get("content-type", "").lower().startswith(_SSE)
    ):
        watcher = ResponseWatcher(call.id)
    return _ResponseTracker(inflight, response.status_code, watcher)


# --- request side -------------------------------------------------------------------------------


def _scrub(request: httpx.Request) -> None:
    """Remove what an earlier hop of this request got from us (headers and markers).

    httpx copies headers and shares ``extensions`` when it builds a redirect or retry request, so
    without this a hop out of scope would carry our mandate, ECT and signature, and a hop in scope
    would sign stale values (say, an old Content-Digest after a 303 turned a POST into a GET).
    """
    extensions = request.extensions
    if not any(key in extensions for key in _OUR_EXTENSIONS):
        return
    stamp = extensions.get(_EXTENSION_STAMP)
    if isinstance(stamp, tuple):
        for name in stamp:
            request.headers.pop(name, None)
    # Copy, never mutate: the dict may be shared with the previous hop's request.
    request.extensions = {k: v for k, v in extensions.items() if k not in _OUR_EXTENSIONS}


class RunHooks:
    """The request and response hooks of one client (async and sync flavours).

    ``run`` is the client's default run (``None`` for a multi-run client that relies on
    :func:`use_run`). ``answer_locally`` turns refusals of JSON-RPC requests into local JSON-RPC error
    responses; it is only honoured when the client's transport for the URL is our wrapper (bound with
    :meth:`bind`), otherwise the typed exception is raised — a refused request never leaves.
    """

    def __init__(self, run: AgentRun | None, *, answer_locally: bool = False) -> None:
        self.run = run
        self.answer_locally = answer_locally
        self._client: weakref.ReferenceType[httpx.AsyncClient | httpx.Client] | None = None

    def __repr__(self) -> str:
        return f"RunHooks(run={self.run!r}, answer_locally={self.answer_locally})"

    def bind(self, client: httpx.AsyncClient | httpx.Client) -> None:
        self._client = weakref.ref(client)

    def select(self) -> AgentRun:
        run = _CURRENT_RUN.get() or self.run
        if run is None:
            raise ConfigurationError(
                "no AgentRun selected for this call: use `with use_run(run):` (or run.activate()) "
                "around the session, or build the client from run.httpx_client_factory()"
            )
        return run

    # async flavour (httpx.AsyncClient) ---------------------------------------------------------------

    async def on_request(self, request: httpx.Request) -> None:
        _scrub(request)
        run = self.select()
        endpoint = run.scope.match(str(request.url))
        if endpoint is None:
            return
        run._check_open()
        body = await request.aread()
        call: Call | None = None
        try:
            call = run._classify(request.method, body, request.headers.get("content-type"))
            action = run._authorize_call(call) if call is not None else None
            authorization = await run._authorization(call, endpoint)
        except McpClientAuthError as exc:
            self._refuse(request, call, exc)
            return
        self._apply(run, request, body, endpoint, call, action, authorization)

    async def on_response(self, response: httpx.Response) -> None:
        tracker = _tracker_for(response)
        if tracker is not None:
            response.stream = _HashingAsyncStream(response.stream, tracker)  # type: ignore[arg-type]

    # sync flavour (httpx.Client) ------------------------------------------------------------------------

    def on_request_sync(self, request: httpx.Request) -> None:
        _scrub(request)
        run = self.select()
        endpoint = run.scope.match(str(request.url))
        if endpoint is None:
            return
        run._check_open()
        if run.token_source is not None:  # token sources are async; install() refuses this too
            raise ConfigurationError("a run with a token_source needs an httpx.AsyncClient")
        body = request.read()
        call: Call | None = None
        try:
            call = run._classify(request.method, body, request.headers.get("content-type"))
            action = run._authorize_call(call) if call is not None else None
        except McpClientAuthError as exc:
            self._refuse(request, call, exc)
            return
        self._apply(run, request, body, endpoint, call, action, None)

    def on_response_sync(self, response: httpx.Response) -> None:
        tracker = _tracker_for(response)
        if tracker is not None:
            response.stream = _HashingSyncStream(response.stream, tracker)  # type: ignore[arg-type]

    # shared ---------------------------------------------------------------------------------------------

    def _apply(
        self,
        run: AgentRun,
        request: httpx.Request,
        body: bytes,
        endpoint: Endpoint,
        call: Call | None,
        action: str | None,
        authorization: str | None,
    ) -> None:
        url = request.url
        bare_url = f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"
        prepared = run._prepare(call, action, body, endpoint, bare_url, authorization)
        headers = request.headers
        for name, value in prepared.headers.items():
            headers[name] = value
        result = run.signer.sign(request, body=body)
        stamp = (
            *prepared.headers,
            *(_SIGNATURE_HEADERS if result.content_digest else _SIGNATURE_HEADERS[:2]),
        )
        extensions = dict(request.extensions)
        extensions[_EXTENSION_STAMP] = stamp
        if prepared.inflight is not None:
            extensions[EXTENSION_INFLIGHT] = prepared.inflight
            request.extensions = extensions
            run._sent(prepared.inflight)
        else:
            request.extensions = extensions

    def _refuse(self, request: httpx.Request, call: Call | None, exc: McpClientAuthError) -> None:
        if (
            self.answer_locally
            and call is not None
            and call.kind == "request"
            and call.id is not None
            and self._answers_locally(request)
        ):
            extensions = dict(request.extensions)
            extensions[EXTENSION_REFUSAL] = LocalRefusal(self, refusal_body(call.id, exc), exc)
            request.extensions = extensions
            return
        raise exc

    def _answers_locally(self, request: httpx.Request) -> bool:
        """True only when the transport that would carry ``request`` is our wrapper for these hooks."""
        client = self._client() if self._client is not None else None
        if client is None:
            return False
        transport_for_url: Any = getattr(client, "_transport_for_url", None)
        if transport_for_url is None:
            return False
        transport = transport_for_url(request.url)
        return getattr(transport, "mcpclient_auth_hooks", None) is self


# Token sources refuse an identity-provider client that carries these hooks (it would sign and
# ledger IdP requests): mark every hook function; bound methods expose the function's attributes.
for _hook in (RunHooks.on_request, RunHooks.on_response, RunHooks.on_request_sync, RunHooks.on_response_sync):
    setattr(_hook, SIGNING_HOOK_MARKER, True)
