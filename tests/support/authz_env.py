"""The per-user authorization environment: a real token endpoint and the verifying FastMCP server,
fronted by a gate that checks *whose* access token each request carries.

    with authz_server(users=["alice", "bob"]) as env:     # IdP + gate + guard + FastMCP on 127.0.0.1
        run = env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange())
        ...
        env.gate.seen            # every request: token user, mandate issuer, JSON-RPC method, tool, args
        env.gate.revoked.add(1)  # the token numbered 1 is answered 401 invalid_token from now on
        env.idp.count            # token requests

The gate sits in front of the guard from :mod:`tests.support.mcp_app` (which verifies signatures,
mandates and ECTs) and adds what that guard does not check: the ``Authorization`` bearer token is one
this IdP issued, for the user who issued the request's mandate. Scripted answers: 401
``invalid_token`` for revoked tokens (by issue number or user), 403 ``insufficient_scope`` while the
token lacks ``required_scopes`` (the challenge names ``challenge_scopes``), a ``resource_metadata``
URL in 401 challenges, and (``challenge_anonymous``) a 401 naming the scopes to requests without a
token (the MCP spec's first challenge).

DPoP (RFC 9449 §7): ``Authorization: DPoP <token>`` requests must carry a ``DPoP`` proof that
:mod:`tests.support.dpop_check` accepts (PyJWT + joserfc: method, URI, ``ath`` of the token, fresh
``jti``) made with the key the token's ``cnf.jkt`` names; otherwise 401 with a ``DPoP`` challenge.
``dpop_nonce`` demands that nonce (401 ``DPoP error="use_dpop_nonce"`` + ``DPoP-Nonce``);
``dpop_rotate`` hands out a new nonce on every challenge and never accepts it; ``dpop_next_nonce`` is handed out (``DPoP-Nonce``)
on every successful answer and required from then on. The challenges for DPoP tokens use the DPoP scheme.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.routing import Route

from mcpclient_auth.act import Mandate
from mcpclient_auth.authz import TokenExchange
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.run import AgentRun
from tests.support.trust import trust_for

from .dpop_check import ProofRejected, check_proof
from .hooks_env import DEFAULT_CAPS
from .idp import IdP
from .mcp_app import GuardState, Receive, Scope, Send, build_app
from .servers import serve

CLIENT_ID = "agent-app"
CLIENT_SECRET = "SECRET-SENTINEL-client-4d1e"


def subject_token(user: str) -> str:
    """The user's SSO token (the RFC 8693 subject token): a sentinel that must never leak."""
    return f"SUBJ-SENTINEL-{user}-c0ffee"


@dataclass
class GateSeen:
    """One request as the gate saw it (before the guard verified it)."""

    method: str
    path: str
    rpc_method: str | None
    tool: str | None
    arguments: dict[str, Any]
    token_user: str | None
    token_number: int | None
    token_scopes: frozenset[str]
    token_audience: list[str]
    mandate_issuer: str | None
    session_id: str | None = None
    ect_jti: str | None = None
    signature_input: str | None = None
    status: int = 0
    scheme: str | None = None
    dpop_proof: str | None = None
    dpop_claims: dict[str, Any] | None = None
    dpop_error: str | None = None


@dataclass
class UserGate:
    """Pure ASGI wrapper: record and optionally challenge, then pass to the guarded app."""

    app: Any
    mcp_path: str = "/mcp"
    revoked: set[int] = field(default_factory=set)
    revoked_users: set[str] = field(default_factory=set)
    required_scopes: frozenset[str] = frozenset()
    challenge_scopes: frozenset[str] | None = None
    resource_metadata: str | None = None
    #: a token must name this audience (RFC 9728 test): otherwise 401 without invalid_token
    required_audience: str | None = None
    #: requests without Authorization get 401 naming ``challenge_scopes`` (SEP-835 first challenge)
    challenge_anonymous: bool = False
    seen: list[GateSeen] = field(default_factory=list)
    dpop_nonce: str | None = None
    dpop_rotate: bool = False
    dpop_next_nonce: str | None = None
    _dpop_jtis: set[str] = field(default_factory=set)
    _nonces_issued: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self._dpop_jtis.clear()
        self.dpop_nonce = self.dpop_next_nonce = None
        self.dpop_rotate = False
        self.revoked.clear()
        self.revoked_users.clear()
        self.required_scopes = frozenset()
        self.challenge_scopes = None
        self.resource_metadata = None
        self.required_audience = None
        self.challenge_anonymous = False

    def calls(self, tool: str | None = None) -> list[GateSeen]:
        """The ``tools/call`` requests that reached the gate (optionally of one tool)."""
        with self._lock:
            return [s for s in self.seen if s.rpc_method == "tools/call" and (tool is None or s.tool == tool)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != self.mcp_path:
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        seen = self._describe(scope["method"], scope["path"], headers, body)
        with self._lock:
            self.seen.append(seen)
        answer = self._dpop_check(scope, seen, headers) or self._challenge(seen, headers)
        if answer is not None:
            status, challenge, *extra = answer
            seen.status = status
            payload = json.dumps({"error": "unauthorized"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                        (b"www-authenticate", challenge.encode()),
                        *[(b"dpop-nonce", nonce.encode()) for nonce in extra],
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return

        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        async def record_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen.status = message["status"]
                if self.dpop_next_nonce is not None and seen.scheme == "DPoP":
                    message = {**message, "headers": [*message["headers"], (b"dpop-nonce", self.dpop_next_nonce.encode())]}
            await send(message)

        await self.app(scope, replay, record_status)

    @staticmethod
    def _describe(method: str, path: str, headers: dict[str, str], body: bytes) -> GateSeen:
        rpc_method = tool = None
        arguments: dict[str, Any] = {}
        if body:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                rpc_method = doc.get("method")
                params = doc.get("params") or {}
                if rpc_method == "tools/call" and isinstance(params, dict):
                    tool = params.get("name")
                    arguments = dict(params.get("arguments") or {})
        claims: dict[str, Any] = {}
        auth = headers.get("authorization", "")
        scheme, _, credential = auth.partition(" ")
        if scheme in ("Bearer", "DPoP") and credential.startswith("at."):
            claims = IdP.decode(credential)
        mandate = headers.get("act-mandate")
        issuer = Mandate.decode(mandate).iss if mandate else None
        ect = headers.get("execution-context")
        return GateSeen(
            method=method,
            path=path,
            rpc_method=rpc_method,
            tool=tool,
            arguments=arguments,
            token_user=claims.get("sub"),
            token_number=claims.get("n"),
            token_scopes=frozenset(str(claims.get("scope", "")).split()),
            token_audience=list(claims.get("aud", [])),
            mandate_issuer=issuer,
            session_id=headers.get("mcp-session-id"),
            ect_jti=ExecutionContextToken.decode(ect).jti if ect else None,
            signature_input=headers.get("signature-input"),
            scheme=scheme or None,
            dpop_proof=headers.get("dpop"),
        )

    def _dpop_check(self, scope: Scope, seen: GateSeen, headers: dict[str, str]) -> tuple[Any, ...] | None:
        """RFC 9449 §7: a DPoP token needs a valid proof of its key (and the nonce, when demanded)."""
        if seen.scheme != "DPoP":
            return None
        token = headers["authorization"].partition(" ")[2]
        url = f"http://{headers['host']}{scope['path']}"
        with self._lock:
            nonce = self.dpop_nonce
            try:
                claims, jkt = check_proof(seen.dpop_proof, seen.method, url, self._dpop_jtis, access_token=token, nonce=nonce)
            except ProofRejected as exc:
                seen.dpop_error = str(exc)
                if str(exc) == "nonce":
                    given = self.dpop_nonce or ""
                    if self.dpop_rotate:  # a server whose nonces are always stale by the resend
                        self._nonces_issued += 1
                        given = f"rs-handed-out-{self._nonces_issued}"
                    return 401, 'DPoP error="use_dpop_nonce", algs="ES256 EdDSA"', given
                return 401, 'DPoP error="invalid_dpop_proof", algs="ES256 EdDSA"'
            if self.dpop_next_nonce is not None:
                self.dpop_nonce = self.dpop_next_nonce
        seen.dpop_claims = claims
        if IdP.decode(token).get("cnf", {}).get("jkt") != jkt:
            seen.dpop_error = "cnf.jkt"
            return 401, 'DPoP error="invalid_token", error_description="not bound to the proof key"'
        return None

    def _challenge(self, seen: GateSeen, headers: dict[str, str]) -> tuple[int, str] | None:
        meta = f', resource_metadata="{self.resource_metadata}"' if self.resource_metadata else ""
        scheme = "DPoP" if seen.scheme == "DPoP" else "Bearer"
        if seen.token_number is None:
            if "authorization" not in headers and self.challenge_anonymous:
                named = self.challenge_scopes if self.challenge_scopes is not None else self.required_scopes
                scope = f', scope="{" ".join(sorted(named))}"' if named else ""
                return 401, f'Bearer realm="mcp"{scope}{meta}'
            return (401, f'Bearer realm="mcp"{meta}') if "authorization" in headers else None
        if seen.token_number in self.revoked or seen.token_user in self.revoked_users:
            return 401, f'{scheme} error="invalid_token", error_description="revoked"{meta}'
        if self.required_audience is not None and self.required_audience not in seen.token_audience:
            return 401, f'{scheme} realm="mcp"{meta}'
        if not self.required_scopes <= seen.token_scopes:
            wanted = " ".join(sorted(self.challenge_scopes or self.required_scopes))
            return 403, f'{scheme} error="insufficient_scope", scope="{wanted}"'
        return None


@dataclass
class AuthzEnv:
    idp: IdP
    gate: UserGate
    state: GuardState
    base: str
    agent: Identity
    users: dict[str, Identity]
    trust: TrustStore

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def principal(self, user: str) -> Any:
        from mcpclient_auth.principal import Principal

        return Principal(id=user, subject_token=subject_token(user))

    def exchange(self, **options: Any) -> TokenExchange:
        options.setdefault("retry_backoff", 0.01)
        return TokenExchange(self.idp.token_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **options)

    def run(
        self, user: str, ledger: Path | Any, *, capabilities: Sequence[str] = DEFAULT_CAPS, **options: Any
    ) -> AgentRun:
        options.setdefault("endpoint", self.url)
        options.setdefault("principal", self.principal(user))
        return AgentRun(
            agent=self.agent,
            issuer=self.users[user],
            purpose=f"Answer HR questions for {user}",
            capabilities=list(capabilities),
            ledger=ledger,
            **options,
        )

    def reset(self) -> None:
        self.idp.reset()
        self.gate.reset()
        self.state.reset()


@contextmanager
def authz_server(users: Sequence[str], *, extra_routes: list[Route] | None = None) -> Iterator[AuthzEnv]:
    """IdP and gated MCP server, each on its own 127.0.0.1 port; one mandate issuer key per user."""
    agent = Identity.generate("ES256", name="agent-1")
    identities = {user: Identity.generate("ES256", name=user) for user in users}
    trust = trust_for(issuers=identities.values(), agents=[agent])
    idp = IdP(
        clients={CLIENT_ID: CLIENT_SECRET},
        subjects={subject_token(user): user for user in users},
    )
    state = GuardState(trust)
    gate = UserGate(build_app(state, extra_routes=extra_routes))
    with serve(idp.app) as idp_base, serve(gate) as base:
        idp.base_url = idp_base
        state.audience = f"{base}/mcp"
        yield AuthzEnv(idp, gate, state, base, agent, identities, trust)
