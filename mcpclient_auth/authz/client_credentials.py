"""OAuth client credentials (RFC 6749 §4.4): a service token, the same for every user.

    service = ClientCredentials("https://idp/token", client_id="agent", client_secret=secret,
                                scopes=["mcp.tools.list"])
    token = await service.get_token()            # the principal argument is accepted and ignored

Meant for service work such as tool discovery, beside a per-user source for tool calls (as watsonx
Orchestrate does it); the two must never be mixed within one MCP session. The cache key ignores the
principal, so every user shares the one service token, which is the point.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from ..keys import Identity
from ..principal import Principal
from ._grant import GrantSource, as_tuple, bind_key, check_binding
from ._token_request import DEFAULT_RETRY_BACKOFF, DEFAULT_TIMEOUT
from .base import AccessToken
from .cache import CacheKey, TokenCache
from .dpop import DPoP

__all__ = ["CLIENT_CREDENTIALS_GRANT", "ClientCredentials"]

CLIENT_CREDENTIALS_GRANT = "client_credentials"


class ClientCredentials(GrantSource):
    """A service :class:`~mcpclient_auth.authz.TokenSource` (not per user).

    ``audience`` (sent as the ``audience`` parameter that Auth0 and Okta use) and ``resource``
    (RFC 8707) are optional; ``get_token(audience=...)`` replaces the configured audience.
    """

    grant_type = CLIENT_CREDENTIALS_GRANT
    what = "client credentials request"

    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        client_key: Identity | None = None,
        auth_method: str | None = None,
        scopes: str | Sequence[str] | None = None,
        audience: str | Sequence[str] | None = None,
        resource: str | Sequence[str] | None = None,
        http_client: httpx.AsyncClient | None = None,
        cache: TokenCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        issuer: str | None = None,
        assertion_audience: str | None = None,
        dpop: DPoP | None = None,
    ) -> None:
        super().__init__(
            token_endpoint=token_endpoint,
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
        self.audience = as_tuple(audience, "audience")
        self.resource = as_tuple(resource, "resource")

    async def get_token(  # the principal is optional (and ignored) here
        self,
        principal: Principal | None = None,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
    ) -> AccessToken:
        """The service token for ``audience``/``scopes`` (``principal`` is ignored)."""
        key = self._service_key(audience, scopes)
        token = self.cache.get(key)
        if token is None:
            token = await self.cache.join(key, self._request_service, key)
        return check_binding(token, self.dpop)

    def invalidate(
        self,
        principal: Principal | None = None,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
        *,
        token: AccessToken | None = None,
    ) -> None:
        """Forget the cached service token for these arguments (only ``token``, when given)."""
        self.cache.invalidate(self._service_key(audience, scopes), token=token)

    def _service_key(self, audience: str | None, scopes: Sequence[str] | None) -> CacheKey:
        return bind_key(self._bare_service_key(audience, scopes), self.dpop)

    def _bare_service_key(self, audience: str | None, scopes: Sequence[str] | None) -> CacheKey:
        return CacheKey(
            self.token_endpoint,
            self.grant_type,
            self.client_id,
            None,
            None,
            None,
            self.audience if audience is None else as_tuple(audience, "audience"),
            self.resource,
            self._scopes(scopes),
        )

    def _key(self, principal: Principal, audience: str | None, scopes: Sequence[str] | None) -> CacheKey:
        return self._bare_service_key(audience, scopes)  # GrantSource binds it to the DPoP key

    def _form(self, principal: Principal, key: CacheKey, audience: str | None) -> dict[str, str | list[str]]:
        return self._service_form(key)

    def _service_form(self, key: CacheKey) -> dict[str, str | list[str]]:
        form: dict[str, str | list[str]] = {"grant_type": self.grant_type}
        if key.scopes:
            form["scope"] = " ".join(key.scopes)
        if key.audience:
            form["audience"] = list(key.audience)
        if key.resource:
            form["resource"] = list(key.resource)
        return form

    async def _request_service(self, key: CacheKey) -> AccessToken:
        return await self._send(key, self._service_form(key))
