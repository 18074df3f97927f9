"""401 / 403 handling for the user's token: obtain on the first challenge, re-obtain once, step up
once, then fail typed.

A client built by :meth:`AgentRun.httpx_client_factory` (or the httpx2 factory), and an installed
client of a run with a token source, carries a ``RunAuth`` (:class:`AuthFlow` subclassed with the
library's ``Auth`` in :mod:`._httpx` / :mod:`._httpx2`): **one flow for httpx and httpx2, async and
sync clients**. The flow itself never waits for anything: it judges each response (:func:`verdict`),
records on the request's :class:`Attempt` what the resend needs (``attempt.resend(action, challenge)``)
and yields the request again. The library runs the client's event hooks on *every* request an auth
flow yields, so each resend goes through the run's request hook again, and that hook does the waiting:
:meth:`Attempt.answer_challenge` (metadata discovery, invalidation, scope choice), a fresh token from
the token source, a fresh ECT, a fresh signature and its own ``ect`` ledger entry. An async client's
hook awaits on its own loop, a sync client's hook waits for the same coroutine on the token loop
(:mod:`mcpclient_auth.authz._blocking`). Per request:

- first challenge (``AgentRun(initial_scope="challenge")``, SEP-835): the request went without the
  user's token; a 401 -> its ``resource_metadata`` is fetched (RFC 9728, its ``resource`` must name
  the endpoint), the token is asked for its ``scope=``, else ``scopes_supported``, else the
  configured scopes, and the request is resent once (a 401 or 403 to that resend is judged as below);

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
built client, the client's transport wrapper (:mod:`.transports`, via :func:`upstream_refusal`) answers
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

from collections.abc import AsyncGenerator, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import _dpop, _telemetry
from .._encoding import sha256_b64url
from .._journal import InFlight
from ..authz.base import SAFE_CODE, DiscoversResource
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
    "UpstreamAnswer",
    "check_installable",
    "compose_auth",
    "read_capped",
    "read_capped_sync",
    "upstream_refusal",
    "verdict",
]

#: Verdicts on one response (see :func:`verdict`).
PASS, OBTAIN, REOBTAIN, STEP_UP, FAIL = "pass", "obtain", "reobtain", "step_up", "fail"
#: A 401 ``use_dpop_nonce`` (RFC 9449 §9): resend once with the nonce, same token.
DPOP_NONCE = "dpop_nonce"
#: A request is sent at most this often by the flow: the first challenge, one re-obtain or step-up,
#: one DPoP nonce resend.
MAX_SENDS = 4
#: A 401/403 body we read to hash it for the ledger: they are small; never buffer more.
_MAX_ERROR_BODY = 64 * 1024


@dataclass(eq=False)
class Attempt:
    """Shared state of one request across its (at most :data:`MAX_SENDS`) sends.

    The flow records what the next send needs (:meth:`resend`: ``pending`` and its ``challenge``;
    ``final`` once the one re-obtain / step-up is spent); the run's request hook answers it
    (:meth:`answer_challenge`) and records, per send, what it used (:meth:`used`, or :meth:`deferred`
    for a send without the user's token). ``foreign_auth`` marks a request whose ``Authorization``
    belongs to the caller's own ``auth=`` (a run with a token source refuses it: two sources of
    Authorization).
    """

    foreign_auth: bool = False
    scopes: tuple[str, ...] | None = None
    final: bool = False
    #: the latest send went without the user's token, waiting for the endpoint's first challenge
    anonymous: bool = False
    #: the first challenge was answered: never send this request without the token again
    challenge_answered: bool = False
    #: what the next send must do first (OBTAIN / REOBTAIN / STEP_UP) and the challenge that asked
    pending: str | None = None
    challenge: BearerChallenge | None = None
    sends: int = 0
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

    @property
    def may_defer(self) -> bool:
        """Whether this send may still go without the user's token (``initial_scope="challenge"``)."""
        return not self.challenge_answered and not self.final and self.pending is None

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
        self.anonymous = False

    def deferred(
        self,
        run: RunView,
        source: TokenSource,
        principal: Principal,
        endpoint: Endpoint,
        call: Call | None,
        audience: str | None,
    ) -> None:
        """Called by the run's hook for a send that goes without the user's token (first challenge)."""
        self.run, self.source, self.principal = run, source, principal
        self.endpoint, self.call = endpoint, call
        self.audience = audience
        self.asked_scopes = None
        self.token = None
        self.anonymous = True

    def resend(self, action: str, challenge: BearerChallenge | None) -> None:
        """The flow's decision: resend, after doing ``action`` about ``challenge`` (no waiting here)."""
        self.pending, self.challenge = action, challenge
        if action == OBTAIN:
            self.challenge_answered = True
        else:
            self.final = True  # one re-obtain or step-up per request, no more
        if action == STEP_UP and challenge is not None:
            self.scopes = tuple(sorted(set(_held_scopes(self)) | set(challenge.scopes)))

    async def answer_challenge(self, run: RunView, source: TokenSource, endpoint: Endpoint) -> None:
        """Before a resend's token is asked for (called by the pipeline, :func:`.._calls.authorization`):
        discover the resource metadata a challenge named, forget a rejected token, choose the first
        challenge's scopes. Raises the typed error of a refusal (nothing is asked of the source then)."""
        action, challenge = self.pending, self.challenge
        self.pending = None
        if action == REOBTAIN and challenge is not None:
            if run.discover_resource_metadata and challenge.resource_metadata is not None:
                await run.discover_resource(endpoint, challenge.resource_metadata)
            if self.principal is not None:
                source.invalidate(
                    self.principal, audience=self.audience, scopes=self.asked_scopes, token=self.token
                )
            self.token = None
        elif action == OBTAIN:
            await self._first_challenge(run, source, endpoint, challenge)

    async def _first_challenge(
        self, run: RunView, source: TokenSource, endpoint: Endpoint, challenge: BearerChallenge | None
    ) -> None:
        """SEP-835: scopes from the 401's ``scope=``, else the metadata's ``scopes_supported``, else
        the configured ones; the metadata's ``resource`` (checked) is the audience from now on."""
        supported: tuple[str, ...] = ()
        if challenge is not None and challenge.resource_metadata is not None:
            metadata = await run.discover_resource(endpoint, challenge.resource_metadata)
            supported = metadata.scopes_supported
            if isinstance(source, DiscoversResource):
                source.use_resource_metadata(challenge.resource_metadata)
        named = challenge.scopes if challenge is not None and challenge.scopes else supported
        chosen = tuple(sorted(set(named)))
        if not chosen:
            return  # neither named any: ask for the configured scopes
        allowed = run.allowed_scopes
        outside = sorted(set(chosen) - allowed) if allowed is not None else []
        if outside:
            raise ScopeNotAllowed(
                "the MCP server's first challenge asks for scopes outside the run's allowed_scopes; not "
                "asking the identity provider for them",
                status=401,
                scopes=[s for s in outside if SAFE_CODE.fullmatch(s)],
                principal=run.principal.id,
            )
        self.scopes = chosen

    def release(self) -> None:
        """Drop the references to the run, its source and principal once the request is over."""
        self.run = self.source = self.principal = None
        self.endpoint = self.call = None
        self.challenge = None
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
    # RFC 9449 §7.1: the DPoP scheme's challenge has the Bearer parameters. A server may offer both, or
    # only DPoP (also to a first, anonymous request): read the one matching the token, else the other.
    bound = attempt is not None and attempt.token is not None and attempt.token.dpop_bound
    first, second = ("dpop", "bearer") if bound else ("bearer", "dpop")
    try:
        values = response.headers.get_list("www-authenticate")
        return bearer_challenge(values, scheme=first) or bearer_challenge(values, scheme=second)
    except ChallengeMalformed:
        return None


def verdict(attempt: Attempt, response: Any, sent: Any = None) -> tuple[str, BearerChallenge | None]:
    """What to do about ``response`` to a send of the run's (with its token, or without it while the
    run waits for the endpoint's first challenge).

    ``sent`` is the request ``response`` answers (default ``response.request``; a transport passes it
    because the client ties the two together only after the transport returns).

    ``PASS`` (not our business: nothing of ours on it, or not an authorization failure), ``DPOP_NONCE``
    (a 401 ``use_dpop_nonce`` with a nonce, once per request), ``OBTAIN``
    (a 401 to a send without the token: the first challenge), ``REOBTAIN`` (401 invalid_token, or a
    401 naming resource metadata when the run discovers it), ``STEP_UP`` (403 insufficient_scope
    demanding allowed scopes not yet asked for) or ``FAIL``.
    """
    status = response.status_code
    if status not in (401, 403) or (attempt.token is None and not attempt.anonymous):
        return PASS, None
    if not _answered_by_endpoint(attempt, response, sent):
        # After a redirect the answer came from a hop that got none of our credentials: its 401/403
        # says nothing about the run's token, so it must not drive a re-obtain or step-up.
        return PASS, None
    if _dpop.nonce_challenge(attempt, response):
        return DPOP_NONCE, None
    challenge = _challenge(response, attempt)
    if attempt.anonymous:
        # No token of ours was on it: a 401 is the first challenge (answered once per request); a 403
        # is the server's own business.
        return (OBTAIN, challenge) if status == 401 and not attempt.challenge_answered else (PASS, challenge)
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
    """The ``auth=`` of clients of a run with a token source: 401/403 handling for the run's token
    (module docstring), for async and sync clients of httpx and httpx2.

    ``inner``: the caller's own ``Auth`` on a multi-run client; its flow is driven unchanged, and a
    run with a token source refuses requests made under it (two sources of ``Authorization``).

    Extending the flow (a new challenge to answer, e.g. a DPoP nonce): give :func:`verdict` the new
    action, and :meth:`Attempt.answer_challenge` what the next send does about it; the run's request
    hook builds every send's ``Authorization`` afresh (:func:`mcpclient_auth._calls.authorization`).
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

    @staticmethod
    def sends(request: Any, attempt: Attempt) -> Generator[Any, Any, None]:
        """The flow of one request, shared by both drivers: yields each send of ``request``, receives
        its response. Never waits: what a resend needs is recorded on ``attempt`` (:meth:`Attempt.resend`)
        for the run's request hook. At most :data:`MAX_SENDS` sends."""
        # The request hook and the transport read the attempt from the request they handle.
        request.extensions[EXTENSION_ATTEMPT] = attempt
        attempt.sends = 1
        response = yield request
        while True:
            action, challenge = _dpop_verdict(attempt, response)
            if action == PASS:
                break
            if action == FAIL or attempt.sends >= MAX_SENDS:
                raise _final(attempt, request, response.status_code, challenge)
            if action == DPOP_NONCE:
                # its nonce is kept by now: the run's request hook gives the resend a fresh proof with it
                attempt.dpop_nonce_resent = True
            else:
                _telemetry.resending(request, action, response.status_code)  # one span for all sends
                attempt.resend(action, challenge)
            attempt.sends += 1
            response = yield request
        run, endpoint = attempt.run, attempt.endpoint
        learned = attempt.scopes is not None or attempt.challenge_answered
        if run is not None and endpoint is not None and learned:
            # The step-up or first challenge worked: ask for these scopes (and send the token) from now
            # on instead of failing every call once.
            run.remember_scopes(endpoint, attempt.source, attempt.scopes)

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
            steps = self.sends(request, attempt)
            try:
                outgoing = next(steps)
                while True:
                    response = yield outgoing
                    try:
                        outgoing = steps.send(response)
                    except StopIteration:
                        return
            finally:
                steps.close()
        finally:
            request.extensions.pop(EXTENSION_ATTEMPT, None)
            attempt.release()  # hold no credential or run past the request

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        attempt = Attempt(foreign_auth=self.inner is not None)
        try:
            if self.inner is not None:
                flow = self.inner.sync_auth_flow(request)
                try:
                    outgoing = next(flow)
                    while True:
                        outgoing.extensions[EXTENSION_ATTEMPT] = attempt
                        response = yield outgoing
                        try:
                            outgoing = flow.send(response)
                        except StopIteration:
                            return
                finally:
                    flow.close()
            yield from self.sends(request, attempt)
        finally:
            request.extensions.pop(EXTENSION_ATTEMPT, None)
            attempt.release()


def _dpop_verdict(attempt: Attempt, response: Any) -> tuple[str, BearerChallenge | None]:
    """:func:`verdict`, after keeping any ``DPoP-Nonce`` the endpoint's answer carries (RFC 9449 §9)."""
    # Only a DPoP-proved send can teach a nonce: a bearer send skips the URL and endpoint lookup.
    if _dpop.proved(attempt) and _answered_by_endpoint(attempt, response, None):
        _dpop.learn_nonce(attempt, response)
    return verdict(attempt, response)


def _final(
    attempt: Attempt, request: Any, status: int, challenge: BearerChallenge | None
) -> AuthorizationError:
    """The typed error the flow raises for a final 401/403, after its ``denial`` entry (the local
    answer of the transport wrapper writes its own; this is the path without it)."""
    error = attempt.give_up(status, challenge)
    inflight = request.extensions.get(EXTENSION_INFLIGHT)
    if isinstance(inflight, InFlight):
        inflight.run.journal.denial(inflight.call, inflight.action, error)
    _telemetry.refused(request, attempt.call, error, local=False)
    return error


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    """A final 401/403 to a JSON-RPC request with an id, to be answered locally as a -32003 refusal
    (:func:`upstream_refusal`); :meth:`respond` journals it and builds the local response."""

    request: Any
    status: int
    inflight: InFlight
    call: Call
    error: AuthorizationError

    def respond(self, body: bytes) -> Any:
        """Journal the server's real answer (``response`` entry with its status and body hash) and a
        ``denial``; return the local JSON-RPC refusal (a response of the request's own library)."""
        run = self.inflight.run
        run.journal.response(
            self.inflight,
            status=self.status,
            out_hash=sha256_b64url(body),
            nbytes=len(body),
            completed=False,
        )
        run.journal.denial(self.call, self.inflight.action, self.error)
        assert self.call.id is not None
        # Built with the request's own library: its client asserts the response stream's type.
        return library_for(self.request).response(
            200,
            headers={"content-type": "application/json", "x-mcpclient-auth-refusal": self.error.code},
            content=refusal_body(self.call.id, self.error),
            request=self.request,
        )


def upstream_refusal(request: Any, response: Any) -> UpstreamAnswer | None:
    """Called by the transport wrapper on every response: is it a *final* 401/403 to a JSON-RPC request
    with an id, sent under the flow? Then the typed error (token invalidated) to answer it with;
    otherwise ``None`` (the response passes, and the flow may resend)."""
    attempt = request.extensions.get(EXTENSION_ATTEMPT)
    if not isinstance(attempt, Attempt) or response.status_code not in (401, 403):
        return None
    if attempt.token is None and not attempt.anonymous:
        return None
    action, challenge = verdict(attempt, response, request)
    call = attempt.call
    if action != FAIL or call is None or call.kind != "request" or call.id is None:
        return None
    inflight = request.extensions.get(EXTENSION_INFLIGHT)
    if not isinstance(inflight, InFlight):
        return None
    error = attempt.give_up(response.status_code, challenge)
    _telemetry.refused(request, call, error, local=False)  # the span ends with the refusal code
    return UpstreamAnswer(request, response.status_code, inflight, call, error)


async def read_capped(response: Any) -> bytes:
    """A small error body, read (at most 64 KiB) and the response closed (async clients)."""
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


def read_capped_sync(response: Any) -> bytes:
    """:func:`read_capped` for sync clients."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > _MAX_ERROR_BODY:
                break
            chunks.append(chunk)
    except Exception as exc:
        if not is_http_error(exc):
            raise
    finally:
        response.close()
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


def check_installable(client: Any, run: AgentRun | None) -> None:
    """``install()``: a run with a token source refuses a client that already authenticates
    (``auth=`` or an ``Authorization`` default header): two sources of ``Authorization``. Otherwise
    the client (async or sync) gets its library's ``RunAuth``, so installed clients re-obtain and step
    up like factory-built ones (with ``answer_locally`` the transport wrapper answers final failures)."""
    if run is None or not _uses_tokens(run):
        return
    headers = getattr(client, "headers", None) or {}
    if getattr(client, "auth", None) is not None or "authorization" in headers:
        raise ConfigurationError(
            "this client already sends Authorization (auth= or a default header) and the run has a "
            "token source: two sources of Authorization"
        )
    client.auth = library_for(client).auth()
