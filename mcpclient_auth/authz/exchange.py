"""RFC 8693 OAuth 2.0 Token Exchange: trade the user's token for one meant for the MCP server.

    source = TokenExchange(
        "https://idp.example.com/oauth2/default/v1/token",
        client_id="agent-app", client_secret=secret,          # client_secret_basic by default
        audience="api://mcp", scopes=["mcp.read"],
    )
    token = await source.get_token(Principal(id="alice", subject_token=sso_access_token))

The request (RFC 8693 §2.1) carries ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``,
``subject_token`` and ``subject_token_type`` from the :class:`~mcpclient_auth.principal.Principal`,
``actor_token``/``actor_token_type`` (the principal's, else the source's), ``audience`` and
``resource`` (repeatable), ``scope`` (space-joined) and ``requested_token_type``. Client
authentication: ``client_secret_basic`` | ``client_secret_post`` | ``private_key_jwt`` | ``none``.
The response must carry ``issued_token_type`` (RFC 8693 §2.2.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from ..errors import ConfigurationError, MissingSubjectToken
from ..keys import Identity
from ..principal import ACCESS_TOKEN_TYPE, Principal, token_digest
from ._grant import GrantSource, as_tuple
from ._token_request import DEFAULT_RETRY_BACKOFF, DEFAULT_TIMEOUT
from .cache import CacheKey, TokenCache
from .dpop import DPoP

__all__ = ["TOKEN_EXCHANGE_GRANT", "TokenExchange"]

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"


class TokenExchange(GrantSource):
    """A per-user :class:`~mcpclient_auth.authz.TokenSource` backed by RFC 8693 token exchange.

    ``audience`` passed to :meth:`get_token` replaces the configured ``audience``; ``scopes`` replace
    the configured scopes. One cache entry per (user, subject token, actor, audience, resource,
    scopes); the subject token itself is only ever held by the :class:`Principal`.
    """

    grant_type = TOKEN_EXCHANGE_GRANT
    what = "token exchange"
    require_issued_token_type = True

    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        client_key: Identity | None = None,
        auth_method: str | None = None,
        audience: str | Sequence[str] | None = None,
        resource: str | Sequence[str] | None = None,
        scopes: str | Sequence[str] | None = None,
        requested_token_type: str | None = None,
        actor_token: str | None = None,
        actor_token_type: str | None = None,
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
        if requested_token_type is not None and not (
            isinstance(requested_token_type, str) and requested_token_type
        ):
            raise ConfigurationError("requested_token_type must be a token-type URN")
        self.requested_token_type = requested_token_type
        if actor_token_type is not None and actor_token is None:
            raise ConfigurationError("actor_token_type given without an actor_token")
        if actor_token is not None and (not isinstance(actor_token, str) or not actor_token):
            raise ConfigurationError("actor_token must be a non-empty string")
        self._actor_token = actor_token
        self._actor_digest = token_digest(actor_token) if actor_token is not None else None
        self._actor_type = actor_token_type or ACCESS_TOKEN_TYPE

    def _key(self, principal: Principal, audience: str | None, scopes: Sequence[str] | None) -> CacheKey:
        if not isinstance(principal, Principal):
            raise ConfigurationError("get_token needs a Principal")
        subject = principal.subject_digest
        if subject is None:
            raise MissingSubjectToken(
                f"principal {principal.id!r} has no subject token to exchange", principal=principal.id
            )
        actor_type: str | None = None
        if principal.actor_token is not None:
            actor: str | None = token_digest(principal.actor_token)
            actor_type = principal.actor_token_type or ACCESS_TOKEN_TYPE
        else:
            actor = self._actor_digest
            if actor is not None:
                actor_type = self._actor_type
        return CacheKey(
            self.token_endpoint,
            self.grant_type,
            self.client_id,
            principal.id,
            subject,
            actor,
            self.audience if audience is None else as_tuple(audience, "audience"),
            self.resource,
            self._scopes(scopes),
            self.requested_token_type,
            principal.subject_token_type,
            actor_type,
        )

    def _form(self, principal: Principal, key: CacheKey, audience: str | None) -> dict[str, str | list[str]]:
        assert principal.subject_token is not None  # _key refused principals without one
        form: dict[str, str | list[str]] = {
            "grant_type": self.grant_type,
            "subject_token": principal.subject_token,
            "subject_token_type": principal.subject_token_type,
        }
        if principal.actor_token is not None:
            form["actor_token"] = principal.actor_token
            form["actor_token_type"] = principal.actor_token_type or ACCESS_TOKEN_TYPE
        elif self._actor_token is not None:
            form["actor_token"] = self._actor_token
            form["actor_token_type"] = self._actor_type
        if key.audience:
            form["audience"] = list(key.audience)
        if key.resource:
            form["resource"] = list(key.resource)
        if key.scopes:
            form["scope"] = " ".join(key.scopes)
        if self.requested_token_type is not None:
            form["requested_token_type"] = self.requested_token_type
        return form

    def _expected_issued_token_type(self) -> str | None:
        return self.requested_token_type
