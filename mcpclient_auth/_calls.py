"""The per-call pipeline of a run, as plain functions over a :class:`RunView`: no httpx, no hooks.

One request to a run's endpoint goes through three steps, each returning data:

1. :func:`admit` — parse the JSON-RPC body, check the principal, the mandate's expiry, the action
   policy and the capability's constraints: :class:`Admitted` (the call and its action) or a
   :class:`Refusal` (its ``denial`` ledger entry already written);
2. :func:`authorization` (:func:`authorization_sync` for sync clients) — the ``Authorization``
   value from the run's token source (the service source in a discovery session) and, for a
   DPoP-bound token, the key that proves it (:class:`~._dpop.Credential`); nothing while the run
   waits for the endpoint's first challenge (``initial_scope="challenge"``); or a :class:`Refusal`;
3. :func:`prepare` — the static headers, the ECT (DAG ``pred``, ``inp_hash`` of the exact body), the
   ``Authorization`` header and a fresh ``DPoP`` proof (RFC 9449), then ``Content-Digest`` and the
   RFC 9421 signature (which covers ``DPoP``), all set on the request; returns :class:`Prepared` (the
   call to journal as sent, and the header names stamped).

The hooks (:mod:`._hooks`) bind these steps to httpx and httpx2 and journal the call as sent; nothing
here calls back into them or into :class:`~mcpclient_auth.run.AgentRun`'s private methods. A
request here is anything with httpx's request shape (``method``, ``url``, ``headers``):

    admitted = admit(run, "POST", body, "application/json")
    if isinstance(admitted, Refusal):
        raise admitted.error
    header = await authorization(run, admitted.call, endpoint, attempt=None)
    prepared = prepare(run, request, body, endpoint, admitted, header)
    run.journal.sent(prepared.inflight)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import _telemetry
from ._context import current_principal, discovery_run
from ._dpop import Credential, credential_for, proof_for
from ._encoding import b64url_encode
from ._journal import InFlight
from .authz.dpop import DPOP_HEADER
from .ect import ExecutionContextToken
from .errors import (
    ConfigurationError,
    JsonRpcError,
    McpClientAuthError,
    PrincipalMismatch,
    RunClosed,
    TokenExpired,
)
from .jsonrpc import Call, NotJsonRpc, parse
from .policy import check_call

if TYPE_CHECKING:
    from ._hooks.auth import Attempt
    from ._journal import RunJournal
    from .act import Mandate
    from .authz.base import TokenSource
    from .authz.dpop import DPoP
    from .authz.resource_metadata import ResourceMetadata
    from .constraints import CallBudget
    from .dag import Frontier
    from .endpoints import Endpoint, EndpointSet
    from .httpsig import RequestSigner
    from .keys import Identity
    from .policy import ActionPolicy
    from .principal import Principal

__all__ = [
    "DISCOVERY_METHODS",
    "Admitted",
    "Prepared",
    "Refusal",
    "RunView",
    "admit",
    "authorization",
    "authorization_sync",
    "authorization_value",
    "check_open",
    "prepare",
]

#: Seconds a mandate must still be valid for a call to be sent (a server checks ``exp`` on arrival).
EXPIRY_MARGIN = 5
#: What a discovery session (service credentials, :meth:`AgentRun.discovery`) may send: session set-up,
#: listings and notifications. Tool calls, reads and prompts act for the user: never with the service token.
DISCOVERY_METHODS = frozenset(
    {"initialize", "ping", "tools/list", "resources/list", "resources/templates/list", "prompts/list"}
)
#: Headers the signature adds (the last only when the request has a body).
_SIGNATURE_HEADERS = ("Signature", "Signature-Input", "Content-Digest")


class RunView(Protocol):
    """What the pipeline reads from a run (:class:`~mcpclient_auth.run.AgentRun` has it all)."""

    @property
    def id(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    @property
    def agent(self) -> Identity: ...
    @property
    def mandate(self) -> Mandate: ...
    @property
    def principal(self) -> Principal: ...
    @property
    def policy(self) -> ActionPolicy: ...
    @property
    def budget(self) -> CallBudget: ...
    @property
    def frontier(self) -> Frontier: ...
    @property
    def journal(self) -> RunJournal: ...
    @property
    def endpoint_set(self) -> EndpointSet: ...
    @property
    def token_source(self) -> TokenSource | None: ...
    @property
    def discovery_token_source(self) -> TokenSource | None: ...
    @property
    def dpop(self) -> DPoP | None: ...
    @property
    def ect_header(self) -> str: ...
    @property
    def ect_ttl(self) -> int: ...
    @property
    def static_headers(self) -> Mapping[str, str]: ...

    @property
    def discover_resource_metadata(self) -> bool: ...

    def signer_for(self, endpoint: Endpoint) -> RequestSigner: ...
    def ect_audience(self, endpoint: Endpoint) -> list[str]: ...
    def token_resource(self, endpoint: Endpoint) -> str | None: ...
    def scopes_for(self, endpoint: Endpoint, source: TokenSource) -> Sequence[str] | None: ...
    def token_deferred(self, endpoint: Endpoint, source: TokenSource) -> bool: ...
    # what the 401/403 flow (_hooks/auth.py) learns and asks at run time
    @property
    def allowed_scopes(self) -> frozenset[str] | None: ...
    def scope_allowlist(self, endpoint: Endpoint, source: TokenSource | None) -> frozenset[str]: ...
    def remember_scopes(
        self, endpoint: Endpoint, source: TokenSource | None, scopes: Sequence[str] | None
    ) -> None: ...
    async def discover_resource(self, endpoint: Endpoint, metadata_url: str) -> ResourceMetadata: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request the run may send: its JSON-RPC ``call`` (``None`` for GET/DELETE) and ``action``."""

    call: Call | None
    action: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused request: the typed error, its ``denial`` (or ``error``) entry already written."""

    call: Call | None
    error: McpClientAuthError


@dataclass(frozen=True, slots=True)
class Prepared:
    """What :func:`prepare` put on the request: header values (the ones we own) and the call in flight."""

    # may hold the user's access token: never in repr()
    headers: dict[str, str] = field(repr=False)
    inflight: InFlight | None
    #: every header name we set, signature headers included (removed again if a redirect leaves)
    stamp: tuple[str, ...] = ()


def check_open(run: RunView) -> None:
    """Raise :class:`~mcpclient_auth.errors.RunClosed` for a closed run (nothing is journalled)."""
    if run.closed:
        raise RunClosed(f"run {run.id} is closed; start a new AgentRun for more calls")


def _check_principal(run: RunView) -> None:
    acting = current_principal()
    if acting is not None and acting != run.principal.id:
        raise PrincipalMismatch(
            f"run {run.id} acts for principal {run.principal.id!r}, not for {acting!r}",
            principal=run.principal.id,
            requested=acting,
        )


def _classify(method: str, body: bytes, content_type: str | None) -> Call | None:
    result = parse(body, content_type=content_type)
    if isinstance(result, NotJsonRpc) and method in ("POST", "PUT", "PATCH"):
        raise JsonRpcError(f"refusing to sign a {method} to the MCP endpoint that is not JSON-RPC")
    return result if isinstance(result, Call) else None


def admit(run: RunView, method: str, body: bytes, content_type: str | None) -> Admitted | Refusal:
    """Parse and authorise one request; a refusal is journalled before it is returned.

    A body-less request (GET/DELETE) is admitted with no call: it is signed, but is not a call.
    """
    try:
        call = _classify(method, body, content_type)
    except McpClientAuthError as exc:
        run.journal.denial(None, None, exc)
        return Refusal(None, exc)
    if call is None:
        return Admitted(None, None)
    try:
        _check_principal(run)
        if run.mandate.exp <= time.time() + EXPIRY_MARGIN:
            raise TokenExpired("the run's mandate has expired; no further calls can be authorised")
        action = check_call(run.policy, call, run.mandate)
        # Constraints of a granted action apply whatever the policy (never ignored), charged to every
        # budgeted link of the mandate's chain (all or nothing), as the server does.
        run.budget.charge_chain(run.mandate.chain, action, call)
    except McpClientAuthError as exc:
        run.journal.denial(call, getattr(exc, "action", None), exc)
        return Refusal(call, exc)
    return Admitted(call, action)


def _source_for(run: RunView, call: Call | None) -> TokenSource | None:
    """The service source in ``run``'s discovery session (listings only), else the user's source."""
    if discovery_run() is not run:
        return run.token_source
    if call is not None and not (call.kind == "notification" or call.method in DISCOVERY_METHODS):
        raise PrincipalMismatch(
            f"a discovery session (service credentials) may only list; {call.method or 'a response'!r} "
            "must be sent in a session that carries the user's token",
            principal=run.principal.id,
            method=call.method,
        )
    return run.discovery_token_source


async def authorization_value(
    run: RunView, call: Call | None, endpoint: Endpoint, attempt: Attempt | None
) -> Credential | None:
    """The ``Authorization`` value for one send — the user's token, with the DPoP key that proves it
    when it is DPoP-bound (:func:`~._dpop.credential_for`) — or ``None``: nothing from us. Raises the
    typed error of a refusal (:func:`authorization` journals it).

    ``None`` when the run has no token source (the mandate or the caller's own auth then decides),
    and for a send the run makes without the user's token until the endpoint challenges it
    (``AgentRun(initial_scope="challenge")``, SEP-835; the attempt records the deferral). Under the
    401/403 flow (``attempt``), what the previous send's challenge asks for is done first
    (:meth:`~mcpclient_auth._hooks.auth.Attempt.answer_challenge`), a step-up's or first challenge's
    scopes are asked for, and the token used is recorded on the attempt.
    """
    if call is None:
        _check_principal(run)  # calls were checked in admit()
    source = _source_for(run, call)
    if source is None:
        return None
    if attempt is not None and attempt.foreign_auth:
        raise ConfigurationError(
            "this client has its own auth= while the run has a token source: two sources of "
            "Authorization; build the client without auth="
        )
    if attempt is not None and attempt.pending is not None:
        await attempt.answer_challenge(run, source, endpoint)
    resource = run.token_resource(endpoint)
    scopes: Sequence[str] | None
    if attempt is not None and attempt.scopes is not None:
        scopes = list(attempt.scopes)
    elif (
        attempt is not None
        and attempt.may_defer
        and source is run.token_source
        and run.token_deferred(endpoint, source)
    ):
        attempt.deferred(run, source, run.principal, endpoint, call, resource)
        return None
    else:
        scopes = run.scopes_for(endpoint, source)
    with _telemetry.token_span(source, _token_reason(attempt)):  # a child span of the call's
        token = await source.get_token(run.principal, audience=resource, scopes=scopes)
    credential = credential_for(run.dpop, source, token)
    if attempt is not None:
        attempt.used(run, source, run.principal, endpoint, call, resource, scopes, token)
    return credential


async def authorization(
    run: RunView, call: Call | None, endpoint: Endpoint, attempt: Attempt | None
) -> Credential | Refusal | None:
    """:func:`authorization_value`, with a failure journalled (``denial``) and returned as a
    :class:`Refusal`."""
    try:
        return await authorization_value(run, call, endpoint, attempt)
    except McpClientAuthError as exc:
        run.journal.denial(call, None, exc)
        return Refusal(call, exc)


def authorization_sync(
    run: RunView,
    call: Call | None,
    endpoint: Endpoint,
    attempt: Attempt | None,
    wait: Callable[[Callable[[], Awaitable[Credential | None]]], Credential | None],
) -> Credential | Refusal | None:
    """:func:`authorization` for a sync client: ``wait(make)`` runs ``make()`` to completion and returns
    its result (the hooks pass :func:`mcpclient_auth.authz._blocking.run_blocking`, which runs it on
    the token loop while this thread waits). The same coroutine as the async path: one flow."""
    try:
        if run.token_source is None and run.discovery_token_source is None:
            if call is None:
                _check_principal(run)  # what authorization_value checks, without a thread hop
            return None
        return wait(lambda: authorization_value(run, call, endpoint, attempt))
    except McpClientAuthError as exc:
        run.journal.denial(call, None, exc)
        return Refusal(call, exc)


def _token_reason(attempt: Attempt | None) -> str:
    """Why a token is asked for (the token span's ``reason``): first send, 401 re-obtain, step-up."""
    if attempt is None or not attempt.final:
        return "first"
    return "step_up" if attempt.scopes is not None else "reobtain"


def prepare(
    run: RunView,
    request: Any,
    body: bytes,
    endpoint: Endpoint,
    admitted: Admitted,
    authorization: Credential | str | None,
    *,
    url: str | None = None,
    telemetry: _telemetry.CallTelemetry | None = None,
) -> Prepared:
    """Set the run's headers, the ECT (for a call) and the signature on ``request``.

    ``url`` is the URI recorded in the ledger (default: the request's URL without its query). The
    call is not journalled here: the caller does ``run.journal.sent(prepared.inflight)`` once the
    request is ready to leave. A DPoP-bound credential gets a fresh proof for this send's method and
    URL; its ``jti`` goes into the call's ledger entry. With ``telemetry`` (OpenTelemetry configured),
    the ECT names the call's trace in ``ect_ext.trace`` and the ledger entry in ``meta.trace``.
    """
    headers = dict(run.static_headers)
    dpop_jti: str | None = None
    if isinstance(authorization, Credential):
        headers["Authorization"] = authorization.header
        if authorization.dpop is not None:  # a bearer token needs no proof (nor the URL for one)
            proof = proof_for(authorization, request.method, str(request.url))
            if proof is not None:
                headers[DPOP_HEADER] = proof.token
                dpop_jti = proof.jti
    elif authorization is not None:
        headers["Authorization"] = authorization
    inflight: InFlight | None = None
    body_sha256: bytes | None = None
    call, action = admitted.call, admitted.action
    if call is not None and action is not None:
        pred = run.frontier.begin() if call.is_tool_call else run.frontier.session_pred()
        # One SHA-256 of the exact body for both the ECT's inp_hash and the Content-Digest.
        body_sha256 = hashlib.sha256(body).digest()
        ect = ExecutionContextToken.mint(
            run.agent,
            audience=run.ect_audience(endpoint),
            exec_act=action,
            pred=pred,
            wid=run.id,
            inp_hash=b64url_encode(body_sha256),
            ttl=run.ect_ttl,
            ect_ext=telemetry.ect_extension() if telemetry is not None else None,
        )
        headers[run.ect_header] = ect.token
        if url is None:
            raw = request.url
            url = (
                f"{raw.scheme}://{raw.netloc.decode('ascii')}{raw.raw_path.decode('ascii').partition('?')[0]}"
            )
        inflight = InFlight(
            run, call, action, ect.jti, pred, url, ect.token, telemetry=telemetry, dpop_jti=dpop_jti
        )
        if telemetry is not None:
            telemetry.prepared(run, ect.jti, action)
    target = request.headers
    for name, value in headers.items():
        target[name] = value
    result = run.signer_for(endpoint).sign(request, body=body, body_sha256=body_sha256)
    stamp = (*headers, *(_SIGNATURE_HEADERS if result.content_digest else _SIGNATURE_HEADERS[:2]))
    return Prepared(headers, inflight, stamp)
