"""Microsoft Entra ID on-behalf-of (OBO): the user's token as a JWT-bearer assertion.

    source = EntraOnBehalfOf(
        client_id="11111111-...", client_secret=secret, tenant="contoso.onmicrosoft.com",
        scopes=["api://mcp-server/.default"],
    )
    token = await source.get_token(Principal(id="alice", subject_token=user_access_token))

The request carries ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``, ``client_id``,
``assertion`` (the principal's subject token), ``requested_token_use=on_behalf_of`` and ``scope``
(space-joined). Entra has no ``audience`` parameter: the resource is the prefix of the scopes, so
``get_token(audience="api://x")`` without scopes asks for ``api://x/.default``, and scopes that do not
belong to the requested audience are refused rather than silently sent.

The token endpoint is ``{authority}/{tenant}/oauth2/v2.0/token`` or an explicit ``token_endpoint``.
With a client secret and no ``auth_method`` the secret goes in the form (``client_secret_post``,
as Entra documents it); ``client_secret_basic`` and ``private_key_jwt`` work too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import httpx

from ..errors import ConfigurationError, MissingSubjectToken
from ..keys import Identity
from ..principal import Principal
from ._grant import GrantSource, as_tuple
from ._token_request import DEFAULT_RETRY_BACKOFF, DEFAULT_TIMEOUT, check_endpoint
from .base import normalise_scopes
from .cache import CacheKey, TokenCache
from .dpop import DPoP

__all__ = ["DEFAULT_AUTHORITY", "JWT_BEARER_GRANT", "EntraOnBehalfOf"]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
# Tenant ids are GUIDs or domain names; nothing that could add path segments or a query.
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,253}")
# OpenID scopes that Entra accepts beside resource scopes without naming a resource.
_OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})


class EntraOnBehalfOf(GrantSource):
    """A per-user :class:`~mcpclient_auth.authz.TokenSource` backed by Entra's OBO flow."""

    grant_type = JWT_BEARER_GRANT
    what = "on-behalf-of request"

    def __init__(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        tenant: str | None = None,
        authority: str = DEFAULT_AUTHORITY,
        token_endpoint: str | None = None,
        client_key: Identity | None = None,
        auth_method: str | None = None,
        scopes: str | Sequence[str] | None = None,
        http_client: httpx.AsyncClient | None = None,
        cache: TokenCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        issuer: str | None = None,
        assertion_audience: str | None = "token_endpoint",
        dpop: DPoP | None = None,
    ) -> None:
        if auth_method is None and client_secret is not None and client_key is None:
            auth_method = "client_secret_post"
        super().__init__(
            token_endpoint=_endpoint(tenant, authority, token_endpoint),
            client_id=client_id,
            client_secret=client_secret,
            client_key=client_key,
            auth_method=auth_method,
            scopes=scopes,
            http_client=http_client,
            cache=cache,
            timeout=timeout,
            retry_backoff=retry_backoff,
            issuer=issuer,
            assertion_audience=assertion_audience,
            dpop=dpop,
        )

    def _key(self, principal: Principal, audience: str | None, scopes: Sequence[str] | None) -> CacheKey:
        if not isinstance(principal, Principal):
            raise ConfigurationError("get_token needs a Principal")
        subject = principal.subject_digest
        if subject is None:
            raise MissingSubjectToken(
                f"principal {principal.id!r} has no user token for the on-behalf-of assertion",
                principal=principal.id,
            )
        return CacheKey(
            self.token_endpoint,
            self.grant_type,
            self.client_id,
            principal.id,
            subject,
            None,
            () if audience is None else as_tuple(audience, "audience"),
            (),
            self._entra_scopes(audience, scopes),
        )

    def _entra_scopes(self, audience: str | None, scopes: Sequence[str] | None) -> tuple[str, ...]:
        if audience is None:
            chosen = self._scopes(scopes)
        else:
            resource = audience.rstrip("/")
            chosen = (f"{resource}/.default",) if scopes is None else normalise_scopes(scopes)
            foreign = [s for s in chosen if s not in _OIDC_SCOPES and not s.startswith(resource + "/")]
            if foreign:
                raise ConfigurationError(
                    f"scopes {foreign!r} do not belong to the requested audience {audience!r}"
                )
        if not chosen:
            raise ConfigurationError("Entra on-behalf-of needs scopes (e.g. 'api://<app>/.default')")
        return chosen

    def _form(self, principal: Principal, key: CacheKey, audience: str | None) -> dict[str, str | list[str]]:
        assert principal.subject_token is not None  # _key refused principals without one
        return {
            "grant_type": self.grant_type,
            "client_id": self.client_id,
            "assertion": principal.subject_token,
            "requested_token_use": "on_behalf_of",
            "scope": " ".join(key.scopes),
        }


def _endpoint(tenant: str | None, authority: str, token_endpoint: str | None) -> str:
    if token_endpoint is not None:
        if tenant is not None:
            raise ConfigurationError("give either tenant (with authority) or token_endpoint, not both")
        return token_endpoint
    if tenant is None:
        raise ConfigurationError("EntraOnBehalfOf needs tenant=... or token_endpoint=...")
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise ConfigurationError("tenant must be a tenant id (GUID) or domain name")
    base = check_endpoint(authority, "authority").rstrip("/")
    return f"{base}/{tenant}/oauth2/v2.0/token"
