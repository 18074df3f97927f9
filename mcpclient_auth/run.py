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
    await run.aclose(output="final answer", status="completed")   # explicit close, idempotent

Creating the run writes its ``mandate`` ledger entry; every ledger write of the run goes through
its :class:`~._journal.RunJournal` (``run.journal``). The per-call decisions are plain functions in
:mod:`._calls` over the run's public members (:class:`~._calls.RunView`); the hooks (:mod:`._hooks`)
bind them to httpx and httpx2. The 401 / 403 handling around them (first challenge, re-obtain once,
step up once) is :mod:`._hooks.auth`'s ``RunAuth``, which factory-built and installed clients (httpx
and httpx2, async and sync) carry.

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
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from ._calls import DISCOVERY_METHODS
from ._context import acting_for, current_principal, discovery_mode, use_run
from ._encoding import compact_json, sha256_b64url
from ._journal import RunJournal
from .act import ExecutionRecord, Mandate
from .constraints import CallBudget, check_known
from .dag import Frontier
from .endpoints import Endpoint, EndpointSet, canonical_url
from .errors import (
    ConfigurationError,
    PrincipalMismatch,
    TokenExpired,
)
from .httpsig import RequestSigner
from .keys import Identity, TrustStore
from .ledger.writer import Ledger
from .policy import ActionPolicy, McpActionPolicy
from .principal import Principal

if TYPE_CHECKING:
    import httpx

    from .authz.base import TokenSource
    from .authz.dpop import DPoP
    from .authz.resource_metadata import ResourceMetadata
    from .factory import McpHttpClientFactory

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
      (:func:`~mcpclient_auth.endpoints.canonical_url`; :class:`~mcpclient_auth.errors.EndpointInvalid`
      if that is impossible). Other origins are untouched; other paths on its origin are refused.
    - ``ledger``: a path or a :class:`~mcpclient_auth.ledger.writer.Ledger` (``durability`` applies
      to a path only).
    - ``principal``: the user the run acts for (default: ``Principal(id=<mandate iss>)``; for a
      delegated mandate, its root's ``iss``).
    - ``token_source``: a :class:`~mcpclient_auth.authz.base.TokenSource` for the user's access token
      (sent as ``Authorization: Bearer``; the mandate then travels in ``ACT-Mandate``); ``scopes``
      are asked of it. Factory-built clients re-obtain once on 401 ``invalid_token`` and step up once
      on 403 ``insufficient_scope`` (:mod:`._hooks.auth`).
    - ``discovery_token_source``: a service source (e.g. :class:`~mcpclient_auth.authz.ClientCredentials`)
      for *discovery sessions* only: sessions opened inside ``with run.discovery():`` carry the service
      token on every request and may only list (:data:`DISCOVERY_METHODS`); every other session carries
      the user's token. The two never mix within one MCP session.
    - ``dpop``: a :class:`~mcpclient_auth.authz.DPoP` the run insists on (RFC 9449): every token it
      sends must be DPoP-bound to this key (its token sources must be built with the same ``dpop=``;
      a bearer token is refused, :class:`~mcpclient_auth.errors.DPoPKeyMissing`). Without it, a source
      built with ``dpop=`` still gets ``Authorization: DPoP`` and a fresh proof on every send; this
      option only rules out the bearer fallback.
    - ``discover_resource_metadata``: on a 401 naming RFC 9728 ``resource_metadata``, fetch it
      (anonymously) and ask the token source for its ``resource`` as the audience.
    - ``initial_scope``: ``"configured"`` (default) asks the token source before the first request,
      for ``scopes`` (or the source's own). ``"challenge"`` is the MCP spec's scope selection (SEP-835):
      each endpoint's requests go out *without* the user's token (still signed, mandate and ECT
      included) until the endpoint answers one with 401; that challenge's RFC 9728
      ``resource_metadata`` is fetched (its ``resource`` must be the endpoint, it becomes the
      audience; a source that discovers for itself, like
      :class:`~mcpclient_auth.authz.AuthorizationCode`, is handed the URL) and the token is asked
      for the challenge's ``scope=``, else the metadata's ``scopes_supported``, else the configured
      scopes; the request is resent once with it, and the endpoint's later requests carry a token for
      those scopes from the start. With ``allowed_scopes`` the chosen scopes must lie inside it
      (:class:`~mcpclient_auth.errors.ScopeNotAllowed`, nothing asked); without it the server's first
      challenge chooses, as the spec has it. Opt-in because an endpoint that answers anonymous
      requests then never sees the user's token, and every endpoint costs one more round trip.
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
        dpop: DPoP | None = None,
        discover_resource_metadata: bool = False,
        allowed_scopes: Sequence[str] | None = None,
        initial_scope: Literal["configured", "challenge"] = "configured",
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
        self.endpoint_set = EndpointSet(endpoint)
        self.policy: ActionPolicy = policy if policy is not None else McpActionPolicy()
        self.token_source = token_source
        self.scopes = list(scopes) if scopes is not None else None
        self.discovery_token_source = discovery_token_source
        self.dpop = _check_dpop(dpop, token_source, discovery_token_source)
        self.discover_resource_metadata = bool(discover_resource_metadata)
        if initial_scope not in ("configured", "challenge"):
            raise ConfigurationError("initial_scope must be 'configured' or 'challenge'")
        self.initial_scope = initial_scope
        # per (endpoint url, source): scopes after a successful step-up or first challenge (None: the
        # configured ones); the OAuth resource an endpoint's RFC 9728 metadata named (what the token
        # source is asked for there, not the ECT audience)
        self._stepped_scopes: dict[tuple[str, int], tuple[str, ...] | None] = {}
        self._resource_by_endpoint: dict[str, str] = {}
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
        self.ect_audiences: list[str] = configured or list(self.mandate.aud)
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
            for e in self.endpoint_set.endpoints
        }
        self._owns_ledger = not isinstance(ledger, Ledger)
        if isinstance(ledger, Ledger):
            if durability is not None:
                raise ConfigurationError("durability applies to a ledger path; the Ledger given has its own")
            self.ledger = ledger
        else:
            # The agent's key signs the writer's recovery record if it finds a torn line.
            self.ledger = Ledger(ledger, durability=durability or "flush", key=agent)
        self._lock = threading.Lock()
        self.record: ExecutionRecord | None = None
        self._mandate_header_value = self.mandate.token
        self._static_headers = self._build_static_headers()
        self.journal = RunJournal(
            self.ledger, run_id=self.id, principal_id=self.principal.id, frontier=self.frontier
        )
        self.journal.mandate(self.mandate, endpoints=self.endpoint_set.urls, agent_kid=agent.kid)

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
                audience=audience or self.endpoint_set.urls,
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
        for endpoint in self.endpoint_set.endpoints:
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

    def scope_allowlist(self, endpoint: Endpoint, source: TokenSource | None) -> frozenset[str]:
        """The scopes a step-up at ``endpoint`` may ask ``source`` for (see ``allowed_scopes``)."""
        if self.allowed_scopes is not None:
            return self.allowed_scopes
        allowed = set(self.scopes or ())
        allowed.update(getattr(source, "scopes", None) or ())
        allowed.update(self._advertised_scopes.get(endpoint.url, ()))
        return frozenset(allowed)

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
        return self.endpoint_set.urls

    def endpoint_url(self, url: str | None = None) -> str:
        """``url`` if it is one of the run's endpoints (default: the first); else
        :class:`ConfigurationError`. Every adapter that opens a connection for the run checks its
        ``url=`` here, so the rule "a run's credentials go only to its endpoints" is written once.

            run.endpoint_url()                                   # run.endpoints[0]
            run.endpoint_url("https://hr.example/mcp")           # itself, when it is an endpoint
        """
        if url is None:
            return self.endpoints[0]
        if not isinstance(url, str) or self.endpoint_set.match(url) is None:
            raise ConfigurationError("url= must be one of the run's endpoints")
        return url

    @property
    def closed(self) -> bool:
        return self.journal.closed

    def __repr__(self) -> str:
        # A run whose __init__ raised part-way (a debugger, a traceback formatter or logging may still
        # show it) has only some attributes: repr must not raise a second error over the first.
        journal = getattr(self, "journal", None)
        if journal is None:
            return f"AgentRun(id={getattr(self, 'id', None)!r}, not initialised)"
        state = "closed" if journal.closed else "open"
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

    def activate(self) -> AbstractContextManager[AgentRun]:
        """``with run.activate():`` — select this run for calls made through multi-run clients."""
        return use_run(self)

    def discovery(self) -> AbstractContextManager[AgentRun]:
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
        return discovery_mode(self)

    async def aclose(self, output: Any = None, status: RecordStatus = "completed") -> ExecutionRecord:
        """:meth:`close` for ``async`` code (httpx's naming: ``close`` sync, ``aclose`` async)."""
        return self.close(output=output, status=status)

    def close(self, output: Any = None, status: RecordStatus = "completed") -> ExecutionRecord:
        """Write the phase-2 record (``out_hash`` = SHA-256 of ``output``) and seal the run. Idempotent.

        The work is local file I/O only, so the same method serves sync and async code.
        """
        if status not in _STATUSES:
            raise ConfigurationError(f"status must be one of {sorted(_STATUSES)}")
        with self._lock:
            if self.record is not None:
                return self.record
            self.journal.stop()
        record = ExecutionRecord.issue(
            self.agent,
            self.mandate,
            exec_act=self.journal.last_action,
            pred=self.frontier.current(),
            out_hash=sha256_b64url(_as_bytes(output)),
            status=status,
        )
        self.journal.record(record, agent=self.agent)
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
        self.close(status=_status_for(exc))

    def __enter__(self) -> AgentRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(status=_status_for(exc))

    # --- what the per-call pipeline reads (calls.RunView) -----------------------------------------

    @property
    def budget(self) -> CallBudget:
        """The run's call budget: the ``max_calls`` constraints of its mandate, charged per call."""
        return self._budget

    @property
    def static_headers(self) -> Mapping[str, str]:
        """The headers every request of the run carries (the mandate, unless a token source is set)."""
        return self._static_headers

    def signer_for(self, endpoint: Endpoint) -> RequestSigner:
        """The request signer for ``endpoint`` (its ``wimse-aud`` is the endpoint's canonical URL)."""
        return self._signers.get(endpoint.url, self.signer)

    def scopes_for(self, endpoint: Endpoint, source: TokenSource) -> Sequence[str] | None:
        """The scopes to ask ``source`` for at ``endpoint``: a successful step-up's (or first
        challenge's), else the run's."""
        remembered = self._stepped_scopes.get((endpoint.url, id(source)))
        return list(remembered) if remembered is not None else self.scopes

    def token_deferred(self, endpoint: Endpoint, source: TokenSource) -> bool:
        """True while requests to ``endpoint`` go without ``source``'s token: ``initial_scope=
        "challenge"`` and the endpoint has not yet challenged one into a token that worked."""
        return self.initial_scope == "challenge" and (endpoint.url, id(source)) not in self._stepped_scopes

    def token_resource(self, endpoint: Endpoint) -> str | None:
        """The OAuth resource to ask the token source for at ``endpoint`` (its ``audience=``)."""
        # None = the token source's configured audience, unless RFC 9728 metadata named the resource.
        return self._resource_by_endpoint.get(endpoint.url)

    def remember_scopes(
        self, endpoint: Endpoint, source: TokenSource | None, scopes: Sequence[str] | None
    ) -> None:
        """After a successful step-up or first challenge: ask ``source`` for these scopes at
        ``endpoint`` from now on (``None``: the configured ones) and send its token from the start."""
        with self._lock:
            self._stepped_scopes[(endpoint.url, id(source))] = tuple(scopes) if scopes is not None else None

    async def discover_resource(self, endpoint: Endpoint, metadata_url: str) -> ResourceMetadata:
        """RFC 9728: fetch ``metadata_url`` anonymously; its ``resource`` must name this endpoint (same
        origin, the endpoint's path equal to it or below it: :func:`~.authz.discovery.check_resource`)
        and becomes, exactly as published, the resource asked of the token source for this endpoint.
        Returns the metadata."""
        from .authz.discovery import check_resource
        from .authz.resource_metadata import fetch_resource_metadata

        metadata = await fetch_resource_metadata(metadata_url)
        check_resource(metadata.resource, endpoint.url)
        with self._lock:
            self._resource_by_endpoint[endpoint.url] = metadata.resource
            self._advertised_scopes[endpoint.url] = frozenset(metadata.scopes_supported)
        return metadata

    def ect_audience(self, endpoint: Endpoint) -> list[str]:
        """The ``aud`` of the ECTs sent to ``endpoint``."""
        if endpoint.url in self.ect_audiences:
            return [endpoint.url]
        return self.ect_audiences



def _check_dpop(
    dpop: DPoP | None, token_source: TokenSource | None, discovery_source: TokenSource | None
) -> DPoP | None:
    """``AgentRun(dpop=)``: a DPoP key, and every source that says which key it proves with says
    this one (a source of our own without ``dpop=`` would issue bearer tokens)."""
    if dpop is None:
        return None
    from .authz.dpop import DPoP

    if not isinstance(dpop, DPoP):
        raise ConfigurationError("dpop must be a DPoP (mcpclient_auth.DPoP), e.g. DPoP(agent)")
    sources = [s for s in (token_source, discovery_source) if s is not None]
    if not sources:
        raise ConfigurationError("dpop= needs a token_source (built with the same dpop=) to bind tokens to")
    for source in sources:
        if hasattr(source, "dpop"):
            key = source.dpop
            if not isinstance(key, DPoP) or key.thumbprint != dpop.thumbprint:
                raise ConfigurationError(
                    f"{type(source).__name__} is not built with this dpop= key; pass the same DPoP to "
                    "the source (it binds the tokens) and to the run"
                )
    return dpop


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
