"""OpenTelemetry for the request path: spans, metrics and W3C trace context (extra ``otel``).

The package depends on ``opentelemetry-api`` only, and only optionally: when it is not installed, or no
tracer/meter provider is configured (the API's default proxy or no-op providers), every function here
returns after one check and nothing changes — no span, no ``params._meta`` edit, no ECT claim. Configure
the standard SDK (``opentelemetry-sdk`` + an exporter) as for any instrumented library; the global
providers are used (:func:`use_providers` overrides them, for tests and benchmarks).

What is recorded (names follow the OpenTelemetry semantic conventions for MCP where they exist; ours
are under the ``mcpclient_auth.`` prefix; never a token, secret or key):

- a CLIENT span per MCP JSON-RPC message a run sends, named ``{mcp.method.name} {target}``
  (``tools/call search``), from the request hook to the outcome the journal writes, across a 401
  re-obtain or 403 step-up resend (events ``mcpclient_auth.reobtain`` / ``mcpclient_auth.step_up``);
  attributes ``mcp.method.name``, ``gen_ai.tool.name``, ``gen_ai.prompt.name``,
  ``gen_ai.operation.name``, ``jsonrpc.request.id``, ``mcp.session.id``, ``mcp.protocol.version``,
  ``server.address``/``server.port``, ``error.type`` and ``mcpclient_auth.run.id``,
  ``.principal.id``, ``.mandate.jti``, ``.ect.jti``, ``.exec_act``, ``.attempts``;
- a local refusal: the span ends with status ERROR, ``error.type`` = the refusal code, and an event
  ``mcpclient_auth.capability_missing`` naming the capability (``mcpclient_auth.refusal`` when the
  refusal is not about a capability);
- a child span ``token {source}`` per token acquisition: ``mcpclient_auth.token.source``,
  ``.cache`` (``hit``/``miss``/``none``), ``.store`` (``in_process``/``shared``), ``.fetched`` (this
  process asked the identity provider), ``.retries``, ``.reason`` (``first``/``reobtain``/``step_up``);
- the W3C trace context of the CLIENT span in ``params._meta`` (``traceparent``, ``tracestate``; the
  configured propagators decide) of every request and notification, *before* the ECT's ``inp_hash``,
  ``Content-Digest`` and the signature are computed, so the server verifies the body it receives; the
  ECT carries ``ect_ext.trace`` (``trace_id``, ``span_id``) and the ledger's ``ect`` entry
  ``meta.trace`` (the trace id): an auditor goes from a ledger line to its trace;
- a SERVER span per request the middleware verifies (parent from ``params._meta``, else the
  ``traceparent`` header), with ``mcpclient_auth.verification`` = ``verified``/``rejected`` and the
  problem code as ``error.type``;
- metrics: ``mcpclient_auth.calls``, ``mcpclient_auth.refusals``, ``mcpclient_auth.token.fetches``,
  ``mcpclient_auth.token.cache.hits`` / ``.misses``, ``mcpclient_auth.ledger.appends`` (counters),
  ``mcpclient_auth.hook.duration``, ``mcp.client.operation.duration``,
  ``mcp.server.operation.duration`` (histograms, seconds), ``mcpclient_auth.server.verifications``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._encoding import strict_json_loads
from .errors import MandateDenied, McpClientAuthError

_API: bool
try:  # the optional extra: everything below is a no-op without it
    from opentelemetry import metrics as _metrics
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, StatusCode
except ImportError:  # pragma: no cover - exercised by the "not installed" test in a subprocess
    _API = False
else:
    _API = True
    # Where the API keeps the global meter provider (a missing module means: always ask the getter).
    _metrics_state = sys.modules.get("opentelemetry.metrics._internal")

#: Whether the provider-selecting environment variables were set at start-up (the API reads them too).
_TRACER_ENVIRONMENT = bool(os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"))
_METER_ENVIRONMENT = bool(os.environ.get("OTEL_PYTHON_METER_PROVIDER"))

if TYPE_CHECKING:
    from ._calls import RunView
    from .jsonrpc import Call

__all__ = [
    "EXTENSION_TELEMETRY",
    "CallTelemetry",
    "active",
    "answered",
    "call_started",
    "current",
    "describe",
    "failed",
    "fetching",
    "ledger_appended",
    "refused",
    "resending",
    "server_accepted",
    "server_rejected",
    "server_span",
    "token_miss",
    "token_retry",
    "token_span",
    "use_providers",
]

#: ``request.extensions`` key of a call's :class:`CallTelemetry`. Not one of the keys the hooks scrub
#: on a redirect hop: a hop, like a 401 resend, is the same MCP call.
EXTENSION_TELEMETRY = "mcpclient_auth.telemetry"
#: The instrumentation scope name of our tracer and meter.
SCOPE = "mcpclient_auth"
PREFIX = "mcpclient_auth."

T = TypeVar("T")


# --- providers ---------------------------------------------------------------------------------------


class _State:
    """The tracer and instruments of the providers in use, recomputed when a provider changes."""

    __slots__ = (
        "instruments",
        "meter_provider",
        "override_meter",
        "override_tracer",
        "tracer",
        "tracer_provider",
    )

    def __init__(self) -> None:
        self.override_tracer: Any = None
        self.override_meter: Any = None
        self.tracer_provider: Any = None
        self.tracer: Any = None
        self.meter_provider: Any = None
        self.instruments: _Instruments | None = None


_state = _State()


def use_providers(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Use these providers instead of the global ones (``None``: the global provider again)."""
    _state.override_tracer = tracer_provider
    _state.override_meter = meter_provider
    _state.tracer_provider = _state.meter_provider = None  # recompute on next use


def _version() -> str:
    package = sys.modules.get("mcpclient_auth")
    return str(getattr(package, "__version__", "0"))


#: What a missing API module global reads as: "ask the API's getter".
_ASK = object()


def _tracer() -> Any:
    """Our tracer, or ``None`` when tracing is off (API missing, or no provider configured).

    Off, this is one check per event: the API's getter reads an environment variable on every call
    (a microsecond), so while the module's global provider is unset and the variable was not set at
    start-up there is nothing to ask. A global set later (once set, it never changes) is seen at the
    next event."""
    if not _API:
        return None
    provider = _state.override_tracer
    if provider is None:
        if getattr(_trace, "_TRACER_PROVIDER", _ASK) is None and not _TRACER_ENVIRONMENT:
            return None
        provider = _trace.get_tracer_provider()
    if provider is not _state.tracer_provider:
        configured = not isinstance(provider, ProxyTracerProvider | NoOpTracerProvider)
        _state.tracer = provider.get_tracer(SCOPE, _version()) if configured else None
        _state.tracer_provider = provider
    return _state.tracer


class _Instruments:
    __slots__ = (
        "cache_hits",
        "cache_misses",
        "calls",
        "hook_duration",
        "ledger_appends",
        "operation_duration",
        "refusals",
        "server_duration",
        "server_verifications",
        "token_fetches",
    )

    def __init__(self, meter: Any) -> None:
        counter, histogram = meter.create_counter, meter.create_histogram
        self.calls = counter("mcpclient_auth.calls", unit="{call}", description="MCP messages sent by runs")
        self.refusals = counter("mcpclient_auth.refusals", unit="{call}", description="calls refused")
        self.token_fetches = counter(
            "mcpclient_auth.token.fetches", unit="{request}", description="token requests to the IdP"
        )
        self.cache_hits = counter("mcpclient_auth.token.cache.hits", unit="{lookup}")
        self.cache_misses = counter("mcpclient_auth.token.cache.misses", unit="{lookup}")
        self.ledger_appends = counter("mcpclient_auth.ledger.appends", unit="{entry}")
        self.hook_duration = histogram(
            "mcpclient_auth.hook.duration", unit="s", description="time in the request hook per send"
        )
        self.operation_duration = histogram("mcp.client.operation.duration", unit="s")
        self.server_duration = histogram("mcp.server.operation.duration", unit="s")
        self.server_verifications = counter("mcpclient_auth.server.verifications", unit="{request}")


def _meters() -> _Instruments | None:
    if not _API:
        return None
    provider = _state.override_meter
    if provider is None:
        # One check while off, as in _tracer (a missing module: always ask the getter).
        if getattr(_metrics_state, "_METER_PROVIDER", _ASK) is None and not _METER_ENVIRONMENT:
            return None
        provider = _metrics.get_meter_provider()
    if provider is not _state.meter_provider:
        # The API's default is a private proxy class until a provider is set: recognise it by name.
        proxy = type(provider).__name__ == "_ProxyMeterProvider"
        configured = not (proxy or isinstance(provider, _metrics.NoOpMeterProvider))
        _state.instruments = _Instruments(provider.get_meter(SCOPE, _version())) if configured else None
        _state.meter_provider = provider
    return _state.instruments


def active() -> bool:
    """True when spans or metrics are recorded."""
    return _tracer() is not None or _meters() is not None


# --- client calls ------------------------------------------------------------------------------------


class CallTelemetry:
    """The span and clocks of one MCP message a run sends (all its HTTP sends)."""

    __slots__ = ("attributes", "ended", "hook_started", "resend_pending", "sends", "span", "started")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.started = self.hook_started = time.perf_counter()
        self.sends = 1
        self.ended = False
        self.resend_pending = False
        #: low-cardinality attributes shared by the metrics of this call
        self.attributes: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"CallTelemetry(sends={self.sends}, ended={self.ended})"

    def trace_ids(self) -> tuple[str, str] | None:
        """``(trace_id, span_id)`` in lowercase hex, or ``None`` without a valid span."""
        if self.span is None:
            return None
        context = self.span.get_span_context()
        if not context.is_valid:
            return None
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"

    def ect_extension(self) -> dict[str, Any] | None:
        """The ECT's ``ect_ext`` naming this call's trace (``None`` without one)."""
        ids = self.trace_ids()
        return None if ids is None else {"trace": {"trace_id": ids[0], "span_id": ids[1]}}

    def trace_id(self) -> str | None:
        ids = self.trace_ids()
        return None if ids is None else ids[0]

    def prepared(self, run: RunView, ect_jti: str, action: str) -> None:
        """The ECT was minted for this send (called by ``_calls.prepare``)."""
        span = self.span
        if span is not None:
            span.set_attributes(
                {PREFIX + "ect.jti": ect_jti, PREFIX + "exec_act": action, PREFIX + "attempts": self.sends}
            )
        instruments = _meters()
        if instruments is not None:
            instruments.hook_duration.record(time.perf_counter() - self.hook_started, self.attributes)

    def _end(self, error_type: str | None, outcome: str) -> None:
        self.ended = True
        span = self.span
        if span is not None:
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(StatusCode.ERROR, error_type)
            span.end()
        instruments = _meters()
        if instruments is not None:
            attributes = dict(self.attributes)
            if error_type is not None:
                attributes["error.type"] = error_type
            instruments.operation_duration.record(time.perf_counter() - self.started, attributes)
            instruments.calls.add(1, {**attributes, PREFIX + "outcome": outcome})


def call_started(request: Any) -> CallTelemetry | None:
    """Begin (or, on a resend or redirect hop, continue) the telemetry of the call ``request`` carries."""
    existing = request.extensions.get(EXTENSION_TELEMETRY)
    if isinstance(existing, CallTelemetry) and not existing.ended:
        existing.sends += 1
        existing.resend_pending = False
        existing.hook_started = time.perf_counter()
        return existing
    # (An ended one belongs to an earlier hop whose answer, a redirect, was recorded: a new span.)
    tracer = _tracer()
    if tracer is None and _meters() is None:
        return None
    span = tracer.start_span("mcp", kind=SpanKind.CLIENT) if tracer is not None else None
    telemetry = CallTelemetry(span)
    request.extensions = {**request.extensions, EXTENSION_TELEMETRY: telemetry}
    return telemetry


def _describe_call(telemetry: CallTelemetry, call: Call | None, run: RunView | None) -> None:
    span = telemetry.span
    method = call.method if call is not None else None
    if method is not None:
        telemetry.attributes["mcp.method.name"] = method
    elif call is not None and call.kind == "response":
        telemetry.attributes["mcp.method.name"] = "response"
    if span is not None:
        span.set_attributes(_call_attributes(span, call, run))


def _call_attributes(span: Any, call: Call | None, run: RunView | None) -> dict[str, Any]:
    """The call's semantic-convention and ``mcpclient_auth.*`` attributes (one ``set_attributes``:
    each single ``set_attribute`` of the SDK takes a lock)."""
    attributes: dict[str, Any] = {}
    if call is not None:
        method = call.method
        name = method or "response"
        target: str | None = None
        if call.tool is not None:
            target = call.tool
            attributes["gen_ai.tool.name"] = call.tool
            attributes["gen_ai.operation.name"] = "execute_tool"
        elif method == "prompts/get" and call.params is not None:
            prompt = call.params.get("name")
            if isinstance(prompt, str):
                target = prompt
                attributes["gen_ai.prompt.name"] = prompt
        span.update_name(f"{name} {target}" if target else name)
        if method is not None:
            attributes["mcp.method.name"] = method
        if call.kind == "request" and call.id is not None:
            attributes["jsonrpc.request.id"] = str(call.id)
    if run is not None:
        attributes[PREFIX + "run.id"] = run.id
        attributes[PREFIX + "principal.id"] = run.principal.id
        attributes[PREFIX + "mandate.jti"] = run.mandate.jti
    return attributes


def describe(
    telemetry: CallTelemetry | None, request: Any, body: bytes, call: Call | None, run: RunView
) -> bytes:
    """Name the call's span and carry its trace context in ``params._meta``; returns the body to sign.

    The body changes only when a span with a valid context exists and ``call`` is a request or
    notification whose body is one JSON object: the new bytes replace the request's content here, so
    the ECT's ``inp_hash``, ``Content-Digest`` and the signature all cover what is sent.
    """
    if telemetry is None:
        return body
    span = telemetry.span
    if span is None:
        _describe_call(telemetry, call, run)
        return body
    if call is not None and call.method is not None:
        telemetry.attributes["mcp.method.name"] = call.method
    elif call is not None and call.kind == "response":
        telemetry.attributes["mcp.method.name"] = "response"
    attributes = _call_attributes(span, call, run)
    headers = request.headers
    session = headers.get("mcp-session-id")
    if session:
        attributes["mcp.session.id"] = session
    version = headers.get("mcp-protocol-version")
    if version:
        attributes["mcp.protocol.version"] = version
    url = request.url
    attributes["server.address"] = url.host
    attributes["server.port"] = url.port or (443 if url.scheme == "https" else 80)
    attributes["network.protocol.name"] = "http"
    attributes["network.transport"] = "tcp"
    span.set_attributes(attributes)
    if telemetry.sends > 1:
        # A resend carries the body its first send already stamped (the same span, so the same context).
        return body
    if call is None or call.kind not in ("request", "notification") or not span.get_span_context().is_valid:
        return body
    return _inject(span, request, body)


def _inject(span: Any, request: Any, body: bytes) -> bytes:
    # Telemetry never changes what is sent beyond adding ``_meta``: a body that does not survive a
    # strict JSON round trip (NaN/Infinity, lone surrogates, duplicate names, deep nesting) goes out
    # as it came, untraced, rather than rewritten or failing the call.
    try:
        message = strict_json_loads(body, error=_NotTraceable)
    except _NotTraceable:
        return body
    if not isinstance(message, dict):
        return body
    params = message.get("params")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        return body
    carrier: dict[str, str] = {}
    _propagate.inject(carrier, context=_trace.set_span_in_context(span))
    if not carrier:
        return body
    meta = params.get("_meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta.update(carrier)
    message["params"] = {**params, "_meta": meta}
    try:
        new = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError, RecursionError):
        return body
    _replace_body(request, new)
    return new


def _replace_body(request: Any, body: bytes) -> None:
    """Give an httpx/httpx2 request new content (both keep it in ``_content`` and ``stream``)."""
    library = sys.modules[type(request).__module__.partition(".")[0]]
    request.stream = library.ByteStream(body)
    request._content = body
    request.headers["Content-Length"] = str(len(body))


def _using(span: Any) -> Any:
    """Make ``span`` current without ending it or touching its status (we set those ourselves)."""
    return _trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)


#: What the context managers below return when OpenTelemetry is off: reusable, nothing to allocate.
_OFF: contextlib.AbstractContextManager[None] = contextlib.nullcontext()


def current(telemetry: CallTelemetry | None) -> contextlib.AbstractContextManager[Any]:
    """Make the call's span the current one (the token span, and HTTP spans of the IdP request, nest)."""
    if telemetry is None or telemetry.span is None:
        return _OFF
    return _using(telemetry.span)  # type: ignore[no-any-return]


def answered(telemetry: CallTelemetry | None, status: int, code: str | None = None) -> None:
    """The journal wrote a send's ``response`` entry: end the span unless a resend follows."""
    if telemetry is None or telemetry.ended:
        return
    span = telemetry.span
    if telemetry.resend_pending:
        if span is not None:
            span.add_event(PREFIX + "attempt_answered", {"http.response.status_code": status})
        return
    if span is not None:
        span.set_attribute("http.response.status_code", status)
    error = code if code is not None else (str(status) if status >= 400 else None)
    telemetry._end(error, "answered" if error is None else "failed")


def failed(telemetry: CallTelemetry | None, code: str, *, final: bool = False) -> None:
    """The journal wrote a send's ``error`` entry (transport failure, cut stream; ``final``: the run
    closed, so no resend can follow)."""
    if telemetry is None or telemetry.ended or (telemetry.resend_pending and not final):
        return
    telemetry._end(code, "failed")


def resending(request: Any, reason: str, status: int) -> None:
    """The 401/403 flow resends ``request`` (``reason``: ``reobtain`` or ``step_up``)."""
    telemetry = request.extensions.get(EXTENSION_TELEMETRY)
    if not isinstance(telemetry, CallTelemetry) or telemetry.ended:
        return
    telemetry.resend_pending = True
    if telemetry.span is not None:
        telemetry.span.add_event(PREFIX + reason, {"http.response.status_code": status})


def refused(
    request: Any,
    call: Call | None,
    error: McpClientAuthError,
    *,
    run: RunView | None = None,
    local: bool = True,
) -> None:
    """A refusal: end the call's span (starting one if the refusal came before the call had one)."""
    telemetry = request.extensions.get(EXTENSION_TELEMETRY) if request is not None else None
    if not isinstance(telemetry, CallTelemetry):
        telemetry = call_started(request) if request is not None else None
        if telemetry is None:
            return
        _describe_call(telemetry, call, run)
    elif "mcp.method.name" not in telemetry.attributes:
        _describe_call(telemetry, call, run)
    if telemetry.ended:
        return
    instruments = _meters()
    if instruments is not None:
        instruments.refusals.add(
            1, {**telemetry.attributes, "error.type": error.code, PREFIX + "refusal.local": local}
        )
    span = telemetry.span
    if span is not None:
        span.set_attribute(PREFIX + "refusal.code", error.code)
        span.set_attribute(PREFIX + "refusal.local", local)
        capability = error.action if isinstance(error, MandateDenied) else None
        event: dict[str, Any] = {PREFIX + "refusal.code": error.code}
        if capability:
            event[PREFIX + "capability"] = capability
            span.add_event(PREFIX + "capability_missing", event)
        else:
            span.add_event(PREFIX + "refusal", event)
    telemetry._end(error.code, "refused")


# --- token acquisition -------------------------------------------------------------------------------


class _TokenRecord:
    __slots__ = ("fetched", "missed", "retries", "shared")

    def __init__(self) -> None:
        self.fetched = False
        self.missed = False
        self.shared = False
        self.retries = 0


_TOKEN: contextvars.ContextVar[_TokenRecord | None] = contextvars.ContextVar(
    "mcpclient_auth_token_record", default=None
)


def token_span(source: Any, reason: str = "first") -> contextlib.AbstractContextManager[None]:
    """A child span around one ``get_token`` of the request path (no secret in any attribute)."""
    tracer = _tracer()
    instruments = _meters()
    if tracer is None and instruments is None:
        return _OFF
    return _token_span(tracer, instruments, source, reason)


@contextlib.contextmanager
def _token_span(tracer: Any, instruments: _Instruments | None, source: Any, reason: str) -> Iterator[None]:
    record = _TokenRecord()
    reset = _TOKEN.set(record)
    kind = type(source).__name__
    span = tracer.start_span(f"token {kind}", kind=SpanKind.INTERNAL) if tracer is not None else None
    error: str | None = None
    try:
        if span is not None:
            with _using(span):
                yield
        else:
            yield
    except McpClientAuthError as exc:
        error = exc.code
        raise
    except BaseException as exc:
        error = type(exc).__name__
        raise
    finally:
        _TOKEN.reset(reset)
        cached = _has_cache(source)
        outcome = "none" if not cached else ("miss" if record.missed else "hit")
        if instruments is not None and cached and error is None:
            (instruments.cache_misses if record.missed else instruments.cache_hits).add(
                1, {PREFIX + "token.source": kind}
            )
        if span is not None:
            attributes: dict[str, Any] = {
                PREFIX + "token.source": kind,
                PREFIX + "token.cache": outcome,
                PREFIX + "token.store": "shared" if record.shared else "in_process",
                PREFIX + "token.fetched": record.fetched,
                PREFIX + "token.retries": record.retries,
                PREFIX + "token.reason": reason,
            }
            if error is not None:
                attributes["error.type"] = error
                span.set_status(StatusCode.ERROR, error)
            span.set_attributes(attributes)
            span.end()


def _has_cache(source: Any) -> bool:
    cache = getattr(source, "cache", None)
    return cache is not None and type(cache).__name__ == "TokenCache"


def token_miss(shared: bool) -> None:
    """The token cache missed (called from ``TokenCache.fetch``)."""
    record = _TOKEN.get()
    if record is not None:
        record.missed = True
        record.shared = shared


def token_retry() -> None:
    """A token request is retried after a transient failure."""
    record = _TOKEN.get()
    if record is not None:
        record.retries += 1


def fetching(factory: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    """``factory`` (a token request), counted and marked on the current token span when it runs."""
    record = _TOKEN.get()
    instruments = _meters()
    if record is None and instruments is None:
        return factory

    async def counted() -> T:
        if record is not None:
            record.fetched = True
        if instruments is not None:
            instruments.token_fetches.add(1)
        return await factory()

    return counted


# --- ledger ------------------------------------------------------------------------------------------


def ledger_appended(kind: str) -> None:
    instruments = _meters()
    if instruments is not None:
        instruments.ledger_appends.add(1, {PREFIX + "ledger.kind": kind})


# --- server ------------------------------------------------------------------------------------------


class _ServerSpan:
    __slots__ = ("span", "started")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.started = time.perf_counter()


class _NotTraceable(ValueError):
    """A body telemetry leaves alone (not strict JSON)."""


#: The ``params._meta`` keys of W3C Trace Context and Baggage (SEP-414: written unprefixed).
_PROPAGATED = ("traceparent", "tracestate", "baggage")

_SERVER: contextvars.ContextVar[_ServerSpan | None] = contextvars.ContextVar(
    "mcpclient_auth_server_span", default=None
)


def _carrier(body: bytes, headers: Mapping[str, str]) -> Mapping[str, str]:
    """Where the client's trace context is: ``params._meta`` of the JSON-RPC body, else the
    ``traceparent``/``tracestate`` headers."""
    if body[:1] == b"{":
        # The body is not verified yet: parse it strictly (bounded nesting, no NaN) and treat anything
        # unparseable as "no context" — a tracing aid must never turn a refusal into a 500.
        try:
            message = strict_json_loads(body, error=_NotTraceable)
        except _NotTraceable:
            message = None
        params = message.get("params") if isinstance(message, dict) else None
        meta = params.get("_meta") if isinstance(params, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("traceparent"), str):
            return {k: v for k, v in meta.items() if k in _PROPAGATED and isinstance(v, str)}
    return {name: headers[name] for name in ("traceparent", "tracestate") if name in headers}


def server_span(
    method: str, body: bytes, headers: Mapping[str, str]
) -> contextlib.AbstractContextManager[None]:
    """A SERVER span around the verification (and serving) of one request."""
    tracer = _tracer()
    instruments = _meters()
    if tracer is None and instruments is None:
        return _OFF
    return _server_span(tracer, instruments, method, body, headers)


@contextlib.contextmanager
def _server_span(
    tracer: Any, instruments: _Instruments | None, method: str, body: bytes, headers: Mapping[str, str]
) -> Iterator[None]:
    span = None
    if tracer is not None:
        try:
            parent = _propagate.extract(_carrier(body, headers))
        except Exception:  # telemetry is best effort on unauthenticated input: never a 500
            parent = None
        # Named from the verified call once verification passed (an unverified body names nothing).
        span = tracer.start_span(f"mcp {method}", context=parent, kind=SpanKind.SERVER)
    state = _ServerSpan(span)
    reset = _SERVER.set(state)
    try:
        if span is not None:
            with _using(span):
                yield
        else:
            yield
    finally:
        _SERVER.reset(reset)
        if span is not None:
            span.end()
        if instruments is not None:
            instruments.server_duration.record(time.perf_counter() - state.started)


def server_accepted(verified: Any) -> None:
    """The middleware verified the request (``verified``: a ``VerifiedRequest``)."""
    state = _SERVER.get()
    instruments = _meters()
    if instruments is not None:
        instruments.server_verifications.add(1, {PREFIX + "verification": "verified"})
    if state is None or state.span is None:
        return
    span = state.span
    span.set_attribute(PREFIX + "verification", "verified")
    call = verified.call
    if call is not None:
        method = call.method or "response"
        span.update_name(f"{method} {call.tool}" if call.tool else method)
        if call.method is not None:
            span.set_attribute("mcp.method.name", call.method)
        if call.tool is not None:
            span.set_attribute("gen_ai.tool.name", call.tool)
            span.set_attribute("gen_ai.operation.name", "execute_tool")
        if call.kind == "request" and call.id is not None:
            span.set_attribute("jsonrpc.request.id", str(call.id))
    if verified.principal is not None:
        span.set_attribute(PREFIX + "principal.id", verified.principal)
    if verified.mandate is not None:
        span.set_attribute(PREFIX + "mandate.jti", verified.mandate.jti)
    if verified.ect is not None:
        span.set_attribute(PREFIX + "ect.jti", verified.ect.jti)
    if verified.action is not None:
        span.set_attribute(PREFIX + "exec_act", verified.action)


def server_rejected(code: str, status: int) -> None:
    """The middleware answered a problem document (``code``, HTTP ``status``)."""
    state = _SERVER.get()
    instruments = _meters()
    if instruments is not None:
        instruments.server_verifications.add(1, {PREFIX + "verification": "rejected", "error.type": code})
    if state is None or state.span is None:
        return
    span = state.span
    span.set_attribute(PREFIX + "verification", "rejected")
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("error.type", code)
    span.set_status(StatusCode.ERROR, code)
