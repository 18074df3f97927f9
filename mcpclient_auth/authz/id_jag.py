"""Enterprise-managed authorization (ID-JAG, draft-ietf-oauth-identity-assertion-authz-grant; MCP SEP-990).

    source = IdJag(
        idp_token_endpoint="https://idp.example.com/oauth2/token", idp_client_id="agent-at-idp",
        idp_client_secret=idp_secret,
        token_endpoint="https://as.mcp.example.com/token",   # the MCP server's authorization server
        issuer="https://as.mcp.example.com",                 # its RFC 8414 issuer (ID-JAG audience)
        client_id="agent-at-as", client_secret=as_secret,
        resource="https://mcp.example.com/mcp",              # exactly as the server's RFC 9728 metadata says
        scopes=["mcp.read"],
    )
    token = await source.get_token(Principal(id="alice", subject_token=id_token,
                                             subject_token_type=ID_TOKEN_TYPE))

Two legs per token, both through the shared token request machinery (one retry when transient, typed
errors, nothing secret in any message):

1. RFC 8693 token exchange **at the enterprise IdP**: ``requested_token_type=
   urn:ietf:params:oauth:token-type:id-jag``, ``audience`` = the MCP authorization server's issuer,
   ``resource`` = the MCP server, ``scope``, and the user's ``subject_token`` (usually the ID token).
   The answer must say ``issued_token_type`` = id-jag; it is the Identity Assertion JWT Authorization
   Grant, used once and never cached or logged.
2. RFC 7523 jwt-bearer **at the MCP authorization server** with the ID-JAG as ``assertion`` (plus
   ``resource`` and ``scope``), authenticated as the client registered there; with ``dpop=``, this
   request carries the DPoP proof and the access token must come back DPoP-bound (RFC 9449).

The access token is cached per (user, subject token, IdP, issuer, resource, scopes); concurrent misses
share one pair of requests (single-flight).
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from ..errors import ConfigurationError, MissingSubjectToken
from ..keys import Identity
from ..principal import Principal
from ._grant import OwnsIdpClient, as_tuple, bind_key, check_binding, check_dpop
from ._token_request import (
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_TIMEOUT,
    check_endpoint,
    request_token,
)
from .base import AccessToken, normalise_scopes
from .cache import CacheKey, TokenCache
from .client_auth import ClientAuthentication, client_authentication
from .dpop import DPoP
from .exchange import TOKEN_EXCHANGE_GRANT
from .jwt_bearer import jwt_bearer_form

__all__ = ["ID_JAG_GRANT", "ID_JAG_TOKEN_TYPE", "IdJag"]

ID_JAG_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id-jag"
#: The cache key's ``grant``: both legs together.
ID_JAG_GRANT = "id-jag+" + "urn:ietf:params:oauth:grant-type:jwt-bearer"


class IdJag(OwnsIdpClient):
    """A per-user :class:`~mcpclient_auth.authz.TokenSource` doing both ID-JAG legs (module docstring).

    ``get_token(audience=...)`` replaces the configured ``resource`` (a run passes the resource its
    RFC 9728 discovery found); ``scopes`` replace the configured scopes.
    """

    def __init__(
        self,
        *,
        idp_token_endpoint: str,
        idp_client_id: str,
        token_endpoint: str,
        issuer: str,
        client_id: str,
        resource: str | Sequence[str],
        idp_client_secret: str | None = None,
        idp_client_key: Identity | None = None,
        idp_auth_method: str | None = None,
        idp_issuer: str | None = None,
        client_secret: str | None = None,
        client_key: Identity | None = None,
        auth_method: str | None = None,
        scopes: str | Sequence[str] | None = None,
        http_client: httpx.AsyncClient | None = None,
        cache: TokenCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        dpop: DPoP | None = None,
    ) -> None:
        self.dpop = check_dpop(dpop)
        self.idp_token_endpoint = check_endpoint(idp_token_endpoint, "idp_token_endpoint")
        self.token_endpoint = check_endpoint(token_endpoint)
        self.issuer = check_endpoint(issuer, "issuer")
        self.client_id = client_id
        self.idp_client_id = idp_client_id
        self._idp_auth: ClientAuthentication = client_authentication(
            idp_client_id,
            idp_client_secret,
            client_key=idp_client_key,
            method=idp_auth_method,
            issuer=idp_issuer,
        )
        self._as_auth: ClientAuthentication = client_authentication(
            client_id, client_secret, client_key=client_key, method=auth_method, issuer=issuer
        )
        self.resource = as_tuple(resource, "resource")
        if not self.resource:
            raise ConfigurationError(
                "IdJag needs resource=<the MCP server, as its RFC 9728 metadata names it>"
            )
        self.scopes: tuple[str, ...] = normalise_scopes(scopes)
        self.cache = cache if cache is not None else TokenCache()
        self._init_http(http_client)
        if timeout <= 0 or retry_backoff < 0:
            raise ConfigurationError("timeout must be positive and retry_backoff not negative")
        self._timeout = float(timeout)
        self._retry_backoff = float(retry_backoff)

    # --- the TokenSource protocol -------------------------------------------------------------------

    async def get_token(
        self,
        principal: Principal,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
    ) -> AccessToken:
        """The principal's access token at the MCP authorization server (cache, else both legs)."""
        key = self._key(principal, audience, scopes)
        token = self.cache.get(key)
        if token is None:
            token = await self.cache.join(key, self._both_legs, key, principal)
        return check_binding(token, self.dpop)

    def invalidate(
        self,
        principal: Principal,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
        *,
        token: AccessToken | None = None,
    ) -> None:
        """Forget the cached access token for these arguments (only ``token``, when given)."""
        self.cache.invalidate(self._key(principal, audience, scopes), token=token)

    def _key(self, principal: Principal, audience: str | None, scopes: Sequence[str] | None) -> CacheKey:
        if not isinstance(principal, Principal):
            raise ConfigurationError("get_token needs a Principal")
        if principal.subject_digest is None:
            raise MissingSubjectToken(
                f"principal {principal.id!r} has no subject token (ID token) for the ID-JAG exchange",
                principal=principal.id,
            )
        key = CacheKey(
            self.token_endpoint,
            ID_JAG_GRANT,
            self.client_id,
            principal.id,
            principal.subject_digest,
            self.idp_token_endpoint,  # the IdP that vouches for the user is part of what was granted
            (self.issuer,),
            self.resource if audience is None else as_tuple(audience, "resource"),
            self.scopes if scopes is None else normalise_scopes(scopes),
        )
        return bind_key(key, self.dpop)

    # --- the two legs -----------------------------------------------------------------------------

    async def _both_legs(self, key: CacheKey, principal: Principal) -> AccessToken:
        assert principal.subject_token is not None  # _key refused principals without one
        client = self._client()
        leg1: dict[str, str | list[str]] = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "requested_token_type": ID_JAG_TOKEN_TYPE,
            "audience": self.issuer,
            "resource": list(key.resource),
            "subject_token": principal.subject_token,
            "subject_token_type": principal.subject_token_type,
        }
        if key.scopes:
            leg1["scope"] = " ".join(key.scopes)
        grant = await request_token(
            client,
            self.idp_token_endpoint,
            leg1,
            self._idp_auth,
            now=self.cache.clock,
            requested_scopes=key.scopes,
            expected_issued_token_type=ID_JAG_TOKEN_TYPE,
            require_issued_token_type=True,
            retry_backoff=self._retry_backoff,
            attempt_timeout=self._timeout,
            what="ID-JAG token exchange",
        )
        return await request_token(
            client,
            self.token_endpoint,
            jwt_bearer_form(grant.token, key.resource, key.scopes),
            self._as_auth,
            now=self.cache.clock,
            requested_scopes=key.scopes,
            retry_backoff=self._retry_backoff,
            attempt_timeout=self._timeout,
            what="ID-JAG jwt-bearer request",
            dpop=self.dpop,  # leg 2 only: the ID-JAG itself is an assertion, not an access token
        )

    def __repr__(self) -> str:
        return (
            f"IdJag(idp_token_endpoint={self.idp_token_endpoint!r}, issuer={self.issuer!r}, "
            f"client_id={self.client_id!r}, resource={list(self.resource)!r}, scopes={list(self.scopes)!r})"
        )
