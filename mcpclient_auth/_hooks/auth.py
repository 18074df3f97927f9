"""401 / 403 handling for the user's token: re-obtain once, step up once, then fail typed.

A client built by :meth:`AgentRun.httpx_client_factory` (or the httpx2 factory) carries a ``RunAuth``
(:class:`AuthFlow` subclassed with the library's ``Auth`` in :mod:`._httpx` / :mod:`._httpx2`: one flow
for httpx and httpx2). The library runs the client's event hooks on *every* request an auth flow yields,
so each resend goes through the run's request hook again: a fresh token from the token source, a fresh
ECT, a fresh signature and its own ``ect`` ledger entry. Per request:

- ``401`` with ``error="invalid_token"`` -> ``invalidate(..., token=<the token sent>)``, re-obtain,
  resend once (many requests failing with the same stale token cause one re-obtain); a second 401 ->
  :class:`~mcpclient_auth.errors.UpstreamUnauthorized`;
- ``403`` with ``error="insufficient_scope" scope="a b"`` -> one step-up: the token is re-obtained for
  the union of the scopes asked, granted and demanded, and the run asks for that union from then on;
  a second 403 -> :class:`~mcpclient_auth.errors.InsufficientScope`. The demanded scopes must be in
  the run's allowlist (``AgentRun(allowed_scopes=...)``; default the configured scopes plus the
  RFC 9728 ``scopes_supported`` the run fetched): a server demanding anything else gets no step-up and
  the identity provider is never asked (:class:`~mcpclient_auth.errors.ScopeNotAllowed`);
- ``401`` with a ``DPoP`` challenge ``error="use_dpop_nonce"`` and a ``DPoP-Nonce`` (RFC 9449 §9, a
  DPoP-bound token) -> the nonce is kept for the endpoint's origin and the request is resent once with
  a fresh proof carrying it (same token, same ``ath``, new ``jti``); this resend does not use up the
  re-obtain / step-up above. A ``DPoP-Nonce`` on any other answer is kept for the next proofs;
- optional RFC 9728 (``AgentRun(discover_resource_metadata=True)``): a 401 naming
  ``resource_metadata`` makes the run fetch that document anonymously (no token, no signature), check
  that its ``resource`` is the endpoint, and ask the token source for that audience on the resend.

**How a final failure reaches the caller.** For a JSON-RPC request with an id sent through a factory-
built client, ``UpstreamRefusalTransport`` (:class:`UpstreamRefusal`, the innermost transport) answers
it locally as a -32003 JSON-RPC error carrying the typed error's code (``upstream_unauthorized`` /
``insufficient_scope``), after writing the server's real answer (``response`` entry, its status) and a
``denial`` entry. The MCP session survives; :class:`~mcpclient_auth.adapters.mcp_v1.RunSession`
raises the typed error. Anything else (notifications, GET/DELETE, clients without our transport) gets
the typed exception raised from the auth flow.

The flow, the run's request hook and the transport share one :class:`Attempt` per request, carried
in ``request.extensions`` (as httpx passes per-request state): no context variable.

    factory = run.httpx_client_factory()    # composes RunAuth; passing auth= as well is an error
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _dpop, _telemetry
from .._encoding import sha256_b64url
from .._journal import InFlight
from ..authz.base import SAFE_CODE
from ..authz.www_authenticate import BearerChallenge, bearer_challenge
from ..errors import (
    AuthorizationError,
    ChallengeMalformed,
    ConfigurationError,
    InsufficientScope,
    ScopeNotAllowed,
    UpstreamUnauthorized,
)
from ..refusal import refusal_body
from .library import EXTENSION_ATTEMPT, EXTENSION_INFLIGHT, is_http_error, library_for, library_named

if TYPE_CHECKING:
    from .._calls import RunView
    from ..authz.base import AccessToken, TokenSource
    from ..endpoints import Endpoint
    from ..jsonrpc import Call
    from ..principal import Principal
    from ..run import AgentRun

__all__ = [
    "Attempt",
    "AuthFlow",
    "UpstreamRefusal",
    "check_installable",
    "compose_auth",
    "verdict",
    "wrap_upstream",
]

#: Verdicts on one response (see :func:`verdict`).
PASS, REOBTAIN, STEP_UP, FAIL = "pass", "reobtain", "step_up", "fail"
#: A 401 ``use_dpop_nonce`` (RFC 9449 §9): resend once with the nonce, same token.
DPOP_NONCE = "dpop_nonce"
#: A 401/403 body we read to hash it for the ledger: they are small; never buffer more.
_MAX_ERROR_BODY = 64 * 1024


@dataclass(eq=False)
class Attempt:
    """Shared state of one request across its (at most two) sends.

    The flow sets ``scopes`` (a step-up) and ``final``; the run's request hook records, per send,
    what it used (:meth:`used`). ``foreign_auth`` marks a request whose ``Authorization`` belongs to
    the caller's own ``auth=`` (a run with a token source refuses it: two sources of Authorization).
    """

    foreign_auth: bool = False
    scopes: tuple[str, ...] | None = None
    final: bool = False
    run: RunView | None = None
    source: TokenSource | None = None
    principal: Principal | None = None
    endpoint: Endpoint | None = None
    call: Call | None = None
    audience: str | None = None
    asked_scopes: tuple[str, ...] | None = None
    dpop_nonce_resent: bool = False
    # the access token sent with the latest send: never in repr()
    token: AccessToken | None = field(default=None, repr=False)

    def used(
        self,
        run: RunView,
        source: TokenSource,
        principal: Principal,
        endpoint: Endpoint,
        call: Call | None,
        audience: str | None,
        scopes: Sequence[str] | None,
        token: AccessToken,
    ) -> None:
        """Called by the run's hook once it has the token for this send."""
        self.run, self.source, self.principal = run, source, principal
        self.endpoint, self.call = endpoint, call
        self.audience = audience
        self.asked_scopes = tuple(scopes) if scopes is not None else None
        self.token = token

    def release(self) -> None:
        """Drop the references to the run, its source and principal once the request is over."""
        self.run = self.source = self.principal = None
        self.endpoint = self.call = None
        self.token = None  # never keep a user credential alive past its request

    def give_up(self, status: int, challenge: BearerChallenge | None) -> AuthorizationError:
        """The final verdict: forget a token the server called invalid (the next call re-obtains
        instead of failing with it again), and return the typed error."""
        if (
            status == 401
            and self.source is not None
            and self.principal is not None
            and self.token is not None
        ):
            self.source.invalidate(
                self.principal, audience=self.audience, scopes=self.asked_scopes, token=self.token
            )
        return self.failure(status, challenge)

    def failure(self, status: int, challenge: BearerChallenge | None) -> AuthorizationError:
        """The typed error for a final 401/403 (no header text except a validated error code)."""
        principal = self.principal.id if self.principal is not None else None
        code = challenge.error if challenge is not None and challenge.error else None
        code = code if code is not None and SAFE_CODE.fullmatch(code) else None
        refused = _outside_allowlist(self, challenge) if status == 403 and not self.final else []
        if refused:
            return ScopeNotAllowed(
                "the MCP server demands scopes outside the run's allowed_scopes; not asking the identity "
                "provider for them",
                status=status,
                error=code,
                scopes=[s for s in refused if SAFE_CODE.fullmatch(s)],
                principal=principal,
            )
        if status == 403:
            return InsufficientScope(
                "the MCP server requires more scope than the token carries"
                + (" after one step-up" if self.final else " (and names nothing more to ask for)"),
                status=status,
                error=code,
                scopes=list(challenge.scopes) if challenge is not None else [],
                principal=principal,
            )
        return UpstreamUnauthorized(
            f"the MCP server rejected the access token for principal {principal!r} (HTTP 401)"
            + (" after one re-obtain" if self.final else ""),
            status=status,
            error=code,
            principal=principal,
        )


def _challenge(response: Any, attempt: Attempt | None = None) -> BearerChallenge | None:
    # A DPoP-bound token is challenged with the DPoP scheme (RFC 9449 §7.1): same parameters.
    bound = attempt is not None and attempt.token is not None and attempt.token.dpop_bound
    scheme = "dpop" if bound else "bearer"
    try:
        values = response.headers.get_list("www-authenticate")
        return bearer_challenge(values, scheme=scheme) or (
            bearer_challenge(values) if scheme == "dpop" else None
        )
    except ChallengeMalformed:
        return None


def verdict(attempt: Attempt, response: Any, sent: Any = None) -> tuple[str, BearerChallenge | None]:
    """What to do about ``response`` to a send that carried the run's token.

    ``sent`` is the request ``response`` answers (default ``response.request``; a transport passes it
    because the client ties the two together only after the transport returns).

    ``PASS`` (not our business: no token of ours on it, or not an authorization failure), ``REOBTAIN``
    (401 invalid_token, or a 401 naming resource metadata when the run discovers it), ``STEP_UP``
    (403 insufficient_scope demanding scopes not yet asked for) or ``FAIL``.
    """
    status = response.status_code
    if attempt.token is None or status not in (401, 403):
        return PASS, None
    if not _answered_by_endpoint(attempt, response, sent):
        # After a redirect the answer came from a hop that got none of our credentials: its 401/403
        # says nothing about the run's token, so it must not drive a re-obtain or step-up.
        return PASS, None
    if _dpop.nonce_challenge(attempt, response):
        return DPOP_NONCE, None
    challenge = _challenge(response, attempt)
    if status == 401:
        if attempt.final or challenge is None:
            return FAIL, challenge
        if challenge.error == "invalid_token":
            return REOBTAIN, challenge
        discovers = attempt.run is not None and attempt.run.discover_resource_metadata
        if discovers and challenge.resource_metadata is not None:
            return REOBTAIN, challenge
        return FAIL, challenge
    if challenge is None or challenge.error != "insufficient_scope":
        return PASS, challenge  # a 403 for another reason (a signature or mandate rejection)
    if attempt.final or not set(challenge.scopes) - set(_held_scopes(attempt)):
        return FAIL, challenge  # nothing more to ask for: a step-up cannot help
    if _outside_allowlist(attempt, challenge):
        return FAIL, challenge  # never ask the identity provider for what the run does not allow
    return STEP_UP, challenge


def _answered_by_endpoint(attempt: Attempt, response: Any, sent: Any) -> bool:
    """False when the answered send (``sent``, else ``response.request``) went elsewhere than the
    endpoint the run's token was last used for (a redirect hop). ``used()`` sets the token together
    with run and endpoint, and httpx ties every response to its request, so "cannot tell" only
    happens to hand-built values; they keep the plain status/challenge judgement."""
    run, endpoint = attempt.run, attempt.endpoint
    if run is None or endpoint is None:
        return True
    try:
        url = str((sent if sent is not None else response.request).url)
    except (AttributeError, RuntimeError):
        return True
    return run.endpoint_set.match(url) == endpoint


def _outside_allowlist(attempt: Attempt, challenge: BearerChallenge | None) -> list[str]:
    """The newly demanded scopes a step-up may not ask for (sorted); empty when all are allowed."""
    if challenge is None or challenge.error != "insufficient_scope":
        return []
    demanded = set(challenge.scopes) - set(_held_scopes(attempt))
    run, endpoint = attempt.run, attempt.endpoint
    if run is None or endpoint is None:
        return sorted(demanded)  # nothing to judge by: allow nothing
    return sorted(demanded - run.scope_allowlist(endpoint, attempt.source))


def _held_scopes(attempt: Attempt) -> Iterable[str]:
    held: set[str] = set(attempt.asked_scopes or ())
    if attempt.token is not None:
        held |= attempt.token.scopes
    if attempt.asked_scopes is None:  # the source's defaults were asked for
        held |= set(getattr(attempt.source, "scopes", ()) or ())
    return held


class AuthFlow:
    """The ``auth=`` of factory-built clients: 401/403 handling for the run's token (module docstring).

    ``inner``: the caller's own ``httpx.Auth`` on a multi-run client; its flow is driven unchanged, and
    a run with a token source refuses requests made under it (two sources of ``Authorization``).
    """

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner

    @property
    def requires_request_body(self) -> bool:
        return bool(self.inner is not None and self.inner.requires_request_body)

    @property
    def requires_response_body(self) -> bool:
        return bool(self.inner is not None and self.inner.requires_response_body)

    def __repr__(self) -> str:
        return f"RunAuth(inner={type(self.inner).__name__ if self.inner is not None else None})"

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        attempt = Attempt(foreign_auth=self.inner is not None)
        try:
            if self.inner is not None:
                flow = self.inner.async_auth_flow(request)
                try:
                    outgoing = await flow.__anext__()
                    while True:
                        outgoing.extensions[EXTENSION_ATTEMPT] = attempt
                        response = yield outgoing
                        try:
                            outgoing = await flow.asend(response)
                        except StopAsyncIteration:
                            return
                finally:
                    await flow.aclose()
            # The request hook and the transport read the attempt from the request they handle.
            request.extensions[EXTENSION_ATTEMPT] = attempt
            response = yield request
            action, challenge = _dpop_verdict(attempt, response)
            if action == DPOP_NONCE:
                response = yield _dpop_resend(attempt, request)
                action, challenge = _dpop_verdict(attempt, response)
            if action == PASS:
                return
            if action == FAIL:
                raise _final(attempt, request, response.status_code, challenge)
            assert challenge is not None
            _telemetry.resending(request, action, response.status_code)  # one span for both sends
            await self._prepare_resend(attempt, action, challenge)
            attempt.final = True
            response = yield request
            action, challenge = _dpop_verdict(attempt, response)
            if action == DPOP_NONCE:
                response = yield _dpop_resend(attempt, request)
                action, challenge = _dpop_verdict(attempt, response)
            if action != PASS:
                raise _final(attempt, request, response.status_code, challenge)
            if attempt.scopes is not None and attempt.run is not None and attempt.endpoint is not None:
                # The step-up worked: ask for these scopes from now on instead of failing every call once.
                attempt.run.remember_scopes(attempt.endpoint, attempt.source, attempt.scopes)
        finally:
            request.extensions.pop(EXTENSION_ATTEMPT, None)
            attempt.release()  # hold no credential or run past the request

    @staticmethod
    async def _prepare_resend(attempt: Attempt, action: str, challenge: BearerChallenge) -> None:
        run, source, principal, endpoint = attempt.run, attempt.source, attempt.principal, attempt.endpoint
        assert run is not None and source is not None and principal is not None and endpoint is not None
        if action == STEP_UP:
            attempt.scopes = tuple(sorted(set(_held_scopes(attempt)) | set(challenge.scopes)))
            return
        if run.discover_resource_metadata and challenge.resource_metadata is not None:
            await run.discover_audience(endpoint, challenge.resource_metadata)
        source.invalidate(
            principal, audience=attempt.audience, scopes=attempt.asked_scopes, token=attempt.token
        )
        attempt.token = None


def _dpop_verdict(attempt: Attempt, response: Any) -> tuple[str, BearerChallenge | None]:
    """:func:`verdict`, after keeping any ``DPoP-Nonce`` the endpoint's answer carries (RFC 9449 §9)."""
    if _answered_by_endpoint(attempt, response, None):
        _dpop.learn_nonce(attempt, response)
    return verdict(attempt, response)


def _dpop_resend(attempt: Attempt, request: Any) -> Any:
    """The request to resend once after a 401 ``use_dpop_nonce`` (its nonce is kept by now): the run's
    request hook gives it a fresh proof carrying the nonce."""
    attempt.dpop_nonce_resent = True
    return request


def _final(
    attempt: Attempt, request: Any, status: int, challenge: BearerChallenge | None
) -> AuthorizationError:
    """The typed error the flow raises for a final 401/403, after its ``denial`` entry (the local
    answer of :class:`UpstreamRefusalTransport` writes its own; this is the path without it)."""
    error = attempt.give_up(status, challenge)
    inflight = request.extensions.get(EXTENSION_INFLIGHT)
    if isinstance(inflight, InFlight):
        inflight.run.journal.denial(inflight.call, inflight.action, error)
    _telemetry.refused(request, attempt.call, error, local=False)
    return error


class UpstreamRefusal:
    """Innermost transport of factory-built clients: a *final* 401/403 for a JSON-RPC request with an
    id becomes a local JSON-RPC refusal (see the module docstring); everything else passes through.

    A library-neutral mixin: :mod:`._httpx` / :mod:`._httpx2` subclass it with their library's
    ``AsyncBaseTransport`` (``UpstreamRefusalTransport``).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def handle_async_request(self, request: Any) -> Any:
        response = await self.inner.handle_async_request(request)
        attempt = request.extensions.get(EXTENSION_ATTEMPT)
        if (
            not isinstance(attempt, Attempt)
            or attempt.token is None
            or response.status_code not in (401, 403)
        ):
            return response
        action, challenge = verdict(attempt, response, request)
        call = attempt.call
        if action != FAIL or call is None or call.kind != "request" or call.id is None:
            return response
        inflight = request.extensions.get(EXTENSION_INFLIGHT)
        if not isinstance(inflight, InFlight):
            return response
        error = attempt.give_up(response.status_code, challenge)
        _telemetry.refused(request, call, error, local=False)  # the span ends with the refusal code
        body = await _read_capped(response)
        run = inflight.run
        run.journal.response(
            inflight,
            status=response.status_code,
            out_hash=sha256_b64url(body),
            nbytes=len(body),
            completed=False,
        )
        run.journal.denial(call, inflight.action, error)
        # Built with the request's own library: its client asserts the response stream's type.
        return library_for(request).response(
            200,
            headers={"content-type": "application/json", "x-mcpclient-auth-refusal": error.code},
            content=refusal_body(call.id, error),
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _read_capped(response: Any) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > _MAX_ERROR_BODY:
                break
            chunks.append(chunk)
    except Exception as exc:
        if not is_http_error(exc):
            raise
        # the status is what matters; a broken error body is hashed as far as it came
    finally:
        await response.aclose()
    return b"".join(chunks)


def _uses_tokens(run: AgentRun) -> bool:
    return run.token_source is not None or run.discovery_token_source is not None


def compose_auth(run: AgentRun | None, auth: Any, *, library: str = "httpx") -> Any:
    """The ``auth=`` for a factory-built client of ``run`` (``None``: a multi-run client).

    Raises :class:`ConfigurationError` when ``auth`` would be a second source of ``Authorization``
    (the run has a token source, or puts its mandate in ``Authorization``).
    """
    if run is not None:
        if auth is not None and _uses_tokens(run):
            raise ConfigurationError(
                "auth= together with a run that has a token source: two sources of Authorization; "
                "let the token source provide the user's token (or drop it and keep your auth=)"
            )
        if auth is not None and run.mandate_header == "authorization":
            raise ConfigurationError(
                "auth= together with mandate_header='authorization': two sources of Authorization"
            )
        if not _uses_tokens(run):
            return auth
        return library_named(library).auth()
    return library_named(library).auth(inner=auth)


def wrap_upstream(client: Any) -> None:
    """Put :class:`UpstreamRefusalTransport` under every transport of ``client`` (before our outer
    wrapper goes on). Only for httpx clients whose auth is a :class:`RunAuth`."""
    library = library_for(client)
    if not isinstance(client, library.async_client) or not isinstance(client.auth, AuthFlow):
        return
    transport = getattr(client, "_transport", None)
    mounts = getattr(client, "_mounts", None)
    if transport is None or not isinstance(mounts, dict):
        return  # no local answers then: the auth flow raises the typed error instead
    client._transport = library.upstream_transport(transport)
    for pattern, mounted in list(mounts.items()):
        if mounted is not None:
            mounts[pattern] = library.upstream_transport(mounted)


def check_installable(client: Any, run: AgentRun | None, *, answer_locally: bool = False) -> None:
    """``install()``: a run with a token source refuses a client that already authenticates
    (``auth=`` or an ``Authorization`` default header): two sources of ``Authorization``. Otherwise an
    ``httpx.AsyncClient`` gets :class:`RunAuth` (and, with ``answer_locally``, the upstream refusal
    transport), so installed clients re-obtain and step up like factory-built ones."""
    if run is None or not _uses_tokens(run):
        return
    headers = getattr(client, "headers", None) or {}
    if getattr(client, "auth", None) is not None or "authorization" in headers:
        raise ConfigurationError(
            "this client already sends Authorization (auth= or a default header) and the run has a "
            "token source: two sources of Authorization"
        )
    library = library_for(client)
    if isinstance(client, library.async_client):
        client.auth = library.auth()
        if answer_locally:
            wrap_upstream(client)
