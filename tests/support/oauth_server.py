"""A minimal OAuth 2.1 authorization server for mcp's ``OAuthClientProvider`` (authorization code + PKCE,
dynamic client registration, RFC 9728 / RFC 8414 metadata), mounted on the MCP server's origin.

    server = AuthorizationServer(access_token="oauth-at-...")
    hr_server(extra_routes=server.routes())          # next to the guarded FastMCP app
    provider = OAuthClientProvider(url, metadata, storage, redirect_handler=server.browser.visit,
                                   callback_handler=server.browser.callback)
    server.requests                                  # (method, path) of every OAuth request

``Browser`` plays the user: it follows the authorization URL with its own plain client and reads
``code`` and ``state`` from the redirect, so the provider's callback gets what a real one would;
``Browser.redirect`` hands back the whole redirect URL instead (for ``AuthorizationCode``).

Options for the 2026 client features (all off by default): RFC 9207 ``iss`` in the redirect
(``send_iss``, ``advertise_iss``, ``iss_value``), refresh tokens (``issue_refresh``), pre-registered
confidential clients (``preregistered``, checked with client_secret_basic), Client ID Metadata
Documents (``cimd``), no dynamic registration (``registration=False``), ``scopes_supported``. ``token_forms`` / ``authorize_queries`` /
``registrations`` record what arrived. DPoP (RFC 9449): a ``DPoP`` proof at ``/token`` is checked with
:mod:`tests.support.dpop_check` (claims in ``token_proofs``) and the answer is ``token_type=DPoP``; a
refresh token issued under a proof is bound to that key (refresh with another key or none:
``invalid_grant``), so is a code whose authorization request named ``dpop_jkt`` (RFC 9449 §10);
``dpop_nonce`` demands that nonce (400 ``use_dpop_nonce`` + ``DPoP-Nonce``); ``dpop_algs`` is
advertised as ``dpop_signing_alg_values_supported``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .dpop_check import ProofRejected, check_proof


@dataclass
class Browser:
    """Scripted redirect/callback handlers for the authorization-code flow."""

    visited: list[str] = field(default_factory=list)
    _result: tuple[str, str | None] | None = None

    async def visit(self, authorization_url: str) -> None:
        self.visited.append(authorization_url)
        async with httpx.AsyncClient(follow_redirects=False) as client:
            answer = await client.get(authorization_url)
        assert answer.status_code == 302, answer.text
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        self._result = (query["code"][0], query.get("state", [None])[0])

    async def redirect(self, authorization_url: str) -> str:
        """An ``AuthorizationCode`` interaction: the whole redirect URL the AS answered with."""
        self.visited.append(authorization_url)
        async with httpx.AsyncClient(follow_redirects=False) as client:
            answer = await client.get(authorization_url)
        assert answer.status_code == 302, answer.text
        return str(answer.headers["location"])

    async def callback(self) -> tuple[str, str | None]:
        assert self._result is not None, "the authorization URL was never visited"
        result, self._result = self._result, None
        return result


@dataclass
class AuthorizationServer:
    access_token: str
    requests: list[tuple[str, str]] = field(default_factory=list)
    browser: Browser = field(default_factory=Browser)
    send_iss: bool = False
    advertise_iss: bool = False
    iss_value: str | None = None  # what to send as iss (default: the issuer)
    issue_refresh: bool = False
    cimd: bool = False
    registration: bool = True  # advertise registration_endpoint (RFC 7591)
    preregistered: dict[str, str] = field(default_factory=dict)
    scopes_supported: list[str] | None = None
    token_forms: list[dict[str, str]] = field(default_factory=list)
    authorize_queries: list[dict[str, str]] = field(default_factory=list)
    registrations: list[dict[str, object]] = field(default_factory=list)
    dpop_nonce: str | None = None
    dpop_algs: list[str] | None = None  # dpop_signing_alg_values_supported, when set
    token_proofs: list[dict[str, object]] = field(default_factory=list)
    _dpop_jtis: set[str] = field(default_factory=set)
    _refresh_jkt: dict[str, str | None] = field(default_factory=dict)
    _codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> (challenge, redirect_uri)
    _code_jkt: dict[str, str] = field(default_factory=dict)  # code -> dpop_jkt of its authorization request
    _clients: set[str] = field(default_factory=set)
    _refresh: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append((request.method, request.url.path))

    @staticmethod
    def _base(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}"

    async def _resource_metadata(self, request: Request) -> Response:
        self._record(request)
        base = self._base(request)
        document: dict[str, object] = {"resource": f"{base}/mcp", "authorization_servers": [base]}
        if self.scopes_supported is not None:
            document["scopes_supported"] = self.scopes_supported
        return JSONResponse(document)

    async def _server_metadata(self, request: Request) -> Response:
        self._record(request)
        base = self._base(request)
        return JSONResponse(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                **({"registration_endpoint": f"{base}/register"} if self.registration else {}),
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
                "authorization_response_iss_parameter_supported": self.advertise_iss,
                "client_id_metadata_document_supported": self.cimd,
                **({"scopes_supported": self.scopes_supported} if self.scopes_supported else {}),
                **({"dpop_signing_alg_values_supported": self.dpop_algs} if self.dpop_algs is not None else {}),
            }
        )

    async def _register(self, request: Request) -> Response:
        self._record(request)
        metadata = await request.json()
        with self._lock:
            self.registrations.append(dict(metadata))
        client_id = "client-" + secrets.token_hex(4)
        with self._lock:
            self._clients.add(client_id)
        metadata.update({"client_id": client_id, "token_endpoint_auth_method": "none"})
        return JSONResponse(metadata, status_code=201)

    async def _authorize(self, request: Request) -> Response:
        self._record(request)
        query = request.query_params
        with self._lock:
            self.authorize_queries.append(dict(query))
        client_id = query.get("client_id") or ""
        known = (
            client_id in self._clients
            or client_id in self.preregistered
            or (self.cimd and client_id.startswith("https://"))
        )
        if not known or query.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        with self._lock:
            self._codes[code] = (query["code_challenge"], query["redirect_uri"])
            if "dpop_jkt" in query:
                self._code_jkt[code] = query["dpop_jkt"]
        answer = {"code": code, "state": query.get("state", "")}
        if self.send_iss:
            answer["iss"] = self.iss_value or self._base(request)
        target = query["redirect_uri"] + "?" + urlencode(answer)
        return RedirectResponse(target, status_code=302)

    async def _token(self, request: Request) -> Response:
        self._record(request)
        form = await request.form()
        fields = {k: str(v) for k, v in form.items()}
        with self._lock:
            self.token_forms.append(fields)
        jkt: str | None = None
        proof = request.headers.get("dpop")
        if proof is not None or self.dpop_nonce is not None:
            with self._lock:
                try:
                    claims, jkt = check_proof(proof, "POST", str(request.url), self._dpop_jtis, nonce=self.dpop_nonce)
                except ProofRejected as exc:
                    if str(exc) == "nonce":
                        headers = {"DPoP-Nonce": self.dpop_nonce or ""}
                        return JSONResponse({"error": "use_dpop_nonce"}, status_code=400, headers=headers)
                    return JSONResponse({"error": "invalid_dpop_proof"}, status_code=400)
                self.token_proofs.append(claims)
        basic = request.headers.get("authorization", "")
        if basic:
            user, _, password = base64.b64decode(basic.removeprefix("Basic ")).decode().partition(":")
            if self.preregistered.get(user) != password:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") == "refresh_token":
            refresh = str(form.get("refresh_token", ""))
            with self._lock:
                known = refresh in self._refresh and self._refresh_jkt.get(refresh) == jkt
            if not known:  # unknown, or a DPoP-bound refresh token without its key (RFC 9449 §5)
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return JSONResponse(self._issue(jkt))
        with self._lock:
            code = str(form.get("code", ""))
            bound_jkt = self._code_jkt.get(code)
            if bound_jkt is not None and bound_jkt != jkt:  # RFC 9449 §10: the code is bound to a key
                return JSONResponse({"error": "invalid_dpop_proof"}, status_code=400)
            issued = self._codes.pop(code, None)
            self._code_jkt.pop(code, None)
        if form.get("grant_type") != "authorization_code" or issued is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        challenge, redirect_uri = issued
        verifier = str(form.get("code_verifier", ""))
        computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if computed != challenge or form.get("redirect_uri") != redirect_uri:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse(self._issue(jkt))

    def _issue(self, jkt: str | None = None) -> dict[str, object]:
        document: dict[str, object] = {
            "access_token": self.access_token,
            "token_type": "Bearer" if jkt is None else "DPoP",
            "expires_in": 3600,
        }
        if self.issue_refresh:
            refresh = "rt-" + secrets.token_hex(8)
            with self._lock:
                self._refresh.add(refresh)
                self._refresh_jkt[refresh] = jkt
            document["refresh_token"] = refresh
        return document

    def revoke_refresh_tokens(self) -> None:
        with self._lock:
            self._refresh.clear()

    def routes(self) -> list[Route]:
        return [
            Route("/.well-known/oauth-protected-resource/mcp", self._resource_metadata),
            Route("/.well-known/oauth-protected-resource", self._resource_metadata),
            Route("/.well-known/oauth-authorization-server", self._server_metadata),
            Route("/register", self._register, methods=["POST"]),
            Route("/authorize", self._authorize),
            Route("/token", self._token, methods=["POST"]),
        ]
