"""OAuth 2.1 authorization code with PKCE for an MCP server, the way the MCP authorization spec asks.

    async def ask_user(authorization_url: str) -> str:
        webbrowser.open(authorization_url)
        return await my_callback_server.next_redirect()      # the WHOLE redirect URL, query and all

    source = AuthorizationCode(
        server_url="https://mcp.example.com/mcp", interaction=ask_user,
        redirect_uri="http://127.0.0.1:8765/callback",
        client_metadata_url="https://agent.example.com/client.json",    # CIMD, where the AS supports it
    )
    run = AgentRun(..., endpoint="https://mcp.example.com/mcp", token_source=source)

Per token (a miss of the cache; concurrent misses for one key share one flow):

1. **discovery** — RFC 9728 protected-resource metadata for ``server_url`` (validated: its ``resource``
   must name this server), then RFC 8414 metadata of its first authorization server (``issuer``
   identical to the URL it was fetched for). The AS must offer PKCE ``S256`` (else we stop). A server
   with no RFC 9728 metadata at all (404) gets the MCP 2025-03-26 fallback (``legacy_discovery``).
2. **client identification** — a pre-registered ``client_id`` (with its secret or key), else the Client
   ID Metadata Document URL when the AS says ``client_id_metadata_document_supported``, else RFC 7591
   dynamic registration at its ``registration_endpoint`` (remembered per issuer), else a typed error.
3. **authorization** — ``state`` and a PKCE S256 verifier, both fresh; the authorization URL carries
   ``resource`` (RFC 8707, exactly as the metadata publishes it) and the scopes (asked, else the
   metadata's ``scopes_supported``; plus ``offline_access`` when the AS offers it); the ``interaction``
   callback gets that URL and must return the **whole** redirect URL.
4. **the redirect** (:func:`parse_redirect`) — our redirect URI, ``state`` equal, RFC 9207 ``iss``
   identical to the issuer (character for character) whenever present, and required when the AS
   advertises ``authorization_response_iss_parameter_supported``; an ``error`` is a typed refusal.
5. **the token request** — ``code``, ``redirect_uri``, ``code_verifier``, ``resource``; a
   ``refresh_token`` in the answer is kept (memory only) and used first next time. With ``dpop=``
   (RFC 9449) the code and refresh requests carry a proof and the token must come back DPoP-bound.

No lock is held across an MCP request: the source is only ever awaited for a token, before the request
is sent; its single-flight covers one token acquisition for one key. Codes, verifiers, states and tokens
never appear in a message, a log line or a ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx

from ..errors import (
    AuthorizationResponseError,
    AuthorizationServerMetadataError,
    ClientRegistrationError,
    ConfigurationError,
    McpClientAuthError,
    ResourceMetadataError,
    TokenExchangeRejected,
)
from ..keys import Identity
from ..principal import Principal
from ._grant import OwnsIdpClient, as_tuple, bind_key, check_binding, check_dpop
from ._token_request import (
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_TIMEOUT,
    check_endpoint,
    parse_token_response,
    refresh_token_of,
    request_token_body,
)
from .base import AccessToken, normalise_scopes
from .cache import CacheKey, TokenCache
from .client_auth import ClientAuthentication, NoClientAuthentication, client_authentication
from .discovery import (
    AuthorizationServerMetadata,
    Discovered,
    discover,
    fetch_authorization_server_metadata,
)
from .dpop import DPoP
from .resource_metadata import ResourceMetadata

__all__ = [
    "AUTHORIZATION_CODE_GRANT",
    "AuthorizationCode",
    "AuthorizationRequest",
    "Interaction",
    "authorization_request",
    "parse_redirect",
    "pkce_challenge",
]

AUTHORIZATION_CODE_GRANT = "authorization_code"
REFRESH_TOKEN_GRANT = "refresh_token"
#: ``authorization URL -> the whole redirect URL`` (the user's part: a browser, a device, a test).
Interaction: TypeAlias = Callable[[str], Awaitable[str]]
_MAX_REGISTRATION_BYTES = 64 * 1024
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in _LOOPBACK


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 ``S256``: ``BASE64URL(SHA256(ASCII(verifier)))``."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """One authorization request: the URL for the user, and what checks its answer. ``repr`` hides
    the secrets (state, verifier)."""

    url: str
    redirect_uri: str
    issuer: str
    iss_required: bool
    state: str
    verifier: str

    def __repr__(self) -> str:
        return f"AuthorizationRequest(issuer={self.issuer!r}, redirect_uri={self.redirect_uri!r})"


def authorization_request(
    server: AuthorizationServerMetadata,
    *,
    client_id: str,
    redirect_uri: str,
    resource: Sequence[str],
    scopes: Sequence[str],
    dpop_jkt: str | None = None,
) -> AuthorizationRequest:
    """Build the authorization URL with a fresh ``state`` and PKCE verifier (pure but for randomness).

    ``dpop_jkt`` (RFC 9449 §10): the thumbprint of the DPoP key the token request will prove, so the
    authorization server binds the code to it (a stolen code is useless without the key)."""
    if server.authorization_endpoint is None:
        raise AuthorizationServerMetadataError(
            "the authorization server has no authorization_endpoint", member="authorization_endpoint"
        )
    if "S256" not in server.code_challenge_methods_supported:
        # MCP authorization: a client MUST refuse to proceed when PKCE S256 support is not advertised.
        raise AuthorizationServerMetadataError(
            "the authorization server does not advertise PKCE S256", member="code_challenge_methods_supported"
        )
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # 86 characters of the RFC 7636 unreserved set
    params: list[tuple[str, str]] = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("state", state),
        ("code_challenge", pkce_challenge(verifier)),
        ("code_challenge_method", "S256"),
    ]
    if scopes:
        params.append(("scope", " ".join(scopes)))
    params += [("resource", r) for r in resource]
    if dpop_jkt is not None:
        params.append(("dpop_jkt", dpop_jkt))
    parts = urlsplit(server.authorization_endpoint)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return AuthorizationRequest(
        url=urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")),
        redirect_uri=redirect_uri,
        issuer=server.issuer,
        iss_required=server.authorization_response_iss_parameter_supported,
        state=state,
        verifier=verifier,
    )


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise AuthorizationResponseError(f"the redirect repeats {name!r}", reason="malformed_response")
    return values[0]


def parse_redirect(redirect_url: str, request: AuthorizationRequest) -> str:
    """Check the whole redirect URL against ``request`` and return the authorization code (pure).

    Order: our redirect URI; ``state`` (a forged or replayed answer says nothing else we may read);
    RFC 9207 ``iss`` (exact string comparison, no normalisation; required when advertised, compared
    whenever present); then ``error`` or ``code``.
    """
    if not isinstance(redirect_url, str):
        raise AuthorizationResponseError(
            "the interaction returned no redirect URL", reason="redirect_mismatch"
        )
    try:
        got, want = urlsplit(redirect_url), urlsplit(request.redirect_uri)
        query = parse_qs(got.query, keep_blank_values=True)
    except ValueError:
        raise AuthorizationResponseError(
            "the redirect URL is not a URL", reason="redirect_mismatch"
        ) from None
    if (got.scheme, got.netloc, got.path) != (want.scheme, want.netloc, want.path):
        raise AuthorizationResponseError(
            "the redirect does not go to the configured redirect_uri", reason="redirect_mismatch"
        )
    state = _one(query, "state")
    if state is None or not secrets.compare_digest(state.encode(), request.state.encode()):
        raise AuthorizationResponseError(
            "the redirect's state does not match the authorization request", reason="state_mismatch"
        )
    iss = _one(query, "iss")
    if iss is None and request.iss_required:
        raise AuthorizationResponseError(
            "the authorization server advertises RFC 9207 iss but the redirect has none",
            reason="issuer_mismatch",
        )
    if iss is not None and iss != request.issuer:
        raise AuthorizationResponseError(
            "the redirect's iss is not the issuer the request was sent to (RFC 9207)",
            reason="issuer_mismatch",
        )
    error = _one(query, "error")
    if error is not None:
        shown = error if error.replace("_", "").isalnum() and len(error) <= 64 else "unknown"
        raise AuthorizationResponseError(
            f"the authorization server refused the authorization (error={shown})",
            reason="access_denied",
            error=shown,
        )
    code = _one(query, "code")
    if not code:
        raise AuthorizationResponseError("the redirect carries no authorization code", reason="no_code")
    return code


@dataclass(frozen=True, slots=True)
class _Refresh:
    token: str
    token_endpoint: str
    issuer: str
    resource: tuple[str, ...]

    def __repr__(self) -> str:
        return f"_Refresh(issuer={self.issuer!r})"


class AuthorizationCode(OwnsIdpClient):
    """A per-user :class:`~mcpclient_auth.authz.TokenSource` running the authorization-code flow
    (module docstring). ``get_token(audience=...)`` names the resource (a run passes the one its
    RFC 9728 discovery found); ``scopes`` replace the configured scopes."""

    def __init__(
        self,
        *,
        server_url: str,
        interaction: Interaction,
        redirect_uri: str,
        client_id: str | None = None,
        client_secret: str | None = None,
        client_key: Identity | None = None,
        auth_method: str | None = None,
        client_metadata_url: str | None = None,
        client_metadata: Mapping[str, Any] | None = None,
        scopes: str | Sequence[str] | None = None,
        resource_metadata_url: str | None = None,
        request_offline_access: bool = True,
        legacy_discovery: bool = True,
        http_client: httpx.AsyncClient | None = None,
        cache: TokenCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        dpop: DPoP | None = None,
    ) -> None:
        self.dpop = check_dpop(dpop)
        self.server_url = check_endpoint(server_url, "server_url")
        if not callable(interaction):
            raise ConfigurationError(
                "interaction must be an async callable: authorization URL -> redirect URL"
            )
        self._interaction = interaction
        self.redirect_uri = check_endpoint(redirect_uri, "redirect_uri")
        if client_id is None and (client_secret is not None or client_key is not None):
            raise ConfigurationError("client_secret / client_key need the pre-registered client_id")
        self.client_id = client_id
        self._secret = client_secret
        self._key_material = client_key
        self._auth_method = auth_method
        self.client_metadata_url = (
            check_endpoint(client_metadata_url, "client_metadata_url") if client_metadata_url else None
        )
        self.client_metadata: dict[str, Any] = dict(client_metadata or {"client_name": "mcpclient-auth"})
        self.scopes: tuple[str, ...] = normalise_scopes(scopes)
        self.resource_metadata_url = (
            check_endpoint(resource_metadata_url, "resource_metadata_url") if resource_metadata_url else None
        )
        self._configured_metadata_url = self.resource_metadata_url
        self.request_offline_access = bool(request_offline_access)
        self.legacy_discovery = bool(legacy_discovery)
        self.cache = cache if cache is not None else TokenCache()
        self._init_http(http_client)
        if timeout <= 0 or retry_backoff < 0:
            raise ConfigurationError("timeout must be positive and retry_backoff not negative")
        self._timeout = float(timeout)
        self._retry_backoff = float(retry_backoff)
        self._discovered: dict[str, Discovered] = {}
        self._registered: dict[str, ClientAuthentication] = {}
        self._refresh: dict[CacheKey, _Refresh] = {}

    # --- the TokenSource protocol -------------------------------------------------------------------

    async def get_token(
        self,
        principal: Principal,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
    ) -> AccessToken:
        """The principal's token: from cache, by refresh, or by a new authorization (module docstring)."""
        key = self._key(principal, audience, scopes)
        token = self.cache.get(key)
        if token is None:
            token = await self.cache.join(key, self._acquire, key, principal)
        return check_binding(token, self.dpop)

    def invalidate(
        self,
        principal: Principal,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
        *,
        token: AccessToken | None = None,
    ) -> None:
        """Forget the cached token (only ``token``, when given) and the discovery behind it, so a
        server that moved to another authorization server is rediscovered (SEP-2352)."""
        if self.cache.invalidate(self._key(principal, audience, scopes), token=token):
            self._discovered.clear()

    def use_resource_metadata(self, url: str) -> None:
        """Discover from ``url`` (a 401's RFC 9728 ``resource_metadata``) from now on, unless a URL was
        configured (:class:`~mcpclient_auth.authz.base.DiscoversResource`). The metadata found there
        must still name ``server_url``."""
        url = check_endpoint(url, "resource_metadata_url")
        if self._configured_metadata_url is not None or url == self.resource_metadata_url:
            return
        self.resource_metadata_url = url
        self._discovered.clear()

    def _key(self, principal: Principal, audience: str | None, scopes: Sequence[str] | None) -> CacheKey:
        if not isinstance(principal, Principal):
            raise ConfigurationError("get_token needs a Principal")
        key = CacheKey(
            self.server_url,
            AUTHORIZATION_CODE_GRANT,
            self.client_id,
            principal.id,
            None,
            None,
            (),
            (self.server_url,) if audience is None else as_tuple(audience, "resource"),
            self.scopes if scopes is None else normalise_scopes(scopes),
        )
        return bind_key(key, self.dpop)

    # --- one acquisition (runs inside the cache's single-flight task) -------------------------------

    async def _acquire(self, key: CacheKey, principal: Principal) -> AccessToken:
        refresh = self._refresh.get(key)
        if refresh is not None:
            try:
                return await self._refresh_grant(key, refresh)
            except TokenExchangeRejected:
                self._refresh.pop(key, None)  # revoked or expired: the user authorizes again
        found = await self._discovery()
        server = found.server
        if server.token_endpoint is None:
            raise AuthorizationServerMetadataError(
                "the authorization server has no token_endpoint", member="token_endpoint"
            )
        self._check_dpop_alg(server)
        auth = await self._client_auth(server)
        resource = (found.resource.resource,)
        scopes = self._requested_scopes(key, found)
        request = authorization_request(
            server,
            client_id=auth.client_id,
            redirect_uri=self.redirect_uri,
            resource=resource,
            scopes=scopes,
            dpop_jkt=self.dpop.thumbprint if self.dpop is not None else None,
        )
        code = parse_redirect(await self._interact(request.url), request)
        form: dict[str, str | list[str]] = {
            "grant_type": AUTHORIZATION_CODE_GRANT,
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": request.verifier,
            "resource": list(resource),
        }
        return await self._token_request(
            key, server.token_endpoint, server.issuer, form, auth, resource, scopes
        )

    def _check_dpop_alg(self, server: AuthorizationServerMetadata) -> None:
        """RFC 9449 §5.1: an AS that lists its DPoP algorithms must list ours (else every proof fails)."""
        if self.dpop is None or "dpop_signing_alg_values_supported" not in server.raw:
            return
        algs = server.raw["dpop_signing_alg_values_supported"]
        if not isinstance(algs, list) or self.dpop.alg not in algs:
            raise AuthorizationServerMetadataError(
                f"the authorization server does not accept DPoP proofs signed with {self.dpop.alg}",
                member="dpop_signing_alg_values_supported",
            )

    def _requested_scopes(self, key: CacheKey, found: Discovered) -> tuple[str, ...]:
        # SEP-835: the scopes asked for, else the protected resource's scopes_supported, else none.
        chosen = set(key.scopes or found.resource.scopes_supported)
        offers_refresh = "offline_access" in found.server.scopes_supported
        if self.request_offline_access and offers_refresh and chosen:
            chosen.add("offline_access")  # SEP-2207: ask for a refresh token where the AS offers one
        return tuple(sorted(chosen))

    async def _refresh_grant(self, key: CacheKey, refresh: _Refresh) -> AccessToken:
        auth = self._registered.get(refresh.issuer) or await self._client_auth_for_issuer(refresh.issuer)
        form: dict[str, str | list[str]] = {
            "grant_type": REFRESH_TOKEN_GRANT,
            "refresh_token": refresh.token,
            "resource": list(refresh.resource),
        }
        return await self._token_request(
            key, refresh.token_endpoint, refresh.issuer, form, auth, refresh.resource, key.scopes
        )

    async def _client_auth_for_issuer(self, issuer: str) -> ClientAuthentication:
        found = await self._discovery()
        if found.server.issuer != issuer:
            raise TokenExchangeRejected(
                "the authorization server changed; authorize again", error="invalid_grant"
            )
        return await self._client_auth(found.server)

    async def _token_request(
        self,
        key: CacheKey,
        token_endpoint: str,
        issuer: str,
        form: dict[str, str | list[str]],
        auth: ClientAuthentication,
        resource: tuple[str, ...],
        scopes: Sequence[str],
    ) -> AccessToken:
        body = await request_token_body(
            self._client(),
            token_endpoint,
            form,
            auth,
            now=self.cache.clock,
            retry_backoff=self._retry_backoff,
            attempt_timeout=self._timeout,
            what="authorization code token request"
            if form["grant_type"] == AUTHORIZATION_CODE_GRANT
            else "refresh",
            dpop=self.dpop,  # also on refresh: a public client's refresh token is bound to the key too
        )
        token = parse_token_response(
            body, now=self.cache.clock(), requested_scopes=scopes, dpop_bound=self.dpop is not None
        )
        offered = refresh_token_of(body)
        if offered is not None:
            self._refresh[key] = _Refresh(offered, token_endpoint, issuer, resource)
        return token

    async def _interact(self, url: str) -> str:
        try:
            result = self._interaction(url)
            redirect = await result if inspect.isawaitable(result) else result
        except McpClientAuthError:
            raise
        except Exception as exc:
            raise AuthorizationResponseError(
                f"the user interaction failed ({type(exc).__name__})", reason="interaction_failed"
            ) from None
        if not isinstance(redirect, str):
            raise AuthorizationResponseError(
                "the interaction returned no redirect URL", reason="redirect_mismatch"
            )
        return redirect

    async def _discovery(self) -> Discovered:
        found = self._discovered.get(self.server_url)
        if found is None:
            try:
                found = await discover(
                    self.server_url,
                    resource_metadata_url=self.resource_metadata_url,
                    http_client=self._client(),
                    attempt_timeout=self._timeout,
                )
            except ResourceMetadataError as exc:
                if not self.legacy_discovery or exc.details.get("status") != 404:
                    raise
                found = await self._legacy_discovery()
            self._discovered[self.server_url] = found
        return found

    async def _legacy_discovery(self) -> Discovered:
        """MCP 2025-03-26 servers publish no RFC 9728 metadata: the authorization server is the MCP
        server's origin, with RFC 8414 metadata there or else the default endpoints ``/authorize``,
        ``/token`` and ``/register`` (which that revision required to support PKCE S256)."""
        parts = urlsplit(self.server_url)
        origin = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        try:
            server = await fetch_authorization_server_metadata(
                origin, http_client=self._client(), attempt_timeout=self._timeout
            )
        except AuthorizationServerMetadataError as exc:
            if "statuses" not in exc.details:
                raise  # the metadata exists but is not acceptable: never fall back past it
            server = AuthorizationServerMetadata(
                issuer=origin,
                authorization_endpoint=origin + "/authorize",
                token_endpoint=origin + "/token",
                registration_endpoint=origin + "/register",
                code_challenge_methods_supported=("S256",),
            )
        resource = ResourceMetadata(resource=self.server_url, authorization_servers=(origin,))
        return Discovered(resource=resource, server=server)

    # --- client identification ------------------------------------------------------------------

    async def _client_auth(self, server: AuthorizationServerMetadata) -> ClientAuthentication:
        if self.client_id is not None:
            return client_authentication(
                self.client_id,
                self._secret,
                client_key=self._key_material,
                method=self._auth_method,
                issuer=server.issuer,
            )
        if self.client_metadata_url is not None and server.client_id_metadata_document_supported:
            return NoClientAuthentication(self.client_metadata_url)
        known = self._registered.get(server.issuer)
        if known is not None:
            return known
        if server.registration_endpoint is None:
            raise ClientRegistrationError(
                "no client_id for this authorization server: it supports neither Client ID Metadata "
                "Documents (or none is configured) nor dynamic client registration",
                issuer=server.issuer,
            )
        auth = await self._register(server)
        self._registered[server.issuer] = auth
        return auth

    async def _register(self, server: AuthorizationServerMetadata) -> ClientAuthentication:
        assert server.registration_endpoint is not None
        metadata = {
            "redirect_uris": [self.redirect_uri],
            "grant_types": [AUTHORIZATION_CODE_GRANT, REFRESH_TOKEN_GRANT],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            # SEP-837 / OIDC Registration: a loopback redirect means an app on the user's machine.
            "application_type": "native" if _is_loopback(self.redirect_uri) else "web",
            **self.client_metadata,
        }
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client().post(
                    server.registration_endpoint, json=metadata, headers={"Accept": "application/json"}
                )
                body = await response.aread()
        except (httpx.HTTPError, TimeoutError) as exc:
            raise ClientRegistrationError(
                f"dynamic client registration failed ({type(exc).__name__})", retryable=True
            ) from None
        if response.status_code not in (200, 201) or len(body) > _MAX_REGISTRATION_BYTES:
            raise ClientRegistrationError(
                f"dynamic client registration answered HTTP {response.status_code}",
                status=response.status_code,
            )
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        client_id = data.get("client_id") if isinstance(data, dict) else None
        if not isinstance(client_id, str) or not client_id:
            raise ClientRegistrationError("dynamic client registration returned no client_id")
        assert isinstance(data, dict)
        secret = data.get("client_secret")
        method = data.get("token_endpoint_auth_method")
        if isinstance(secret, str) and secret:
            chosen = (
                method if method in ("client_secret_basic", "client_secret_post") else "client_secret_basic"
            )
            return client_authentication(client_id, secret, method=chosen)
        return NoClientAuthentication(client_id)

    # --- plumbing -----------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"AuthorizationCode(server_url={self.server_url!r}, client_id={self.client_id!r}, "
            f"client_metadata_url={self.client_metadata_url!r}, scopes={list(self.scopes)!r})"
        )
