"""RFC 7523 §2.1 JWT bearer grant: trade an assertion you can get (a JWT) for an access token.

    # Workload identity federation: the platform's JWT (Kubernetes, a cloud's metadata server, CI)
    source = JwtBearer("https://as.example/token", client_id="agent",
                       assertion=lambda principal: Path("/var/run/secrets/token").read_text().strip(),
                       resource="https://mcp.example.com/mcp", scopes=["mcp.read"])
    token = await source.get_token(Principal(id="agent-workload"))

The request carries ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``, ``assertion`` (from
the callable, called once per token request, sync or async, so a rotating platform token is read fresh),
``scope`` and ``resource`` (RFC 8707, exactly as configured — take it from the server's RFC 9728
metadata; ``get_token(audience=...)`` replaces it, which is how a run passes the resource its RFC 9728
discovery found). Client authentication: ``none`` (``client_id`` in the form, the default without a secret or
key), ``client_secret_basic`` / ``client_secret_post`` or ``private_key_jwt`` (``aud`` = ``issuer``).

Without ``assertion`` the principal's ``subject_token`` is the assertion (an ID-JAG, a user's JWT).
The cache key is (user, endpoint, client, resource, scopes), not the assertion: a new platform token
for the same workload does not cost a new access token while the cached one is fresh. An assertion that
cannot be obtained fails typed (:class:`~mcpclient_auth.errors.AssertionUnavailable`) and is never
logged; an AS refusal is :class:`~mcpclient_auth.errors.TokenExchangeRejected` and is not retried.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import httpx

from ..errors import AssertionUnavailable, ConfigurationError, McpClientAuthError, MissingSubjectToken
from ..keys import Identity
from ..principal import Principal
from ._grant import GrantSource, as_tuple
from ._token_request import DEFAULT_RETRY_BACKOFF, DEFAULT_TIMEOUT
from .base import AccessToken
from .cache import CacheKey, TokenCache
from .dpop import DPoP
from .entra import JWT_BEARER_GRANT

__all__ = ["JWT_BEARER_GRANT", "AssertionProvider", "JwtBearer"]

#: ``principal -> assertion`` (sync or async).
AssertionProvider: TypeAlias = Callable[[Principal], "str | Awaitable[str]"]


class JwtBearer(GrantSource):
    """A :class:`~mcpclient_auth.authz.TokenSource` backed by the RFC 7523 JWT bearer grant."""

    grant_type = JWT_BEARER_GRANT
    what = "jwt-bearer request"

    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        assertion: AssertionProvider | None = None,
        client_key: Identity | None = None,
        auth_method: str | None = None,
        resource: str | Sequence[str] | None = None,
        scopes: str | Sequence[str] | None = None,
        issuer: str | None = None,
        assertion_audience: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        cache: TokenCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
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
        if assertion is not None and not callable(assertion):
            raise ConfigurationError("assertion must be a callable principal -> assertion (sync or async)")
        self._assertion = assertion
        self.resource = as_tuple(resource, "resource")

    def _key(self, principal: Principal, audience: str | None, scopes: Sequence[str] | None) -> CacheKey:
        if not isinstance(principal, Principal):
            raise ConfigurationError("get_token needs a Principal")
        # Without a callable, the user's own assertion is part of the key (a new one = a new grant).
        subject = principal.subject_digest if self._assertion is None else None
        if self._assertion is None and subject is None:
            raise MissingSubjectToken(
                f"principal {principal.id!r} has no assertion (subject token) for the jwt-bearer grant",
                principal=principal.id,
            )
        return CacheKey(
            self.token_endpoint,
            self.grant_type,
            self.client_id,
            principal.id,
            subject,
            None,
            (),
            self.resource if audience is None else as_tuple(audience, "resource"),
            self._scopes(scopes),
        )

    async def _request(self, key: CacheKey, principal: Principal, audience: str | None) -> AccessToken:
        assertion = await self._obtain_assertion(principal)
        return await self._send(key, jwt_bearer_form(assertion, key.resource, key.scopes))

    async def _obtain_assertion(self, principal: Principal) -> str:
        if self._assertion is None:
            assert principal.subject_token is not None  # _key refused principals without one
            return principal.subject_token
        try:
            value = self._assertion(principal)
            if inspect.isawaitable(value):
                value = await value
        except McpClientAuthError:
            raise
        except Exception as exc:
            # User code: its message may quote the credential, so only its type is reported.
            raise AssertionUnavailable(
                f"the assertion provider for principal {principal.id!r} failed ({type(exc).__name__})",
                principal=principal.id,
            ) from None
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            raise AssertionUnavailable(
                f"the assertion provider for principal {principal.id!r} returned no usable assertion",
                principal=principal.id,
            )
        return value

    def __repr__(self) -> str:
        return (
            f"JwtBearer(token_endpoint={self.token_endpoint!r}, client_id={self.client_id!r}, "
            f"auth_method={self.auth_method!r}, resource={list(self.resource)!r}, "
            f"scopes={list(self.scopes)!r})"
        )


def jwt_bearer_form(
    assertion: str, resource: Sequence[str], scopes: Sequence[str]
) -> dict[str, str | list[str]]:
    """The RFC 7523 §2.1 form (plus RFC 8707 ``resource``); pure."""
    form: dict[str, str | list[str]] = {"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
    if scopes:
        form["scope"] = " ".join(scopes)
    if resource:
        form["resource"] = list(resource)
    return form
