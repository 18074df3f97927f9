"""httpx / httpx2 event hooks that authorise, chain, sign and record every MCP call of a run.

You rarely use this module directly: :meth:`AgentRun.httpx_client_factory` and
:meth:`AgentRun.install` put a :class:`RunHooks` on a client. What the hooks do, per request:

1. **endpoint guard** (:mod:`..endpoints`, fail closed) — requests whose origin and path match the run's
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
has arrived — on the request's own stream, or on a GET that resumes it (SEP-1699, ``Last-Event-ID``)
— or the stream ends without it, and lets a successful tool call join the DAG frontier.

One client can serve several runs: the run is chosen per call from a context variable,

    with use_run(run_for_alice):        # or run.activate()
        ...                             # requests through a multi-run client act for this run

falling back to the run the client was built for. In mcp 1.x the context must be set when the
session is *opened* (its transport tasks copy the context then); mcp 2.x sends every request in the
context of the call that made it.

**One core, two HTTP libraries.** Everything here is library-neutral: the hooks only touch
``request.method``, ``str(request.url)``, ``request.headers``, ``request.extensions`` and
``aread()``/``read()``, which httpx 0.28 and its fork httpx2 share; the decisions are
:mod:`mcpclient_auth._calls`'. The few objects that must be instances of the *request's* library — the
transport wrapper (:mod:`.transports`), the hashing byte stream (:mod:`.streams`), the local
``Response`` — come from an :class:`~.library.HttpLibrary` whose classes are written out per library
(:mod:`._httpx`, :mod:`._httpx2`; httpx2 is imported only when used):

    library_for(client)          # -> the HttpLibrary of an httpx or httpx2 client/request/response
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from .. import _telemetry
from .._calls import Admitted, Refusal, admit, authorization, authorization_sync, check_open, prepare
from .._context import current_run, use_run
from .._dpop import Credential
from .._journal import InFlight, RunJournal
from ..authz import SIGNING_HOOK_MARKER
from ..authz._blocking import run_blocking
from ..authz.www_authenticate import bearer_challenge
from ..endpoints import EndpointSet, MetadataCollector, sent_url
from ..errors import (
    ChallengeMalformed,
    ConfigurationError,
    McpClientAuthError,
    PrincipalMismatch,
    RequestOutOfScope,
)
from ..jsonrpc import Call, parse
from ..refusal import refusal_body
from ..sse import ResponseWatcher
from .auth import Attempt
from .library import (
    EXTENSION_ATTEMPT,
    EXTENSION_INFLIGHT,
    EXTENSION_LEARN,
    EXTENSION_REFUSAL,
    EXTENSION_REFUSED,
    EXTENSION_STAMP,
    EXTENSION_STREAM,
    OUR_EXTENSIONS,
    HttpLibrary,
    error_code_for,
    library_for,
    library_named,
)
from .streams import (
    AsyncHashingStream,
    ResponseTracker,
    ResumedCallTracker,
    ResumedStreamTracker,
    StreamObserver,
    SyncHashingStream,
    stream_key,
)
from .transports import AsyncLocalAnswer, LocalRefusal, SyncLocalAnswer, wrap_transports

if TYPE_CHECKING:
    from ..endpoints import Endpoint
    from ..run import AgentRun

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
    "current_run",
    "error_code_for",
    "library_for",
    "library_named",
    "use_run",
    "wrap_transports",
]

_SSE = "text/event-stream"
_OUR_EXTENSION_SET = frozenset(OUR_EXTENSIONS)

#: An ``httpx.Request`` or ``httpx2.Request`` (same shape, unrelated classes); likewise responses.
_Request = Any
_Response = Any


def _tracker_for(response: Any) -> StreamObserver | None:
    request = response.request  # a property on httpx and httpx2: read once
    extensions = request.extensions
    scope = extensions.get(EXTENSION_LEARN)
    if isinstance(scope, EndpointSet):
        return MetadataCollector(scope) if response.status_code == 200 else None
    inflight = extensions.get(EXTENSION_INFLIGHT)
    if not isinstance(inflight, InFlight) or inflight.finished:
        return _resumed_tracker_for(response)
    status = response.status_code
    if status == 401:
        _learn_metadata_url(inflight.run.endpoint_set, response)
    call = inflight.call
    if (
        call is not None
        and call.kind == "request"
        and call.id is not None
        and response.headers.get("content-type", "").lower().startswith(_SSE)
    ):
        return ResponseTracker(inflight, status, ResponseWatcher(call.id), stream_key(request))
    return ResponseTracker(inflight, status, None)


def _resumed_tracker_for(response: Any) -> ResumedStreamTracker | ResumedCallTracker | None:
    """A signed GET's event stream may carry the answer of a call whose POST stream ended (SEP-1699)."""
    marked = response.request.extensions.get(EXTENSION_STREAM)
    if (
        not isinstance(marked, RunJournal)
        or not 200 <= response.status_code < 300
        or not response.headers.get("content-type", "").lower().startswith(_SSE)
    ):
        return None
    stream = stream_key(response.request)
    last_event_id = response.request.headers.get("last-event-id")
    if last_event_id is None:
        return ResumedStreamTracker(marked, stream, response.status_code)
    # A GET with Last-Event-ID resumes the one call whose stream ended after that event: its first
    # response is that call's answer whatever id it carries. An unknown (or ambiguous) event id
    # resumes no call of this run: nothing on it is credited to any call.
    inflight = marked.resumed_call(stream, last_event_id)
    if inflight is None or inflight.finished or inflight.call is None or inflight.call.id is None:
        return None
    return ResumedCallTracker(inflight, stream, response.status_code, ResponseWatcher(inflight.call.id))


# --- request side -------------------------------------------------------------------------------


def _learn_metadata_url(scope: EndpointSet, response: _Response) -> None:
    """A 401 from an endpoint may name RFC 9728 metadata on the run's origin: let a client's OAuth
    flow fetch it (untouched) instead of the guard refusing it."""
    try:
        challenge = bearer_challenge(response.headers.get_list("www-authenticate"))
    except ChallengeMalformed:
        return
    if challenge is not None and challenge.resource_metadata is not None:
        scope.learn_metadata_url(challenge.resource_metadata)


def _refused(request: _Request) -> bool:
    return request.extensions.get(EXTENSION_REFUSED) is True


def _send_canonical(request: _Request, current: str) -> None:
    """Send an in-scope request to the canonical form of its URI (see :func:`..endpoints.sent_url`);
    ``current`` is ``str(request.url)``.

    httpx already normalises almost everything; what it keeps (``HTTP://host:80/`` keeps the
    explicit default port) would make the URI on the wire differ from the tokens' ``aud``.
    """
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
    if extensions.keys().isdisjoint(_OUR_EXTENSION_SET):  # one C-level test: the usual first hop
        return
    stamp = extensions.get(EXTENSION_STAMP)
    if isinstance(stamp, tuple):
        for name in stamp:
            request.headers.pop(name, None)
    # Copy, never mutate: the dict may be shared with the previous hop's request.
    request.extensions = {k: v for k, v in extensions.items() if k not in OUR_EXTENSIONS}


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
        if self._crosses_runs(run, request):
            self._refuse_cross_run(run, request, await request.aread())
            return
        endpoint = self._guard(run, request)
        if endpoint is None:
            if _refused(request):
                self._refuse_out_of_scope(run, request, await request.aread())
            return
        check_open(run)
        body = await request.aread()
        telemetry = _telemetry.call_started(request)  # None unless OpenTelemetry is configured
        admitted = admit(run, request.method, body, request.headers.get("content-type"))
        if isinstance(admitted, Refusal):
            self._refuse(request, admitted.call, admitted.error, run)
            return
        body = _telemetry.describe(telemetry, request, body, admitted.call, run)  # + params._meta
        attempt = request.extensions.get(EXTENSION_ATTEMPT)
        with _telemetry.current(telemetry):
            header = await authorization(
                run, admitted.call, endpoint, attempt if isinstance(attempt, Attempt) else None
            )
        if isinstance(header, Refusal):
            self._refuse(request, header.call, header.error, run)
            return
        self._apply(run, request, body, endpoint, admitted, header, telemetry)

    async def on_response(self, response: _Response) -> None:
        tracker = _tracker_for(response)
        if tracker is not None:
            response.stream = self.library.async_stream(response.stream, tracker)

    # sync flavour (Client) ------------------------------------------------------------------------------

    def on_request_sync(self, request: _Request) -> None:
        _scrub(request)
        run = self.select()
        if self._crosses_runs(run, request):
            self._refuse_cross_run(run, request, request.read())
            return
        endpoint = self._guard(run, request)
        if endpoint is None:
            if _refused(request):
                self._refuse_out_of_scope(run, request, request.read())
            return
        check_open(run)
        body = request.read()
        telemetry = _telemetry.call_started(request)
        admitted = admit(run, request.method, body, request.headers.get("content-type"))
        if isinstance(admitted, Refusal):
            self._refuse(request, admitted.call, admitted.error, run)
            return
        body = _telemetry.describe(telemetry, request, body, admitted.call, run)
        attempt = request.extensions.get(EXTENSION_ATTEMPT)
        # Token sources are async: the same coroutine as on_request, waited for on the token loop.
        with _telemetry.current(telemetry):
            header = authorization_sync(
                run, admitted.call, endpoint, attempt if isinstance(attempt, Attempt) else None, run_blocking
            )
        if isinstance(header, Refusal):
            self._refuse(request, header.call, header.error, run)
            return
        self._apply(run, request, body, endpoint, admitted, header, telemetry)

    def on_response_sync(self, response: _Response) -> None:
        tracker = _tracker_for(response)
        if tracker is not None:
            response.stream = self.library.sync_stream(response.stream, tracker)

    # shared ---------------------------------------------------------------------------------------------

    def _crosses_runs(self, selected: AgentRun, request: _Request) -> bool:
        """True when a client built for its own run is used while *another* run is selected and the
        request goes to either run's origin.

        Such a request can be signed by neither: the selected run has no business on the client's
        endpoints (and signing for it through another run's client mixes their ledgers), and the
        client's run was not selected. Passing it untouched would send an unsigned, unchecked,
        unrecorded call to the client's endpoint, so it is refused. Requests outside both runs'
        origins carry nothing of ours and pass as before.
        """
        own = self.run
        if own is None or selected is own:
            return False
        url = str(request.url)
        mine, theirs = own.endpoint_set.classify(url), selected.endpoint_set.classify(url)
        return mine.kind != "other" or theirs.kind != "other"

    def _refuse_cross_run(self, selected: AgentRun, request: _Request, body: bytes) -> None:
        own = self.run
        assert own is not None  # _crosses_runs is true only for a client with its own run
        check_open(own)
        error = PrincipalMismatch(
            f"this client acts for run {own.id} (principal {own.principal.id!r}); the call selected run "
            f"{selected.id} (principal {selected.principal.id!r}); nothing was sent",
            principal=own.principal.id,
            requested=selected.principal.id,
        )
        try:
            parsed = parse(body, content_type=request.headers.get("content-type"))
        except McpClientAuthError:
            parsed = None
        call = parsed if isinstance(parsed, Call) else None
        own.journal.denial(call, None, error)
        self._refuse(request, call, error, own)

    @staticmethod
    def _guard(run: AgentRun, request: _Request) -> Endpoint | None:
        """The endpoint to sign ``request`` for, with its URL made canonical; ``None`` otherwise (an
        authorization-server metadata request is marked for learning, a refusal is marked)."""
        url = str(request.url)
        verdict = run.endpoint_set.classify(url)
        if verdict.kind == "endpoint":
            _send_canonical(request, url)
            return verdict.endpoint
        if verdict.kind == "refuse":
            request.extensions = {**request.extensions, EXTENSION_REFUSED: True}
        elif verdict.metadata:
            request.extensions = {**request.extensions, EXTENSION_LEARN: run.endpoint_set}
        return None

    def _refuse_out_of_scope(self, run: AgentRun, request: _Request, body: bytes) -> None:
        check_open(run)
        request.extensions = {k: v for k, v in request.extensions.items() if k != EXTENSION_REFUSED}
        error = RequestOutOfScope(
            f"refusing a {request.method} to {request.url.path!r} on the run's origin: it is none of the "
            f"run's endpoints ({', '.join(run.endpoint_set.urls)}) and no OAuth discovery, token or "
            "registration request; nothing was sent",
            path=request.url.path,
        )
        try:
            parsed = parse(body, content_type=request.headers.get("content-type"))
        except McpClientAuthError:
            parsed = None
        call = parsed if isinstance(parsed, Call) else None
        run.journal.denial(call, None, error)
        self._refuse(request, call, error, run)

    def _apply(
        self,
        run: AgentRun,
        request: _Request,
        body: bytes,
        endpoint: Endpoint,
        admitted: Admitted,
        authorization: Credential | None,
        telemetry: _telemetry.CallTelemetry | None = None,
    ) -> None:
        prepared = prepare(run, request, body, endpoint, admitted, authorization, telemetry=telemetry)
        extensions = dict(request.extensions)
        extensions[EXTENSION_STAMP] = prepared.stamp
        if prepared.inflight is not None:
            extensions[EXTENSION_INFLIGHT] = prepared.inflight
            request.extensions = extensions
            run.journal.sent(prepared.inflight)
        else:
            if request.method == "GET":
                extensions[EXTENSION_STREAM] = run.journal  # may resume an answer (SEP-1699)
            request.extensions = extensions

    def _refuse(
        self, request: _Request, call: Call | None, exc: McpClientAuthError, run: AgentRun | None = None
    ) -> None:
        _telemetry.refused(request, call, exc, run=run)  # an error span with the refusal code
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
