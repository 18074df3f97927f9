"""Pure verification of one incoming MCP request: signature, digest, mandate, ECT and policy.

This is the core the ASGI middleware (:mod:`mcpclient_auth.server.middleware`) wraps; it does no I/O,
so it can be used from any framework:

    verifier = McpRequestVerifier(trust, audience="https://hr.example/mcp")
    verified = verifier.verify(IncomingRequest("POST", url, headers, body))
    verified.principal, verified.mandate.capabilities, verified.ect.exec_act

The signature ``nonce`` and the ECT ``jti`` are stored in the replay store only after every other
check passed, in one claim (accepted only if all are new): :meth:`McpRequestVerifier.check_unclaimed`
runs the checks and returns a :class:`PendingRequest`, :meth:`~McpRequestVerifier.commit` (or ``await
acommit`` on an event loop, for a shared store) claims its ids. ``check``/``verify`` do both.

Each failure raises a typed :class:`~mcpclient_auth.errors.McpClientAuthError`; :func:`http_status_for`
maps it to 401 (missing or invalid credentials) or 403 (valid credentials, action not allowed).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._encoding import b64url_encode, sha256_b64url
from .._rfc9421 import HttpMessage, ParsedField
from ..act import Mandate
from ..constraints import CallBudget, ConstraintRegistry
from ..ect import ExecutionContextToken
from ..errors import (
    CapabilityNotGranted,
    ClaimsInvalid,
    ConstraintError,
    JsonRpcError,
    MandateDenied,
    McpClientAuthError,
    MethodNotAllowed,
    ReplayDetected,
    ServerLimitError,
    SessionError,
    SignatureMissing,
    SignaturePolicyError,
    SignatureReplay,
    TokenError,
)
from ..httpsig import RequestVerifier, VerifiedSignature
from ..jose import ACT_TYP
from ..jose import decode as decode_jws
from ..jsonrpc import Call, NotJsonRpc, parse
from ..keys import TrustStore
from ..policy import ActionPolicy, McpActionPolicy, ungranted_input_responses
from ..replay import NONCE, MemoryReplayStore, ReplayClaim, ReplayStore
from ._dagshape import RunShapes
from ._mandate_cache import MandateCache

__all__ = [
    "VERIFIED_METHODS",
    "IncomingHeaders",
    "IncomingRequest",
    "McpRequestVerifier",
    "PendingRequest",
    "Rejection",
    "VerifiedRequest",
    "http_status_for",
]


#: Fields that carry one value: sent on several lines they are refused (``field_repeated``).
_SINGLE_VALUE_FIELDS = frozenset(
    {
        "authorization",
        "dpop",
        "content-type",
        "mcp-method",
        "mcp-name",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "workload-identity-token",
    }
)

def _repeated_names(headers: Mapping[str, str]) -> frozenset[str]:
    """Lower-case names sent on several lines: :class:`IncomingHeaders` records them; an httpx-style
    ``Headers`` (``multi_items``) is counted; a plain mapping cannot hold repeats."""
    if isinstance(headers, IncomingHeaders):
        return headers.repeated
    multi = getattr(headers, "multi_items", None)
    if multi is None:
        return frozenset()
    seen: set[str] = set()
    repeated: set[str] = set()
    for name, _ in multi():
        lowered = str(name).lower()
        (repeated if lowered in seen else seen).add(lowered)
    return frozenset(repeated)


#: The methods of MCP's streamable HTTP transport. Only POST carries a JSON-RPC body (and so an ECT
#: and a capability check); any other method with a body would skip them, so it is refused (405).
VERIFIED_METHODS = frozenset({"GET", "HEAD", "POST", "DELETE"})


class IncomingHeaders(Mapping[str, str]):
    """Case-insensitive, read-only request headers; repeated fields are joined with ``", "``."""

    __slots__ = ("_fields", "repeated")

    def __init__(self, pairs: Iterable[tuple[str | bytes, str | bytes]] = ()) -> None:
        fields: dict[str, str] = {}
        repeated: set[str] = set()
        for raw_name, raw_value in pairs:
            name = (raw_name.decode("latin-1") if isinstance(raw_name, bytes) else raw_name).lower()
            value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
            if name in fields:
                fields[name] = f"{fields[name]}, {value}"
                repeated.add(name)
            else:
                fields[name] = value
        self._fields = fields
        #: Names that came on more than one field line (RFC 9421 signs them joined, see below).
        self.repeated: frozenset[str] = frozenset(repeated)

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Any:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        # Header *names* only: values carry tokens and signatures.
        return f"IncomingHeaders({sorted(self._fields)})"

    def http_message(self, method: str, url: str, body: bytes) -> HttpMessage:
        """The request as RFC 9421 reads it, from the fields collected here (no second pass)."""
        return HttpMessage.from_fields(method=method, url=url, fields=self._fields, body=body)


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """The request as the server received it (the shape :class:`RequestVerifier` reads)."""

    method: str
    url: str
    headers: IncomingHeaders
    content: bytes = b""
    #: ``Signature-Input`` as a pre-authentication screen parsed it already (the middleware's gate):
    #: the signature check uses that parse only if it is of this request's exact value.
    signature_input: ParsedField | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """What a verified request proved; tools read it to learn who asked and under which mandate."""

    signature: VerifiedSignature
    mandate: Mandate | None
    ect: ExecutionContextToken | None
    call: Call | None
    action: str | None
    #: The user on whose behalf the agent acts (mandate ``iss``; for a delegated mandate, its root's).
    principal: str | None
    #: The agent (mandate ``sub``).
    agent: str | None
    extra: dict[str, Any] = field(default_factory=dict)


# Policy failures: the caller proved who it is, but may not do this. Everything else is 401.
_FORBIDDEN: tuple[type[McpClientAuthError], ...] = (CapabilityNotGranted, MandateDenied, ConstraintError)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused request: the error, and what *was* proven before it (for the audit ledger).

    ``mandate`` is set only when the mandate verified (signature, time, audience) before the failure;
    an audit entry may then be filed under that mandate's run.
    """

    error: McpClientAuthError
    mandate: Mandate | None = None
    call: Call | None = None
    action: str | None = None

    @property
    def status(self) -> int:
        return http_status_for(self.error)


def http_status_for(error: McpClientAuthError) -> int:
    """401 for missing/invalid credentials, 403 for policy failures, 400 for malformed JSON-RPC, the
    limit's own status (503, 413, 408) when a server limit refused the request, 403/404 for a request
    on someone else's or an unknown MCP session."""
    if isinstance(error, ServerLimitError):
        return error.status
    if isinstance(error, SessionError):
        return error.http_status
    if isinstance(error, MethodNotAllowed):
        return 405
    if isinstance(error, JsonRpcError):
        return 400
    if isinstance(error, _FORBIDDEN):
        return 403
    return 401


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A request that passed every check but whose replay ids are not stored yet.

    Not a :class:`VerifiedRequest` on purpose: nothing may act on it before
    :meth:`McpRequestVerifier.commit` / :meth:`~McpRequestVerifier.acommit` stored its ids.
    """

    request: VerifiedRequest
    claims: tuple[ReplayClaim, ...]


class McpRequestVerifier:
    """Verifies requests made through :class:`~mcpclient_auth.AgentRun` (profile ``mcp``).

    Checks, in order: RFC 9421 signature (and with it Content-Digest, max age, nonce replay), the
    mandate (signature, expiry, audience = this server), the ECT (signature, audience, expiry, jti
    replay, ``inp_hash`` = body hash, ``iss`` = mandate ``sub``, ``wid`` = mandate ``jti``, signed by
    the agent key the mandate binds), and the policy (``exec_act`` matches the body and is in the
    mandate's ``cap`` unless it is plumbing, :mod:`mcpclient_auth.policy`), then the capability's
    constraints (:mod:`mcpclient_auth.constraints`: argument values, ``max_calls`` per run). A mandate
    with a constraint no evaluator of ``constraints`` understands is refused (403 ``constraint_unknown``).

    ``trust`` must have roles (:class:`~mcpclient_auth.errors.TrustRolesMissing` at construction
    otherwise): a mandate verifies only when signed by an issuer registered for its ``iss``, or as a
    valid delegation carried in ``del.parent``; the request and ECT must be signed by a registered agent
    key. A mandate must bind the signing key (``cnf.jkt``, as :meth:`Mandate.issue` does for an agent
    :class:`Identity`); ``require_key_binding=False`` accepts name-only mandates from peers that cannot
    bind keys.

    Replay: the nonce and the ECT ``jti`` go to ``replay_store`` after every other check passed. The
    default is a :class:`~mcpclient_auth.replay.MemoryReplayStore` of ``replay_cache_size`` ids
    (``replay_entries_per_key`` per signing key), which protects one process; with several worker
    processes pass a shared :class:`~mcpclient_auth.replay_redis.RedisReplayStore`.

    Constraints: argument values are checked with every other check, and ``max_calls`` is counted once
    the replay ids were claimed (a replayed request never uses up a run's budget). The counts live in
    this object — per process, like the memory replay store, and reset when the process restarts — for
    at most ``budget_runs`` live mandates (``budget_runs_per_root`` per chain root). A delegated call is
    charged to every mandate of its chain whose capability has ``max_calls``.
    """

    def __init__(
        self,
        trust: TrustStore,
        *,
        audience: str,
        max_age: int = 60,
        skew: int = 60,
        policy: ActionPolicy | None = None,
        require_mandate: bool = True,
        require_ect: bool = True,
        require_key_binding: bool = True,
        ect_header: str = "Execution-Context",
        mandate_header: str = "ACT-Mandate",
        replay_cache_size: int = 200_000,
        replay_entries_per_key: int | None = None,
        replay_store: ReplayStore | None = None,
        constraints: ConstraintRegistry | None = None,
        budget_runs: int = 100_000,
        budget_runs_per_root: int | None = None,
        multi_server_runs: bool = False,
        mandate_cache_size: int = 1024,
    ) -> None:
        trust.require_roles()  # without roles any trusted key could mint any user's mandate
        self.trust = trust
        self.audience = audience
        self.skew = skew
        self.policy: ActionPolicy = policy or McpActionPolicy()
        self.require_mandate = require_mandate
        self.require_ect = require_ect
        self.require_key_binding = require_key_binding
        self.ect_header = ect_header
        self.mandate_header = mandate_header
        self.replay_store: ReplayStore = (
            replay_store
            if replay_store is not None
            else MemoryReplayStore(max_entries=replay_cache_size, max_entries_per_key=replay_entries_per_key)
        )
        self._signatures = RequestVerifier(
            trust,
            profile="mcp",
            max_age=max_age,
            skew=skew,
            nonce_cache=self.replay_store,
            audience=audience,
            ect_header=ect_header,
        )
        #: each run's mandate is verified once per process (bounded; expiry, trust and audience
        #: changes respected: server/_mandate_cache.py)
        self.mandates = MandateCache(mandate_cache_size)
        # max_calls counts per mandate jti, delegations charged to every budgeted ancestor, in this
        # process only (reset on restart): see CallBudget.
        self._budget = CallBudget(
            max_runs=budget_runs, max_runs_per_root=budget_runs_per_root, skew=skew, registry=constraints
        )
        self.constraints = self._budget.registry
        #: ``wid`` required; ``pred`` only names nodes accepted here for the run (see ._dagshape)
        self.shapes = RunShapes(multi_server_runs=multi_server_runs)

    def verify(self, request: IncomingRequest, *, now: float | None = None) -> VerifiedRequest:
        """The :class:`VerifiedRequest`, or raise the typed error of the first check that failed."""
        outcome = self.check(request, now=now)
        if isinstance(outcome, Rejection):
            raise outcome.error
        return outcome

    def check(self, request: IncomingRequest, *, now: float | None = None) -> VerifiedRequest | Rejection:
        """Like :meth:`verify`, but a failure is returned as a :class:`Rejection` (never raised).

        Claims the replay ids synchronously (a shared store blocks on its round trip): on an event
        loop use :meth:`check_unclaimed` and ``await`` :meth:`acommit` instead."""
        now = time.time() if now is None else now
        pending = self.check_unclaimed(request, now=now)
        if isinstance(pending, Rejection):
            return pending
        return self.commit(pending, now=now)

    def commit(self, pending: PendingRequest, *, now: float | None = None) -> VerifiedRequest | Rejection:
        """Store ``pending``'s nonce and ECT id (accepted only if both are new); a replay or a store
        failure is a :class:`Rejection` (401 ``nonce_replayed`` / ``replay_detected``, 503 for the store)."""
        try:
            self.replay_store.claim(pending.claims, now=now)
        except McpClientAuthError as exc:
            return self._claim_failed(pending.request, exc)
        charged = self._charge(pending.request, now)
        return charged if isinstance(charged, Rejection) else self._accepted(charged)

    async def acommit(
        self, pending: PendingRequest, *, now: float | None = None
    ) -> VerifiedRequest | Rejection:
        """:meth:`commit` without blocking the event loop (the store's ``aclaim``)."""
        try:
            await self.replay_store.aclaim(pending.claims, now=now)
        except McpClientAuthError as exc:
            return self._claim_failed(pending.request, exc)
        charged = self._charge(pending.request, now)
        return charged if isinstance(charged, Rejection) else self._accepted(charged)

    def _charge(self, verified: VerifiedRequest, now: float | None) -> VerifiedRequest | Rejection:
        """Count the call against its capability's ``max_calls`` (evaluated and counted atomically)."""
        mandate, call, action = verified.mandate, verified.call, verified.action
        if call is None or action is None or mandate is None:
            return verified
        try:
            # Every budgeted link of the chain: a self-delegated sub-mandate brings no fresh budget.
            self._budget.charge_chain(mandate.chain, action, call, now=now)
        except McpClientAuthError as exc:
            return Rejection(exc, mandate, call, action)
        return verified

    def _refuse_repeated_fields(self, headers: Mapping[str, str]) -> None:
        """Refuse a single-value field sent on several lines.

        RFC 9421 signs repeated lines joined by ``", "``, so an intermediary can split a signed
        ``Mcp-Param-Region: eu-west, us-east`` into two lines and the signature still holds, while a
        framework that reads one line sees only ``eu-west``. For the fields this verifier relies on
        or requires signed, one line is the only shape our clients send."""
        repeated = _repeated_names(headers)
        if not repeated:
            return
        single = _SINGLE_VALUE_FIELDS | {self.mandate_header.lower(), self.ect_header.lower()}
        for name in repeated:
            if name in single or name.startswith("mcp-param-"):
                raise SignaturePolicyError(
                    f"the {name} field came on several lines; it must be one", code="field_repeated"
                )

    def check_unclaimed(
        self, request: IncomingRequest, *, now: float | None = None
    ) -> PendingRequest | Rejection:
        """Every check except the replay store; on success the ids still have to be committed."""
        now = time.time() if now is None else now
        body = request.content
        mandate: Mandate | None = None
        call: Call | None = None
        action: str | None = None
        try:
            if request.method.upper() not in VERIFIED_METHODS:
                raise MethodNotAllowed(f"{request.method.upper()} is not served on the MCP endpoint")
            self._refuse_repeated_fields(request.headers)
            # The headers were collected in one pass (IncomingHeaders): the signature reads them as is.
            message = (
                request.headers.http_message(request.method, request.url, body)
                if isinstance(request.headers, IncomingHeaders)
                else HttpMessage.of(request, body=body)
            )
            signature = self._signatures.verify(
                message, now=now, claim_nonce=False, parsed_input=getattr(request, "signature_input", None)
            )
            mandate = self._mandate(request.headers, now)
            if mandate is not None:
                self._check_binding(mandate, signature)
            if request.method.upper() == "POST":
                parsed = parse(body, content_type=request.headers.get("content-type"))
                if isinstance(parsed, NotJsonRpc):
                    # Fail closed: a POST that is no JSON-RPC message would skip the ECT and cap checks.
                    raise JsonRpcError("a POST to the MCP endpoint must carry one JSON-RPC message")
                call = parsed
                action = self.policy.action_for(call)
            ect = self._ect(request.headers, body, mandate, signature, action, now)
            needs_cap = (
                call is not None and action is not None and self.policy.requires_capability(call, action)
            )
            if needs_cap and (mandate is None or not mandate.allows(str(action))):
                raise CapabilityNotGranted(f"the mandate does not grant {action!r}", action=action)
            if call is not None:
                # 2026-07-28: sampling / elicitation / roots answers ride inside the retried request.
                for answer_action in ungranted_input_responses(self.policy, call, mandate):
                    raise CapabilityNotGranted(
                        f"the request carries an answer the mandate does not grant ({answer_action!r})",
                        action=answer_action,
                    )
            if call is not None and action is not None and mandate is not None:
                # Constraints of a granted action apply whatever the policy; nothing is counted yet
                # (see _charge: after the replay ids are claimed).
                self._budget.check_chain(mandate.chain, action, call)
        except McpClientAuthError as exc:
            return Rejection(exc, mandate, call, action)
        claims: list[ReplayClaim] = []
        if signature.replay_claim is not None:
            claims.append(signature.replay_claim)
        if ect is not None:
            claims.append(ect.replay_claim(skew=self.skew))
        verified = VerifiedRequest(
            signature=signature,
            mandate=mandate,
            ect=ect,
            call=call,
            action=action,
            principal=mandate.principal if mandate else None,
            agent=mandate.sub if mandate else None,
        )
        return PendingRequest(verified, tuple(claims))

    def _accepted(self, verified: VerifiedRequest) -> VerifiedRequest:
        """The request is accepted (ids claimed): its ECT may now be named as a predecessor."""
        if verified.mandate is not None and verified.ect is not None:
            self.shapes.accept(verified.mandate, verified.ect)
        return verified

    @staticmethod
    def _claim_failed(verified: VerifiedRequest, error: McpClientAuthError) -> Rejection:
        if isinstance(error, ReplayDetected) and error.details.get("kind") == NONCE:
            error = SignatureReplay("this signature nonce was already used", kid=verified.signature.keyid)
        return Rejection(error, verified.mandate, verified.call, verified.action)

    def _check_binding(self, mandate: Mandate, signature: VerifiedSignature) -> None:
        # Only agent keys act on mandates; an issuer key signing calls would skip the agent entirely.
        if not self.trust.is_agent(signature.keyid):
            raise SignaturePolicyError(
                "the request was not signed by a registered agent key", code="signer_not_agent"
            )
        # Without a key binding any trusted key could act on the mandate (the ECT's ``iss`` is only
        # a name), so an unbound mandate is refused unless explicitly allowed.
        if mandate.agent_kid is None:
            if self.require_key_binding:
                raise SignaturePolicyError(
                    "the mandate binds no agent key (cnf.jkt); refused", code="mandate_unbound"
                )
            named = self.trust.agent_named(mandate.sub)
            if named is None or named.thumbprint != self.trust.get(signature.keyid).thumbprint:
                # Name-only mandates: the one agent key carrying that name (an ambiguous name binds nobody).
                raise SignaturePolicyError(
                    "the request was not signed by the agent the mandate names (exactly one agent key "
                    "must carry that name)"
                )
            return
        # cnf.jkt is a thumbprint, the signature names a kid: compare the key's thumbprint, never the kid.
        if self.trust.get(signature.keyid).thumbprint != mandate.agent_kid:
            raise SignaturePolicyError("the request was not signed by the agent key the mandate binds")

    # --- pieces -------------------------------------------------------------------------------------

    def _mandate(self, headers: Mapping[str, str], now: float) -> Mandate | None:
        token = headers.get(self.mandate_header)
        if token is None:
            # Peer-compatibility mode: the mandate travels as the bearer token.
            authorization = headers.get("authorization", "")
            scheme, _, credential = authorization.partition(" ")
            if scheme.lower() == "bearer" and _looks_like_act(credential.strip()):
                token = credential.strip()
        if token is None:
            if self.require_mandate:
                raise SignatureMissing(f"no {self.mandate_header} header", code="mandate_missing")
            return None
        trust = self.trust
        cached = self.mandates.get(token, trust, self.audience, now)
        if cached is not None:
            return cached
        generation = trust.generation  # before verifying: a change meanwhile makes the entry stale
        mandate = Mandate.verify(token, trust, audience=self.audience, now=now, skew=self.skew)
        self.constraints.check_known(mandate.cap)  # unknown constraint: the mandate is unusable (403)
        self.mandates.put(token, mandate, trust, generation, self.audience, self.skew)
        return mandate

    def _ect(
        self,
        headers: Mapping[str, str],
        body: bytes,
        mandate: Mandate | None,
        signature: VerifiedSignature,
        action: str | None,
        now: float,
    ) -> ExecutionContextToken | None:
        token = headers.get(self.ect_header)
        if token is None:
            # GET (SSE) and DELETE carry no ECT: they are not JSON-RPC calls.
            if self.require_ect and action is not None:
                raise SignatureMissing(f"no {self.ect_header} header on a JSON-RPC call", code="ect_missing")
            return None
        # No replay store here: the jti is claimed with the nonce once every check passed.
        ect = ExecutionContextToken.verify(token, self.trust, audience=self.audience, now=now, skew=self.skew)
        # The signature check hashed this same body for Content-Digest (check_unclaimed hands both
        # the one ``body``): reuse that SHA-256 rather than hash the body a second time.
        digest = signature.body_sha256
        if ect.inp_hash != (sha256_b64url(body) if digest is None else b64url_encode(digest)):
            raise ClaimsInvalid(
                "the ECT's inp_hash does not match the request body", code="inp_hash_mismatch"
            )
        if action is not None and ect.exec_act != action:
            raise ClaimsInvalid(
                "the ECT's exec_act does not match the JSON-RPC call", code="exec_act_mismatch"
            )
        if ect.header.get("kid") != signature.keyid:
            raise ClaimsInvalid(
                "the ECT and the HTTP signature were made by different keys", code="key_mismatch"
            )
        if mandate is not None:
            if ect.iss != mandate.sub:
                raise ClaimsInvalid("the ECT's issuer is not the mandate's agent", code="ect_issuer_mismatch")
            self.shapes.check(mandate, ect)
        return ect


def _looks_like_act(token: str) -> bool:
    try:
        return decode_jws(token).header.get("typ") == ACT_TYP
    except (TokenError, ValueError):
        return False
