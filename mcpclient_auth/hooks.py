"""httpx / httpx2 event hooks that authorise, chain, sign and record every MCP call of a run.

You rarely use this module directly: :meth:`AgentRun.httpx_client_factory` and
:meth:`AgentRun.install` put a :class:`RunHooks` on a client. What the hooks do, per request:

1. **scope guard** (:mod:`.scope`, fail closed) — requests whose origin and path match the run's
   endpoint(s) are signed (sent to the canonical URI); other origins and recognised OAuth
   discovery/registration/token requests pass untouched; any other path on the run's origin is
   refused (:class:`~mcpclient_auth.errors.RequestOutOfScope`, a ``denial`` entry). Headers we set on
   an earlier hop of a redirected request are removed before it leaves;
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
session is *opened* (its transport tasks copy the context then); mcp 2.x sends every request in the
context of the call that made it.

**One core, two HTTP libraries.** Everything here is library-neutral: the hooks only touch
``request.method``, ``str(request.url)``, ``request.headers``, ``request.extensions`` and
``aread()``/``read()``, which httpx 0.28 and its fork httpx2 share. The few objects that must be
instances of the *request's* library — the transport wrapper that answers refusals locally, the
hashing byte stream, the local ``Response`` — come from an :class:`HttpLibrary` entry built by the thin
per-library modules (:mod:`._httpx`, :mod:`._httpx2`; httpx2 is imported only when used):

    library_for(client)          # -> the HttpLibrary of an httpx or httpx2 client/request/response
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import importlib
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._encoding import b64url_encode
from .authz._http import SIGNING_HOOK_MARKER
from .authz.www_authenticate import bearer_challenge
from .calls import Admitted, Refusal, admit, authorization, check_open, prepare
from .context import current_attempt, current_run, use_run
from .errors import ChallengeMalformed, ConfigurationError, McpClientAuthError, RequestOutOfScope
from .journal import InFlight
from .jsonrpc import Call, parse
from .refusal import refusal_body
from .scope import EndpointScope, MetadataCollector, sent_url
from .sse import ResponseWatcher

if TYPE_CHECKING:
    from .run import AgentRun
    from .scope import Endpoint

__all__ = [
    "EXTENSION_INFLIGHT",
    "EXTENSION_REFUSAL",
    "AsyncHashingStream",
    "AsyncLocalAnswer",
    "HttpLibrary",
    "LocalRefusal",
    "ResponseTracker",
    "RunHooks",
    "SyncHashingStream",
    "SyncLocalAnswer",
    "bind_library",
    "current_run",
    "error_code_for",
    "library_for",
    "use_run",
]

EXTENSION_INFLIGHT = "mcpclient_auth.inflight"
EXTENSION_REFUSAL = "mcpclient_auth.refusal"
_EXTENSION_STAMP = "mcpclient_auth.stamp"
_EXTENSION_LEARN = "mcpclient_auth.learn_metadata"
_EXTENSION_REFUSED = "mcpclient_auth.out_of_scope"
_OUR_EXTENSIONS = (
    EXTENSION_INFLIGHT,
    EXTENSION_REFUSAL,
    _EXTENSION_STAMP,
    _EXTENSION_LEARN,
    _EXTENSION_REFUSED,
)
_SSE = "text/event-stream"

#: An ``httpx.Request`` or ``httpx2.Request`` (same shape, unrelated classes); likewise responses.
_Request = Any
_Response = Any


@dataclass(frozen=True, slots=True)
class LocalRefusal:
    """Marks a request that our transport must answer locally, without touching the network."""

    hooks: RunHooks
    body: bytes
    error: McpClientAuthError
    #: 200 with a JSON-RPC error for a request; 202 without a body for a refused notification or
    #: response (what a server answers to those: the MCP session goes on, nothing was sent).
    status: int = 200


#: Exception class names shared by httpx and httpx2 (distinct, unrelated hierarchies) -> ledger code.
#: The first match along the exception's MRO wins, so ``ReadTimeout`` is a timeout, not a transport error.
_ERROR_CODES = {"TimeoutException": "timeout", "TransportError": "transport_error"}


def error_code_for(exc: BaseException) -> str:
    """The ledger ``error`` code of a failed request or response stream (httpx or httpx2)."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    for cls in type(exc).__mro__:
        if cls.__module__.partition(".")[0] in _LIBRARY_MODULES and cls.__name__ in _ERROR_CODES:
            return _ERROR_CODES[cls.__name__]
    return "stream_error"


# --- the per-library registry ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpLibrary:
    """The classes of one HTTP library (httpx or httpx2) that the library-neutral core needs.

    Made once per library by :func:`bind_library` (in :mod:`._httpx` / :mod:`._httpx2`); look one up
    with :func:`library_for`.
    """

    name: str
    async_client: type[Any]
    sync_client: type[Any]
    #: ``(inner, hooks)``: a transport of this library answering refusals locally
    async_transport: type[AsyncLocalAnswer]
    sync_transport: type[SyncLocalAnswer]
    #: ``(inner, tracker)``: a byte stream of this library hashing what passes
    async_stream: type[AsyncHashingStream]
    sync_stream: type[SyncHashingStream]
    #: ``(status, headers=..., content=..., request=...)`` of this library
    response: Callable[..., Any]
    #: ``() -> Timeout``: mcp's defaults (30 s, 300 s for reads) as this library's Timeout
    default_timeout: Callable[[], Any]


def bind_library(module: Any) -> HttpLibrary:
    """Bind the core's mixins to ``module``'s base classes (httpx and httpx2 share the API shape).

    The library-bound classes must subclass *that* library's bases: its client checks
    ``isinstance(response.stream, AsyncByteStream)`` against its own classes, and httpx2 classes are
    not subclasses of httpx ones. Called once per library, at import of its adapter module.
    """
    name = module.__name__
    adapter = _LIBRARY_MODULES[name]

    def bound(mixin: type[Any], base: type[Any], cls_name: str) -> Any:
        namespace = {"__module__": adapter, "__qualname__": cls_name, "__doc__": mixin.__doc__}
        return type(cls_name, (mixin, base), namespace)

    return HttpLibrary(
        name=name,
        async_client=module.AsyncClient,
        sync_client=module.Client,
        async_transport=bound(AsyncLocalAnswer, module.AsyncBaseTransport, "LocalAnswerTransport"),
        sync_transport=bound(SyncLocalAnswer, module.BaseTransport, "SyncLocalAnswerTransport"),
        async_stream=bound(AsyncHashingStream, module.AsyncByteStream, "HashingAsyncStream"),
        sync_stream=bound(SyncHashingStream, module.SyncByteStream, "HashingSyncStream"),
        response=module.Response,
        default_timeout=functools.partial(module.Timeout, 30.0, read=300.0),
    )


#: Top-level module name of a client/request/response class -> the module holding its HttpLibrary.
_LIBRARY_MODULES = {"httpx": "mcpclient_auth._httpx", "httpx2": "mcpclient_auth._httpx2"}


def library_named(name: str) -> HttpLibrary:
    """The :class:`HttpLibrary` for ``"httpx"`` or ``"httpx2"`` (imports that adapter on first use)."""
    module = _LIBRARY_MODULES.get(name)
    if module is None:
        raise ConfigurationError(f"unsupported HTTP library {name!r} (supported: httpx, httpx2)")
    library: HttpLibrary = importlib.import_module(module).LIBRARY
    return library


def library_for(obj: Any) -> HttpLibrary:
    """The :class:`HttpLibrary` an httpx/httpx2 object (client, request, response...) belongs to.

    Dispatches on the class's top-level module: httpx2 classes are not subclasses of httpx ones.
    """
    return library_named(type(obj).__module__.partition(".")[0])


# --- response side ------------------------------------------------------------------------------


class ResponseTracker:
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
            self._inflight.run.journal.error(self._inflight, error_code_for(exc), type(exc).__name__)

    def _finish(self, *, completed: bool) -> None:
        if self._inflight.finished:
            return
        self._inflight.run.journal.response(
            self._inflight,
            status=self._status,
            out_hash=b64url_encode(self._hash.digest()),
            nbytes=self._bytes,
            completed=completed,
        )


_ResponseTracker = ResponseTracker  # the name stack-A code used


#: What a hashing stream reports to: a call's tracker, or a metadata collector.
StreamObserver = ResponseTracker | MetadataCollector


class _StreamWrapper:
    """What both hashing streams share: the inner stream, the tracker, and ``elapsed``.

    httpx2's ``Response.elapsed`` reads ``response.stream.elapsed`` (httpx 0.28 sets it on the response
    instead), so a wrapper must pass the inner stream's value through or ``elapsed`` raises after close.
    """

    def __init__(self, inner: Any, tracker: StreamObserver) -> None:
        self._inner = inner
        self._tracker = tracker

    @property
    def elapsed(self) -> datetime.timedelta | None:
        return getattr(self._inner, "elapsed", None)


class AsyncHashingStream(_StreamWrapper):
    """Wraps ``response.stream``, hashing the body as the client reads it (mixed into each library's
    ``AsyncByteStream`` by :func:`bind_library`)."""

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
        # mcp 2.x closes an SSE response right after the answer event, without exhausting it: the
        # outcome must be written here (idempotently), not only at end-of-iteration.
        try:
            await self._inner.aclose()
        finally:
            self._tracker.closed()


class SyncHashingStream(_StreamWrapper):
    """The synchronous twin of :class:`AsyncHashingStream` (mixed into ``SyncByteStream``)."""

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


def _tracker_for(response: Any) -> StreamObserver | None:
    scope = response.request.extensions.get(_EXTENSION_LEARN)
    if isinstance(scope, EndpointScope):
        return MetadataCollector(scope) if response.status_code == 200 else None
    inflight = response.request.extensions.get(EXTENSION_INFLIGHT)
    if not isinstance(inflight, InFlight) or inflight.finished:
        return None
    if response.status_code == 401:
        _learn_metadata_url(inflight.run.scope, response)
    watcher: ResponseWatcher | None = None
    call = inflight.call
    if (
        call is not None
        and call.kind == "request"
        and call.id is not None
        and response.headers.get("content-type", "").lower().startswith(_SSE)
    ):
        watcher = ResponseWatcher(call.id)
    return ResponseTracker(inflight, response.status_code, watcher)


# --- transport side -------------------------------------------------------------------------------


def _refusal_for(request: Any, hooks: RunHooks) -> LocalRefusal | None:
    refusal = request.extensions.get(EXTENSION_REFUSAL)
    if isinstance(refusal, LocalRefusal) and refusal.hooks is hooks:
        return refusal
    return None


def _local_response(request: Any, refusal: LocalRefusal) -> Any:
    # Built with the request's own library: its client asserts the response stream's type.
    headers = {"x-mcpclient-auth-refusal": refusal.error.code}
    if refusal.body:
        headers["content-type"] = "application/json"
    library = refusal.hooks.library
    return library.response(refusal.status, headers=headers, content=refusal.body, request=request)


def _record_failure(request: Any, exc: BaseException) -> None:
    inflight = request.extensions.get(EXTENSION_INFLIGHT)
    if isinstance(inflight, InFlight) and not inflight.finished:
        inflight.run.journal.error(inflight, error_code_for(exc), type(exc).__name__)


class _TransportWrapper:
    def __init__(self, inner: Any, hooks: RunHooks) -> None:
        self.inner = inner
        #: Read by :meth:`RunHooks._answers_locally`: this transport answers for these hooks.
        self.mcpclient_auth_hooks = hooks


class AsyncLocalAnswer(_TransportWrapper):
    """Wraps a transport: answers refused requests locally; records network failures (async).

    :func:`bind_library` mixes it into each library's ``AsyncBaseTransport``.
    """

    async def handle_async_request(self, request: Any) -> Any:
        refusal = _refusal_for(request, self.mcpclient_auth_hooks)
        if refusal is not None:
            return _local_response(request, refusal)
        try:
            return await self.inner.handle_async_request(request)
        except BaseException as exc:
            _record_failure(request, exc)
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncLocalAnswer(_TransportWrapper):
    """The synchronous twin of :class:`AsyncLocalAnswer` (mixed into ``BaseTransport``)."""

    def handle_request(self, request: Any) -> Any:
        refusal = _refusal_for(request, self.mcpclient_auth_hooks)
        if refusal is not None:
            return _local_response(request, refusal)
        try:
            return self.inner.handle_request(request)
        except BaseException as exc:
            _record_failure(request, exc)
            raise

    def close(self) -> None:
        self.inner.close()


# --- request side -------------------------------------------------------------------------------


def _learn_metadata_url(scope: EndpointScope, response: _Response) -> None:
    """A 401 from an endpoint may name RFC 9728 metadata on the run's origin: let a client's OAuth
    flow fetch it (untouched) instead of the guard refusing it."""
    try:
        challenge = bearer_challenge(response.headers.get_list("www-authenticate"))
    except ChallengeMalformed:
        return
    if challenge is not None and challenge.resource_metadata is not None:
        scope.learn_metadata_url(challenge.resource_metadata)


def _refused(request: _Request) -> bool:
    return request.extensions.get(_EXTENSION_REFUSED) is True


def _send_canonical(request: _Request) -> None:
    """Send an in-scope request to the canonical form of its URI (see :func:`.scope.sent_url`).

    httpx already normalises almost everything; what it keeps (``HTTP://host:80/`` keeps the
    explicit default port) would make the URI on the wire differ from the tokens' ``aud``.
    """
    current = str(request.url)
    canonical = sent_url(current)
    if canonical == current or canonical == current + "/":
        return
    old_netloc = request.url.netloc
    request.url = type(request.url)(canonical)
    if request.headers.get("host", "").encode("ascii", "replace") == old_netloc:
        request.headers["Host"] = request.url.netloc.decode("ascii")


def _scrub(request: _Request) -> None:
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

    def __init__(
        self, run: AgentRun | None, *, answer_locally: bool = False, library: HttpLibrary | None = None
    ) -> None:
        self.run = run
        self.answer_locally = answer_locally
        #: the HTTP library of the client these hooks sit on (default httpx; install() sets it)
        self.library = library if library is not None else library_named("httpx")
        self._client: weakref.ReferenceType[Any] | None = None

    def __repr__(self) -> str:
        return (
            f"RunHooks(run={self.run!r}, answer_locally={self.answer_locally}, library={self.library.name!r})"
        )

    def bind(self, client: Any) -> None:
        """Remember the (httpx or httpx2) client, to ask which transport would carry a request."""
        self._client = weakref.ref(client)

    def select(self) -> AgentRun:
        run = current_run() or self.run
        if run is None:
            raise ConfigurationError(
                "no AgentRun selected for this call: use `with use_run(run):` (or run.activate()) "
                "around the session, or build the client from run.httpx_client_factory()"
            )
        return run

    # async flavour (AsyncClient) -------------------------------------------------------------------------

    async def on_request(self, request: _Request) -> None:
        _scrub(request)
        run = self.select()
        endpoint = self._guard(run, request)
        if endpoint is None:
            if _refused(request):
                self._refuse_out_of_scope(run, request, await request.aread())
            return
        check_open(run)
        body = await request.aread()
        admitted = admit(run, request.method, body, request.headers.get("content-type"))
        if isinstance(admitted, Refusal):
            self._refuse(request, admitted.call, admitted.error)
            return
        header = await authorization(run, admitted.call, endpoint, current_attempt())
        if isinstance(header, Refusal):
            self._refuse(request, header.call, header.error)
            return
        self._apply(run, request, body, endpoint, admitted, header)

    async def on_response(self, response: _Response) -> None:
        tracker = _tracker_for(response)
        if tracker is not None:
            response.stream = self.library.async_stream(response.stream, tracker)

    # sync flavour (Client) ------------------------------------------------------------------------------

    def on_request_sync(self, request: _Request) -> None:
        _scrub(request)
        run = self.select()
        endpoint = self._guard(run, request)
        if endpoint is None:
            if _refused(request):
                self._refuse_out_of_scope(run, request, request.read())
            return
        check_open(run)
        if run.token_source is not None:  # token sources are async; install() refuses this too
            raise ConfigurationError("a run with a token_source needs an httpx.AsyncClient")
        body = request.read()
        admitted = admit(run, request.method, body, request.headers.get("content-type"))
        if isinstance(admitted, Refusal):
            self._refuse(request, admitted.call, admitted.error)
            return
        self._apply(run, request, body, endpoint, admitted, None)

    def on_response_sync(self, response: _Response) -> None:
        tracker = _tracker_for(response)
        if tracker is not None:
            response.stream = self.library.sync_stream(response.stream, tracker)

    # shared ---------------------------------------------------------------------------------------------

    @staticmethod
    def _guard(run: AgentRun, request: _Request) -> Endpoint | None:
        """The endpoint to sign ``request`` for, with its URL made canonical; ``None`` otherwise (an
        authorization-server metadata request is marked for learning, a refusal is marked)."""
        verdict = run.scope.classify(str(request.url))
        if verdict.kind == "endpoint":
            _send_canonical(request)
            return verdict.endpoint
        if verdict.kind == "refuse":
            request.extensions = {**request.extensions, _EXTENSION_REFUSED: True}
        elif verdict.metadata:
            request.extensions = {**request.extensions, _EXTENSION_LEARN: run.scope}
        return None

    def _refuse_out_of_scope(self, run: AgentRun, request: _Request, body: bytes) -> None:
        check_open(run)
        request.extensions = {k: v for k, v in request.extensions.items() if k != _EXTENSION_REFUSED}
        error = RequestOutOfScope(
            f"refusing a {request.method} to {request.url.path!r} on the run's origin: it is none of the "
            f"run's endpoints ({', '.join(run.scope.urls)}) and no OAuth discovery, token or registration "
            "request; nothing was sent",
            path=request.url.path,
        )
        try:
            parsed = parse(body, content_type=request.headers.get("content-type"))
        except McpClientAuthError:
            parsed = None
        call = parsed if isinstance(parsed, Call) else None
        run.journal.denial(call, None, error)
        self._refuse(request, call, error)

    def _apply(
        self,
        run: AgentRun,
        request: _Request,
        body: bytes,
        endpoint: Endpoint,
        admitted: Admitted,
        authorization: str | None,
    ) -> None:
        prepared = prepare(run, request, body, endpoint, admitted, authorization)
        extensions = dict(request.extensions)
        extensions[_EXTENSION_STAMP] = prepared.stamp
        if prepared.inflight is not None:
            extensions[EXTENSION_INFLIGHT] = prepared.inflight
            request.extensions = extensions
            run.journal.sent(prepared.inflight)
        else:
            request.extensions = extensions

    def _refuse(self, request: _Request, call: Call | None, exc: McpClientAuthError) -> None:
        if self.answer_locally and call is not None and self._answers_locally(request):
            refusal: LocalRefusal | None = None
            if call.kind == "request" and call.id is not None:
                refusal = LocalRefusal(self, refusal_body(call.id, exc), exc)
            elif call.kind in ("notification", "response"):
                # No id to answer: raising would end an mcp 1.x session (post_writer dies), so the
                # refused message is swallowed with the 202 a server gives; the ledger has the denial.
                refusal = LocalRefusal(self, b"", exc, status=202)
            if refusal is not None:
                extensions = dict(request.extensions)
                extensions[EXTENSION_REFUSAL] = refusal
                request.extensions = extensions
                return
        raise exc

    def _answers_locally(self, request: _Request) -> bool:
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
