"""``AgentRun``: one mandate -> one run -> one phase-2 record.

A run owns everything its calls share: the agent key, the mandate, the endpoint scope, the action
policy, the DAG frontier, the request signer and the ledger writer. Hand its factory to an MCP
client and every JSON-RPC call the agent makes is authorised, chained, signed and recorded:

    run = AgentRun(agent=agent, issuer=user, purpose="Answer HR questions",
                   capabilities=["mcp.get_office_locations"],
                   endpoint="http://127.0.0.1:8000/mcp", ledger="ledger.jsonl",
                   principal=Principal(id="alice"))
    async with run:
        async with streamablehttp_client(run.endpoints[0],
                                         httpx_client_factory=run.httpx_client_factory()) as (r, w, _):
            async with ClientSession(r, w) as session:
                await session.initialize()
                await session.call_tool("get_office_locations", {})
    # leaving `async with run` wrote the phase-2 record and the seal (status "failed" on an error)

    run.install(existing_client)        # an httpx.AsyncClient / httpx.Client you already have
    await run.close(output="final answer", status="completed")   # explicit close, idempotent

Creating the run writes its ``mandate`` ledger entry. The hooks (:mod:`.hooks`) call into the run's
private per-call methods below; they are synchronous and do no network I/O, except
:meth:`AgentRun._authorization`, the one place where a user access token is fetched. The 401 / 403
handling around it (re-obtain once, step up once) is :mod:`.authz.retry`'s ``RunAuth``, which
factory-built and installed async clients carry.

Per-user isolation: a run is bound to its :attr:`~AgentRun.principal`. Declare whom a piece of work
is for with :func:`acting_for`, and a run bound to someone else refuses its requests
(``PrincipalMismatch``). Service credentials for tool discovery (``discovery_token_source``) are used
only in sessions opened inside ``with run.discovery():``, never in a session that makes tool calls:

    run = AgentRun(..., principal=Principal(id="alice", subject_token=sso_token),
                   token_source=TokenExchange(...), discovery_token_source=ClientCredentials(...))
    with run.discovery():
        tools = await client.get_tools()        # every request: the service token; listings only
    with acting_for("alice"), run.activate():
        ...                                     # tool-call sessions: alice's exchanged token
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from ._encoding import compact_json, sha256_b64url
from .act import ExecutionRecord, Mandate
from .constraints import CallBudget, check_known
from .dag import Frontier
from .ect import ExecutionContextToken
from .errors import (
    ConfigurationError,
    InvalidTokenResponse,
    JsonRpcError,
    McpClientAuthError,
    MissingSubjectToken,
    NoTokenForPrincipal,
    PrincipalMismatch,
    RunClosed,
    TokenExchangeRejected,
    TokenExchangeUnavailable,
    TokenExpired,
)
from .httpsig import RequestSigner
from .jsonrpc import Call, NotJsonRpc, parse
from .keys import Identity, TrustStore
from .ledger.writer import Ledger
from .policy import ActionPolicy, McpActionPolicy, check_call
from .principal import Principal
from .scope import Endpoint, EndpointScope, canonical_url

if TYPE_CHECKING:
    import httpx

    from .authz.base import AccessToken, TokenSource
    from .factory import McpHttpClientFactory
    from .ledger.format import LedgerEntry

__all__ = [
    "DISCOVERY_METHODS",
    "MANDATE_HEADER",
    "MANDATE_HEADER_MODES",
    "AgentRun",
    "RecordStatus",
    "acting_for",
    "current_principal",
]

MANDATE_HEADER = "ACT-Mandate"
#: Where the mandate travels: its own header (default), or ``Authorization: Bearer <ACT>`` for peers
#: that expect the authors' proof-of-concept carriage (only without a user token source).
MANDATE_HEADER_MODES = ("act-mandate", "authorization")
RecordStatus = Literal["completed", "failed", "cancelled"]
_STATUSES = frozenset({"completed", "failed", "cancelled"})
#: Seconds a mandate must still be valid for a call to be sent (a server checks ``exp`` on arrival).
_EXPIRY_MARGIN = 5
#: Failures to obtain the user's token: recorded as ``error`` entries, not ``denial`` (see ``_deny``).
_TOKEN_UNAVAILABLE = (
    MissingSubjectToken,
    TokenExchangeRejected,
    TokenExchangeUnavailable,
    InvalidTokenResponse,
    NoTokenForPrincipal,
)
#: What a discovery session (service credentials, :meth:`AgentRun.discovery`) may send: session set-up,
#: listings and notifications. Tool calls, reads and prompts act for the user: never with the service token.
DISCOVERY_METHODS = frozenset(
    {"initialize", "ping", "tools/list", "resources/list", "resources/templates/list", "prompts/list"}
)

_ACTING_FOR: ContextVar[str | None] = ContextVar("mcpclient_auth_acting_for", default=None)
_DISCOVERY: ContextVar[AgentRun | None] = ContextVar("mcpclient_auth_discovery", default=None)


@contextmanager
def acting_for(principal: Principal | str) -> Iterator[str]:
    """Declare whom the calls made in this context are for; a run bound to anyone else refuses them.

    with acting_for(request_user):          # e.g. from your web framework's auth
        with use_run(run_for[request_user.id]):
            ...                             # a mix-up of runs is refused (PrincipalMismatch)

    Like :func:`~mcpclient_auth.hooks.use_run`, in mcp 1.x it must be set when a session is
    *opened* (its transport tasks copy the context then): it then applies to every request of it.
    """
    principal_id = principal.id if isinstance(principal, Principal) else principal
    if not isinstance(principal_id, str) or not principal_id:
        raise ConfigurationError("acting_for() takes a Principal or a non-empty principal id")
    token = _ACTING_FOR.set(principal_id)
    try:
        yield principal_id
    finally:
        _ACTING_FOR.reset(token)


def current_principal() -> str | None:
    """The principal id declared with :func:`acting_for` in this context, if any."""
    return _ACTING_FOR.get()


@dataclass(slots=True, eq=False)
class InFlight:
    """One signed request of a run, from its request hook to the end of its response."""

    run: AgentRun
    call: Call | None
    action: str | None
    jti: str | None
    pred: list[str]
    url: str
    token: str | None = field(default=None, repr=False)
    started: float = field(default_factory=time.monotonic)
    finished: bool = False

    @property
    def is_tool_call(self) -> bool:
        return self.call is not None and self.call.is_tool_call


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the request hook puts on the wire: header values to overwrite, and the in-flight call."""

    # may hold the user's access token: never in repr()
    headers: dict[str, str] = field(repr=False)
    inflight: InFlight | None


def _as_bytes(output: Any) -> bytes:
    if output is None:
        return b""
    if isinstance(output, bytes):
        return output
    if isinstance(output, str):
        return output.encode("utf-8")
    return compact_json(output)


class AgentRun:
    """One agent run under one mandate. See the module docstring.

    Keyword arguments:

    - ``agent``: the agent's :class:`~mcpclient_auth.keys.Identity` (signs ECTs, requests, the record).
    - ``issuer`` *or* ``mandate``: mint the mandate now, signed by ``issuer`` (the user's key, never
      the agent's own), from ``purpose`` and ``capabilities``; or use a compact mandate issued
      elsewhere, or delegated to this agent (its ``sub`` / ``cnf.jkt`` must name ``agent``).
    - ``trust``: a :class:`~mcpclient_auth.keys.TrustStore` with roles; when given, the mandate is
      verified at creation as a server would (issuer registered for ``iss``, or a valid delegation
      chain; ``agent`` a registered agent key), so a forged mandate fails here, not at the server.
    - ``endpoint``: the MCP endpoint URL(s) this run signs for, normalised once as httpx sends them
      (:func:`~mcpclient_auth.scope.canonical_url`; :class:`~mcpclient_auth.errors.EndpointInvalid`
      if that is impossible). Other origins are untouched; other paths on its origin are refused.
    - ``ledger``: a path or a :class:`~mcpclient_auth.ledger.writer.Ledger` (``durability`` applies
      to a path only).
    - ``principal``: the user the run acts for (default: ``Principal(id=<mandate iss>)``; for a
      delegated mandate, its root's ``iss``).
    - ``token_source``: a :class:`~mcpclient_auth.authz.base.TokenSource` for the user's access token
      (sent as ``Authorization: Bearer``; the mandate then travels in ``ACT-Mandate``); ``scopes``
      are asked of it. Factory-built clients re-obtain once on 401 ``invalid_token`` and step up once
      on 403 ``insufficient_scope`` (:mod:`.authz.retry`).
    - ``discovery_token_source``: a service source (e.g. :class:`~mcpclient_auth.authz.ClientCredentials`)
      for *discovery sessions* only: sessions opened inside ``with run.discovery():`` carry the service
      token on every request and may only list (:data:`DISCOVERY_METHODS`); every other session carries
      the user's token. The two never mix within one MCP session.
    - ``discover_resource_metadata``: on a 401 naming RFC 9728 ``resource_metadata``, fetch it
      (anonymously) and ask the token source for its ``resource`` as the audience.
    - ``allowed_scopes``: the only scopes a 403 step-up may ask the identity provider for (default:
      ``scopes``, the token source's own ``scopes`` and the ``scopes_supported`` of RFC 9728 metadata
      the run fetched). A challenge demanding anything else is refused
      (:class:`~mcpclient_auth.errors.ScopeNotAllowed`, a ``denial`` entry), never requested.
    - ``audience``: the MCP server id(s) for the mandate ``aud`` / ECT ``aud`` (default: the
      endpoint URLs) and, when a single string, the signature's ``wimse-aud``.
    - ``ect_header`` (default ``Execution-Context``), ``mandate_header`` (``"act-mandate"`` |
      ``"authorization"``), ``policy`` (default :class:`~mcpclient_auth.policy.McpActionPolicy`: every
      method but protocol plumbing needs a capability; ``McpActionPolicy(permissive=True)`` is the
      explicit opt-out), ``mandate_ttl``, ``ect_ttl``.

    A mandate whose capabilities carry a constraint no evaluator understands is refused here
    (:class:`~mcpclient_auth.errors.ConstraintUnknown`); known constraints (:mod:`.constraints`) are
    checked before each call is sent.
    """

    def __init__(
        self,
        *,
        agent: Identity,
        endpoint: str | Sequence[str],
        ledger: str | os.PathLike[str] | Ledger,
        issuer: Identity | None = None,
        mandate: str | Mandate | None = None,
        purpose: str | None = None,
        capabilities: Sequence[str | Mapping[str, Any]] | None = None,
        principal: Principal | None = None,
        token_source: TokenSource | None = None,
        scopes: Sequence[str] | None = None,
        discovery_token_source: TokenSource | None = None,
        discover_resource_metadata: bool = False,
        allowed_scopes: Sequence[str] | None = None,
        audience: str | Sequence[str] | None = None,
        ect_header: str = "Execution-Context",
        mandate_header: str = "act-mandate",
        durability: str | None = None,
        policy: ActionPolicy | None = None,
        mandate_ttl: int = 900,
        ect_ttl: int = 600,
        trust: TrustStore | None = None,
    ) -> None:
        if not isinstance(agent, Identity):
            raise ConfigurationError("agent must be an Identity (the agent's private key)")
        if issuer is not None and issuer.public.thumbprint == agent.public.thumbprint:
            raise ConfigurationError(
                "issuer= is the agent's own key: an agent never signs its own top-level mandate "
                "(use the user's key, or a mandate the user or a delegating agent issued)"
            )
        if mandate_header not in MANDATE_HEADER_MODES:
            raise ConfigurationError(f"mandate_header must be one of {', '.join(MANDATE_HEADER_MODES)}")
        uses_tokens = token_source is not None or discovery_token_source is not None
        if mandate_header == "authorization" and uses_tokens:
            raise ConfigurationError(
                "mandate_header='authorization' puts the mandate in Authorization, which the user token "
                "from token_source needs: use the default 'act-mandate' with a token source"
            )
        self.agent = agent
        self.scope = EndpointScope(endpoint)
        self.policy: ActionPolicy = policy if policy is not None else McpActionPolicy()
        self.token_source = token_source
        self.scopes = list(scopes) if scopes is not None else None
        self.discovery_token_source = discovery_token_source
        self.discover_resource_metadata = bool(discover_resource_metadata)
        # per (endpoint url, source): scopes after a successful step-up; audiences found via RFC 9728
        self._stepped_scopes: dict[tuple[str, int], tuple[str, ...]] = {}
        self._audiences_found: dict[str, str] = {}
        self.allowed_scopes = self._check_allowed_scopes(allowed_scopes, token_source, discovery_token_source)
        self._advertised_scopes: dict[str, frozenset[str]] = {}
        self.ect_header = ect_header
        self.mandate_header = mandate_header
        self.ect_ttl = ect_ttl
        configured = [audience] if isinstance(audience, str) else list(audience or [])
        self.mandate = self._resolve_mandate(issuer, mandate, purpose, capabilities, configured, mandate_ttl)
        if trust is not None:
            self.mandate = self._verified(self.mandate, trust)
        check_known(self.mandate.cap)  # a constraint nobody enforces makes the mandate unusable
        self._budget = CallBudget(max_runs=len(self.mandate.chain))  # one slot per budgeted link
        self.audiences: list[str] = configured or list(self.mandate.aud)
        self.principal = principal if principal is not None else Principal(id=self.mandate.principal)
        if not isinstance(self.principal, Principal):
            raise ConfigurationError("principal must be a Principal")
        if self.principal.id != self.mandate.principal:
            # The user token fetched and the ledger's attribution must be the mandate's principal's.
            raise PrincipalMismatch(
                f"the run's principal {self.principal.id!r} is not the mandate's principal "
                f"{self.mandate.principal!r} (its chain's root iss)",
                principal=self.principal.id,
            )
        self.frontier = Frontier(self.mandate.jti)
        self.signer = RequestSigner(
            agent, "mcp", ect_header=ect_header, audience=audience if isinstance(audience, str) else None
        )
        # wimse-aud = the endpoint's canonical URL (the tokens' aud), also for a /mcp/ hop or the
        # legacy /messages/ path; a configured audience string keeps the one signer above.
        self._signers = {
            e.url: self.signer
            if isinstance(audience, str)
            else RequestSigner(agent, "mcp", ect_header=ect_header, audience=e.url)
            for e in self.scope.endpoints
        }
        self._owns_ledger = not isinstance(ledger, Ledger)
        if isinstance(ledger, Ledger):
            if durability is not None:
                raise ConfigurationError("durability applies to a ledger path; the Ledger given has its own")
            self.ledger = ledger
        else:
            self.ledger = Ledger(ledger, durability=durability or "flush")
        self._lock = threading.Lock()
        self._inflight: dict[int, InFlight] = {}
        self._last_action: str | None = None
        self._closed = False
        self.record: ExecutionRecord | None = None
        self._mandate_header_value = self.mandate.token
        self._static_headers = self._build_static_headers()
        self.ledger.append(
            run=self.id,
            kind="mandate",
            jti=self.mandate.jti,
            token=self.mandate.token,
            meta={"principal": self.principal.id, "endpoints": self.scope.urls, "agent": agent.kid},
        )

    # --- construction -----------------------------------------------------------------------------

    def _resolve_mandate(
        self,
        issuer: Identity | None,
        mandate: str | Mandate | None,
        purpose: str | None,
        capabilities: Sequence[str | Mapping[str, Any]] | None,
        audience: list[str],
        ttl: int,
    ) -> Mandate:
        if (issuer is None) == (mandate is None):
            raise ConfigurationError("give exactly one of issuer= (mint a mandate) or mandate= (use one)")
        if issuer is not None:
            if not purpose:
                raise ConfigurationError("purpose= is required to mint a mandate")
            if capabilities is None:
                raise ConfigurationError("capabilities= is required to mint a mandate (may be empty)")
            return Mandate.issue(
                issuer,
                agent=self.agent,
                audience=audience or self.scope.urls,
                purpose=purpose,
                capabilities=list(capabilities),
                ttl=ttl,
            )
        resolved = mandate if isinstance(mandate, Mandate) else Mandate.decode(str(mandate))
        if resolved.agent_kid is not None:
            if not resolved.binds(self.agent):
                raise ConfigurationError("the mandate binds another agent key (cnf.jkt) than agent=")
        elif resolved.sub != self.agent.name:
            raise ConfigurationError("the mandate's subject (sub) is not the agent's name")
        if purpose is not None and purpose != resolved.purpose:
            raise ConfigurationError("purpose= differs from the mandate's task.purpose")
        if capabilities is not None:
            raise ConfigurationError("capabilities come from the mandate; do not pass capabilities=")
        for endpoint in self.scope.endpoints:
            spelled = [a for a in resolved.aud if a != endpoint.url and _same_endpoint(a, endpoint.url)]
            if spelled and endpoint.url not in resolved.aud:
                raise ConfigurationError(
                    f"the mandate's aud spells endpoint {endpoint.url!r} as {spelled[0]!r}; verifiers "
                    "compare aud as exact strings: issue the mandate for the canonical URL"
                )
        missing = [a for a in audience if a not in resolved.aud]
        if missing:
            raise ConfigurationError(f"audience {missing[0]!r} is not among the mandate's aud")
        if resolved.exp <= time.time():
            raise TokenExpired("the mandate has expired")
        return resolved

    def _check_allowed_scopes(
        self,
        allowed: Sequence[str] | None,
        token_source: TokenSource | None,
        discovery_source: TokenSource | None,
    ) -> frozenset[str] | None:
        if allowed is None:
            return None
        if isinstance(allowed, str) or not all(isinstance(s, str) and s and " " not in s for s in allowed):
            raise ConfigurationError("allowed_scopes must be a list of scope strings (no spaces)")
        result = frozenset(allowed)
        configured = [*(self.scopes or ())]
        for source in (token_source, discovery_source):
            configured.extend(getattr(source, "scopes", None) or ())
        outside = sorted(set(configured) - result)
        if outside:
            raise ConfigurationError(f"configured scopes {outside} are not in allowed_scopes")
        return result

    def _scope_allowlist(self, endpoint: Endpoint, source: TokenSource | None) -> frozenset[str]:
        """The scopes a step-up at ``endpoint`` may ask ``source`` for (see ``allowed_scopes``)."""
        if self.allowed_scopes is not None:
            return self.allowed_scopes
        allowed = set(self.scopes or ())
        allowed.update(getattr(source, "scopes", None) or ())
        allowed.update(self._advertised_scopes.get(endpoint.url, ()))
        return frozenset(allowed)

    def _signer_for(self, endpoint: Endpoint) -> RequestSigner:
        return self._signers.get(endpoint.url, self.signer)

    def _verified(self, mandate: Mandate, trust: TrustStore) -> Mandate:
        """The mandate as a server will judge it: issuer role or delegation chain, time, agent role."""
        if not trust.is_agent(self.agent.kid):
            trust.require_roles()
            raise ConfigurationError("agent= is not a registered agent key of trust=")
        return Mandate.verify(mandate.token, trust)

    def _build_static_headers(self) -> dict[str, str]:
        if self.mandate_header == "authorization":
            return {"Authorization": f"Bearer {self._mandate_header_value}"}
        return {MANDATE_HEADER: self._mandate_header_value}

    # --- public surface ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The run id: the mandate's ``jti`` (also every ECT's ``wid``)."""
        return self.mandate.jti

    @property
    def endpoints(self) -> list[str]:
        return self.scope.urls

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"AgentRun(id={self.id!r}, principal={self.principal.id!r}, "
            f"endpoints={self.endpoints!r}, {state})"
        )

    def httpx_client_factory(self, **options: Any) -> McpHttpClientFactory:
        """A factory with mcp's ``McpHttpClientFactory`` shape, for ``streamablehttp_client`` and
        ``MultiServerMCPClient`` connections: ``(headers=None, timeout=None, auth=None, **kwargs)``.

        Its clients answer refusals locally as JSON-RPC errors (see :mod:`.factory`)."""
        from .factory import httpx_client_factory

        return httpx_client_factory(self, **options)

    def install(self, client: httpx.AsyncClient | httpx.Client, *, answer_locally: bool = False) -> None:
        """Add this run's hooks to a client you already have (appended, existing hooks kept)."""
        from .factory import install

        install(client, self, answer_locally=answer_locally)

    def activate(self) -> Any:
        """``with run.activate():`` — select this run for calls made through multi-run clients."""
        from .hooks import use_run

        return use_run(self)

    @contextmanager
    def discovery(self) -> Iterator[AgentRun]:
        """``with run.discovery():`` — sessions opened here are *discovery sessions*: every request
        carries the service token from ``discovery_token_source`` and only listings are allowed
        (:data:`DISCOVERY_METHODS`; a tool call is refused with ``PrincipalMismatch``). Also selects
        this run (:meth:`activate`). Sessions opened outside use the user's token throughout.

            with run.discovery():
                tools = await client.get_tools()        # service token: initialize, tools/list
            await tools[0].ainvoke({...})               # a new session: the user's token
        """
        if self.discovery_token_source is None:
            raise ConfigurationError("run.discovery() needs AgentRun(discovery_token_source=...)")
        from .hooks import use_run

        token = _DISCOVERY.set(self)
        try:
            with use_run(self):
                yield self
        finally:
            _DISCOVERY.reset(token)

    async def close(self, output: Any = None, status: RecordStatus = "completed") -> ExecutionRecord:
        """Write the phase-2 record (``out_hash`` = SHA-256 of ``output``) and seal the run. Idempotent."""
        return self.close_sync(output=output, status=status)

    def close_sync(self, output: Any = None, status: RecordStatus = "completed") -> ExecutionRecord:
        """:meth:`close` for synchronous code (the work is local file I/O only)."""
        if status not in _STATUSES:
            raise ConfigurationError(f"status must be one of {sorted(_STATUSES)}")
        with self._lock:
            if self.record is not None:
                return self.record
            self._closed = True
            leftovers = [item for item in self._inflight.values() if not item.finished]
            for item in leftovers:
                item.finished = True
            self._inflight.clear()
        for item in leftovers:
            self.ledger.append(
                run=self.id,
                kind="error",
                jti=item.jti,
                meta={
                    "code": "incomplete",
                    "jti": item.jti,
                    "message": "no complete response before the run closed",
                },
            )
        record = ExecutionRecord.issue(
            self.agent,
            self.mandate,
            exec_act=self._last_action,
            pred=self.frontier.current(),
            out_hash=sha256_b64url(_as_bytes(output)),
            status=status,
        )
        meta: dict[str, Any] = {"status": status, "out_hash": record.out_hash}
        if record.exec_act is not None:
            meta["exec_act"] = record.exec_act
        self.ledger.append(run=self.id, kind="record", jti=record.jti, token=record.token, meta=meta)
        self.ledger.seal(self.id, self.agent)
        with self._lock:
            self.record = record
        if self._owns_ledger:
            self.ledger.close()
        return record

    async def __aenter__(self) -> AgentRun:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close_sync(status=_status_for(exc))

    def __enter__(self) -> AgentRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close_sync(status=_status_for(exc))

    # --- the per-call pipeline (called by hooks.py) -------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RunClosed(f"run {self.id} is closed; start a new AgentRun for more calls")

    def _classify(self, method: str, body: bytes, content_type: str | None) -> Call | None:
        """Parse the body; ``None`` for a body-less request (GET/DELETE: signed, but not a call).

        Raises (after a ``denial`` entry) for malformed JSON-RPC, or a POST that is not JSON-RPC.
        """
        result: Call | NotJsonRpc
        try:
            result = parse(body, content_type=content_type)
            if isinstance(result, NotJsonRpc) and method in ("POST", "PUT", "PATCH"):
                raise JsonRpcError(f"refusing to sign a {method} to the MCP endpoint that is not JSON-RPC")
        except McpClientAuthError as exc:
            self._deny(None, None, exc)
            raise
        return result if isinstance(result, Call) else None

    def _authorize_call(self, call: Call) -> str:
        """The call's action if the policy and the mandate allow it; else a ``denial`` entry and raise."""
        try:
            self._check_principal()
            if self.mandate.exp <= time.time() + _EXPIRY_MARGIN:
                raise TokenExpired("the run's mandate has expired; no further calls can be authorised")
            action = check_call(self.policy, call, self.mandate)
            # Constraints of a granted action apply whatever the policy (never ignored).
            # Charged to every budgeted link of the chain (all or nothing), as the server does.
            self._budget.charge_chain(self.mandate.chain, action, call)
            return action
        except McpClientAuthError as exc:
            self._deny(call, getattr(exc, "action", None), exc)
            raise

    def _deny(self, call: Call | None, action: str | None, exc: McpClientAuthError) -> None:
        """Record a refused call: a ``denial`` when someone decided (the mandate, the principal
        binding, the MCP server), an ``error`` when what the call needs could not be had (the
        identity provider failed or had no token for the user)."""
        meta: dict[str, Any] = {
            "method": call.method if call else None,
            "tool": call.tool if call else None,
            "id": call.id if call else None,
            "action": action,
            "code": exc.code,
            "principal": self.principal.id,
        }
        kind = "error" if isinstance(exc, _TOKEN_UNAVAILABLE) else "denial"
        self.ledger.append(run=self.id, kind=kind, meta=meta)

    def _check_principal(self) -> None:
        """Refuse a call made on behalf of someone other than the run's principal (:func:`acting_for`)."""
        acting = _ACTING_FOR.get()
        if acting is not None and acting != self.principal.id:
            raise PrincipalMismatch(
                f"run {self.id} acts for principal {self.principal.id!r}, not for {acting!r}",
                principal=self.principal.id,
                requested=acting,
            )

    def _source_for(self, call: Call | None) -> TokenSource | None:
        """The token source for this request: the service source in a discovery session, else the user's."""
        if _DISCOVERY.get() is not self:
            return self.token_source
        if call is not None and not (call.kind == "notification" or call.method in DISCOVERY_METHODS):
            raise PrincipalMismatch(
                f"a discovery session (service credentials) may only list; {call.method or 'a response'!r} "
                "must be sent in a session that carries the user's token",
                principal=self.principal.id,
                method=call.method,
            )
        return self.discovery_token_source

    async def _authorization(self, call: Call | None, endpoint: Endpoint) -> str | None:
        """The ``Authorization`` value for this request: the user's token from the token source.

        ``None`` when the run has no token source (the mandate or the caller's own auth then decides).
        A failure refuses the call like a denial. Under :class:`~.authz.retry.RunAuth` the token used
        is recorded for the 401/403 handling, and a step-up's scopes are asked for.
        """
        from .authz.retry import current_attempt

        try:
            if call is None:
                self._check_principal()  # calls were checked in _authorize_call
            source = self._source_for(call)
            if source is None:
                return None
            attempt = current_attempt()
            if attempt is not None and attempt.foreign_auth:
                raise ConfigurationError(
                    "this client has its own auth= while the run has a token source: two sources of "
                    "Authorization; build the client without auth="
                )
            audience = self._token_audience(endpoint)
            if attempt is not None and attempt.scopes is not None:
                scopes: Sequence[str] | None = list(attempt.scopes)
            else:
                remembered = self._stepped_scopes.get((endpoint.url, id(source)))
                scopes = list(remembered) if remembered is not None else self.scopes
            token: AccessToken = await source.get_token(self.principal, audience=audience, scopes=scopes)
            header = token.authorization_header()
            if attempt is not None:
                attempt.used(self, source, self.principal, endpoint, call, audience, scopes, token)
            return header
        except McpClientAuthError as exc:
            self._deny(call, None, exc)
            raise

    def _token_audience(self, endpoint: Endpoint) -> str | None:
        # None = the token source's configured audience, unless RFC 9728 metadata named the resource.
        return self._audiences_found.get(endpoint.url)

    def _remember_scopes(self, endpoint: Endpoint, source: TokenSource | None, scopes: Sequence[str]) -> None:
        """After a successful step-up: ask ``source`` for these scopes at ``endpoint`` from now on."""
        with self._lock:
            self._stepped_scopes[(endpoint.url, id(source))] = tuple(scopes)

    async def _discover_audience(self, endpoint: Endpoint, metadata_url: str) -> None:
        """RFC 9728: fetch ``metadata_url`` anonymously; its ``resource`` (which must be this endpoint)
        becomes the audience asked of the token source for this endpoint."""
        from .authz.resource_metadata import fetch_resource_metadata

        metadata = await fetch_resource_metadata(metadata_url, expected_resource=endpoint.url)
        with self._lock:
            self._audiences_found[endpoint.url] = metadata.resource
            self._advertised_scopes[endpoint.url] = frozenset(metadata.scopes_supported)

    def _ect_audience(self, endpoint: Endpoint) -> list[str]:
        if endpoint.url in self.audiences:
            return [endpoint.url]
        return self.audiences

    def _prepare(
        self,
        call: Call | None,
        action: str | None,
        body: bytes,
        endpoint: Endpoint,
        url: str,
        authorization: str | None,
    ) -> Prepared:
        """Mint the ECT (for a call) and return the headers to set; registers the call in flight."""
        headers = dict(self._static_headers)
        if authorization is not None:
            headers["Authorization"] = authorization
        if call is None or action is None:
            return Prepared(headers, None)
        pred = self.frontier.begin() if call.is_tool_call else self.frontier.session_pred()
        ect = ExecutionContextToken.mint(
            self.agent,
            audience=self._ect_audience(endpoint),
            exec_act=action,
            pred=pred,
            wid=self.id,
            inp_hash=sha256_b64url(body),
            ttl=self.ect_ttl,
        )
        headers[self.ect_header] = ect.token
        inflight = InFlight(self, call, action, ect.jti, pred, url, ect.token)
        return Prepared(headers, inflight)

    def _sent(self, inflight: InFlight) -> None:
        """The request was signed: write its ``ect`` entry and track it until its response ends."""
        call = inflight.call
        assert call is not None
        meta: dict[str, Any] = {
            "method": call.method,
            "id": call.id,
            "url": inflight.url,
            "action": inflight.action,
        }
        if call.tool is not None:
            meta["tool"] = call.tool
        meta["principal"] = self.principal.id
        with self._lock:
            if self._closed:
                raise RunClosed(f"run {self.id} closed while the call was being prepared")
            self._inflight[id(inflight)] = inflight
        self.ledger.append(run=self.id, kind="ect", jti=inflight.jti, token=inflight.token, meta=meta)

    def _claim(self, inflight: InFlight) -> bool:
        """Take the right to write the one outcome entry of ``inflight`` (False if already written)."""
        with self._lock:
            if inflight.finished:
                return False
            inflight.finished = True
            self._inflight.pop(id(inflight), None)
            return True

    def _response(
        self, inflight: InFlight, *, status: int, out_hash: str, nbytes: int, completed: bool
    ) -> LedgerEntry | None:
        """Write the ``response`` entry; a tool call whose answer arrived joins the frontier."""
        if not self._claim(inflight):
            return None
        duration_ms = round((time.monotonic() - inflight.started) * 1000, 3)
        call = inflight.call
        entry = self.ledger.append(
            run=self.id,
            kind="response",
            jti=inflight.jti,
            meta={
                "status": status,
                "out_hash": out_hash,
                "duration_ms": duration_ms,
                "id": call.id if call else None,
                "bytes": nbytes,
            },
        )
        if completed and 200 <= status < 300 and inflight.is_tool_call and inflight.jti is not None:
            self.frontier.complete(inflight.jti, inflight.pred)
            self._last_action = inflight.action
        return entry

    def _error(self, inflight: InFlight, code: str, message: str) -> LedgerEntry | None:
        """Write the ``error`` entry of a call that got no usable response."""
        if not self._claim(inflight):
            return None
        return self.ledger.append(
            run=self.id,
            kind="error",
            jti=inflight.jti,
            meta={"code": code, "jti": inflight.jti, "message": message},
        )


def _same_endpoint(audience: str, canonical: str) -> bool:
    try:
        return canonical_url(audience) == canonical
    except ConfigurationError:
        return False


def _status_for(exc: BaseException | None) -> RecordStatus:
    if exc is None:
        return "completed"
    import asyncio

    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    return "failed"
