"""Per-user authorization: where a run gets the user's access token for an MCP server (DESIGN §4).

    from mcpclient_auth.authz import TokenExchange
    source = TokenExchange("https://idp/token", client_id="agent", client_secret=secret,
                           audience="api://mcp", scopes=["mcp.read"])
    token = await source.get_token(Principal(id="alice", subject_token=sso_token))
    token.authorization_header()                    # 'Bearer ...'
    source.invalidate(principal, token=token)       # after a 401 invalid_token; re-obtain once

Sources: :class:`StaticTokens` (a per-user mapping or lookup), :class:`TokenExchange` (RFC 8693),
:class:`EntraOnBehalfOf` (Entra OBO), :class:`ClientCredentials` (a service token),
:class:`JwtBearer` (RFC 7523: workload identity federation, any assertion), :class:`IdJag`
(enterprise-managed authorization: RFC 8693 at the IdP, then jwt-bearer at the MCP authorization
server) and :class:`AuthorizationCode` (PKCE, RFC 9207 ``iss``, RFC 9728 + RFC 8414 discovery, CIMD /
pre-registered / dynamic client registration, refresh). :func:`discover` and
:func:`fetch_authorization_server_metadata` do the discovery on their own. The token-endpoint
sources share a :class:`TokenCache` design: TTL ``expires_in - 30 s``, LRU-bounded, single-flight,
one retry for transient failures, typed errors (:class:`~mcpclient_auth.errors.AuthorizationError`).
Every token-endpoint source takes ``dpop=DPoP(key)`` (RFC 9449, :mod:`.dpop`): proofs at the token
endpoint, DPoP-bound tokens only, cached per key; a run sends them as ``Authorization: DPoP`` with a
fresh proof per request.
"""

from __future__ import annotations

from ._token_request import SIGNING_HOOK_MARKER
from .authorization_code import (
    AUTHORIZATION_CODE_GRANT,
    AuthorizationCode,
    AuthorizationRequest,
    Interaction,
    authorization_request,
    parse_redirect,
    pkce_challenge,
)
from .base import (
    ACCESS_TOKEN_TYPE,
    DEFAULT_SKEW,
    ID_TOKEN_TYPE,
    JWT_TOKEN_TYPE,
    REFRESH_TOKEN_TYPE,
    SAML1_TOKEN_TYPE,
    SAML2_TOKEN_TYPE,
    AccessToken,
    TokenSource,
    normalise_scopes,
)
from .cache import CacheKey, InProcessTokenStore, TokenCache, TokenStore
from .client_auth import (
    CLIENT_AUTH_METHODS,
    ClientAuthentication,
    ClientSecretBasic,
    ClientSecretPost,
    NoClientAuthentication,
    PrivateKeyJwt,
    client_authentication,
)
from .client_credentials import CLIENT_CREDENTIALS_GRANT, ClientCredentials
from .discovery import (
    AuthorizationServerMetadata,
    Discovered,
    check_resource,
    discover,
    fetch_authorization_server_metadata,
    metadata_urls,
    parse_authorization_server_metadata,
    resource_metadata_urls,
)
from .dpop import DPoP, DPoPProof, VerifiedProof, verify_proof
from .entra import JWT_BEARER_GRANT, EntraOnBehalfOf
from .exchange import TOKEN_EXCHANGE_GRANT, TokenExchange
from .id_jag import ID_JAG_TOKEN_TYPE, IdJag
from .jwt_bearer import AssertionProvider, JwtBearer
from .redis_store import RedisTokenStore
from .resource_metadata import ResourceMetadata, fetch_resource_metadata, well_known_metadata_url
from .static import StaticTokens, TokenLookup
from .www_authenticate import BearerChallenge, Challenge, bearer_challenge, parse_challenges

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "AUTHORIZATION_CODE_GRANT",
    "CLIENT_AUTH_METHODS",
    "CLIENT_CREDENTIALS_GRANT",
    "DEFAULT_SKEW",
    "ID_JAG_TOKEN_TYPE",
    "ID_TOKEN_TYPE",
    "JWT_BEARER_GRANT",
    "JWT_TOKEN_TYPE",
    "REFRESH_TOKEN_TYPE",
    "SAML1_TOKEN_TYPE",
    "SAML2_TOKEN_TYPE",
    "SIGNING_HOOK_MARKER",
    "TOKEN_EXCHANGE_GRANT",
    "AccessToken",
    "AssertionProvider",
    "AuthorizationCode",
    "AuthorizationRequest",
    "AuthorizationServerMetadata",
    "BearerChallenge",
    "CacheKey",
    "Challenge",
    "ClientAuthentication",
    "ClientCredentials",
    "ClientSecretBasic",
    "ClientSecretPost",
    "DPoP",
    "DPoPProof",
    "Discovered",
    "EntraOnBehalfOf",
    "IdJag",
    "InProcessTokenStore",
    "Interaction",
    "JwtBearer",
    "NoClientAuthentication",
    "PrivateKeyJwt",
    "RedisTokenStore",
    "ResourceMetadata",
    "StaticTokens",
    "TokenCache",
    "TokenExchange",
    "TokenLookup",
    "TokenSource",
    "TokenStore",
    "VerifiedProof",
    "authorization_request",
    "bearer_challenge",
    "check_resource",
    "client_authentication",
    "discover",
    "fetch_authorization_server_metadata",
    "fetch_resource_metadata",
    "metadata_urls",
    "normalise_scopes",
    "parse_authorization_server_metadata",
    "parse_challenges",
    "parse_redirect",
    "pkce_challenge",
    "resource_metadata_urls",
    "verify_proof",
    "well_known_metadata_url",
]
