"""The machinery shared by the sources that call a token endpoint (exchange, OBO, client credentials).

A subclass says how to build the form and the cache key; this class owns the HTTP client, the cache,
single-flight and the request. ``get_token`` on a cache hit is one key build and one dict lookup.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import ClassVar, Self

import httpx

from ..errors import ConfigurationError, DPoPNotBound, InvalidTokenResponse
from ..keys import Identity
from ..principal import Principal
from ._token_request import (
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_TIMEOUT,
    FormData,
    check_endpoint,
    check_idp_client,
    default_http_client,
    request_token,
)
from .base import AccessToken, normalise_scopes
from .cache import CacheKey, TokenCache
from .client_auth import ClientAuthentication, client_authentication
from .dpop import DPoP

__all__ = ["GrantSource", "as_tuple", "bind_key", "check_binding", "check_dpop"]


def check_dpop(dpop: DPoP | None) -> DPoP | None:
    """The ``dpop=`` option of a source: ``None`` or a :class:`~mcpclient_auth.authz.dpop.DPoP`."""
    if dpop is not None and not isinstance(dpop, DPoP):
        raise ConfigurationError("dpop must be a DPoP (mcpclient_auth.authz.DPoP), e.g. DPoP(agent)")
    return dpop


def bind_key(key: CacheKey, dpop: DPoP | None) -> CacheKey:
    """``key`` for a token bound to ``dpop``'s key (unchanged for bearer tokens)."""
    return key if dpop is None else key.bound_to(dpop.thumbprint)


def check_binding(token: AccessToken, dpop: DPoP | None) -> AccessToken:
    """A token (fresh or cached, possibly from a shared store) is of the kind asked for: DPoP-bound
    when the source proves with a key, bearer otherwise. The cache key already separates them; this
    holds even for a store that mixed them up."""
    if dpop is not None and not token.dpop_bound:
        raise DPoPNotBound("a token for a DPoP source is not DPoP-bound", field="token_type")
    if dpop is None and token.dpop_bound:
        raise InvalidTokenResponse("a DPoP-bound token for a source without a DPoP key", field="token_type")
    return token


def as_tuple(value: str | Sequence[str] | None, what: str) -> tuple[str, ...]:
    """``None`` -> ``()``, a string -> ``(s,)``, a sequence of non-empty strings -> a tuple."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(item, str) and item for item in items):
        raise ConfigurationError(f"{what} must be a non-empty string or a sequence of them")
    return items


class OwnsIdpClient:
    """The HTTP client a token source talks to its IdP with: the caller's, or one it owns per event loop.

    Shared by every source (``GrantSource``, ``IdJag``, ``AuthorizationCode``) so the loop rule and the
    close rule live in one place. A source calls :meth:`_init_http` from its ``__init__``.
    """

    _http: httpx.AsyncClient | None
    _owns_http: bool
    _http_loop: asyncio.AbstractEventLoop | None
    _other_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]

    def _init_http(self, http_client: httpx.AsyncClient | None) -> None:
        self._http = check_idp_client(http_client) if http_client is not None else None
        self._owns_http = http_client is None
        self._http_loop = None
        # Clients for other loops that are still alive: a source serving an async client's loop and
        # the token loop of sync clients (:mod:`._blocking`) keeps one client per loop, instead of
        # replacing (and orphaning) the other loop's client on every switch.
        self._other_loops = weakref.WeakKeyDictionary()

    def _client(self) -> httpx.AsyncClient:
        if not self._owns_http:
            assert self._http is not None
            return self._http
        # An httpx connection pool belongs to the event loop that opened it. A source that outlives
        # its loop (several asyncio.run() calls, per-test loops) gets a fresh client for the new one.
        loop = asyncio.get_running_loop()
        if self._http is not None and self._http_loop is loop:
            return self._http
        if self._http is not None and self._http_loop is not None and not self._http_loop.is_closed():
            self._other_loops[self._http_loop] = self._http
        self._http = self._other_loops.pop(loop, None) or default_http_client()
        self._http_loop = loop
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP client this source created (a client passed in is left to its owner)."""
        if self._owns_http and self._http is not None:
            client, self._http = self._http, None
            if self._http_loop is asyncio.get_running_loop():  # else its loop is gone with its sockets
                await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class GrantSource(OwnsIdpClient):
    """Base of the token-endpoint sources. Not a public class: use the subclasses.

    Subclasses set ``grant_type`` and implement :meth:`_key` and :meth:`_form`. ``audience`` and
    ``scopes`` given to ``get_token`` replace the configured defaults. ``issuer`` (the authorization
    server's RFC 8414 issuer) is the ``aud`` of ``private_key_jwt`` client assertions;
    ``assertion_audience="token_endpoint"`` selects the token endpoint URL instead (the behaviour
    before 0.2; :class:`~mcpclient_auth.authz.EntraOnBehalfOf` keeps it as its default, as Entra
    documents it). ``dpop`` (a :class:`~mcpclient_auth.authz.DPoP`): every token request carries a
    proof and the token must come back DPoP-bound (RFC 9449 §5); the cache key names the key.
    """

    grant_type: ClassVar[str]
    #: What error messages call the request (``"token exchange"``, ...).
    what: ClassVar[str] = "token request"
    require_issued_token_type: ClassVar[bool] = False

    def __init__(
        self,
        *,
        token_endpoint: str,
        client_id: str,
        client_secret: str | None = None,
        client_key: Identity | None = None,
        auth_method: str | None = None,
        scopes: str | Sequence[str] | None = None,
        http_client: httpx.AsyncClient | None = None,
        cache: TokenCache | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        issuer: str | None = None,
        assertion_audience: str | None = None,
        dpop: DPoP | None = None,
    ) -> None:
        self.token_endpoint = check_endpoint(token_endpoint)
        self.dpop = check_dpop(dpop)
        self.issuer = issuer
        self._client_auth: ClientAuthentication = client_authentication(
            client_id,
            client_secret,
            client_key=client_key,
            method=auth_method,
            issuer=issuer,
            assertion_audience=assertion_audience,
        )
        self.client_id = client_id
        self.scopes: tuple[str, ...] = normalise_scopes(scopes)
        self._init_http(http_client)
        self.cache = cache if cache is not None else TokenCache()
        if timeout <= 0 or retry_backoff < 0:
            raise ConfigurationError("timeout must be positive and retry_backoff not negative")
        self._timeout = float(timeout)
        self._retry_backoff = float(retry_backoff)

    @property
    def auth_method(self) -> str:
        """The client authentication method in use (``client_secret_basic``, ...)."""
        return self._client_auth.method

    # --- the TokenSource protocol -----------------------------------------------------------------

    async def get_token(
        self,
        principal: Principal,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
    ) -> AccessToken:
        """The principal's token for ``audience``/``scopes``, from cache or from the token endpoint."""
        key = bind_key(self._key(principal, audience, scopes), self.dpop)
        token = self.cache.get(key)
        if token is None:
            token = await self.cache.join(key, self._request, key, principal, audience)
        check_binding(token, self.dpop)
        expected = key.requested_token_type
        if expected is not None and token.issued_token_type != expected:
            # A cached (possibly shared) token is checked like a fresh response: never hand out a
            # token of another type than the one asked for.
            raise InvalidTokenResponse(
                "a cached token is of a different type than requested", field="issued_token_type"
            )
        return token

    def invalidate(
        self,
        principal: Principal,
        audience: str | None = None,
        scopes: Sequence[str] | None = None,
        *,
        token: AccessToken | None = None,
    ) -> None:
        """Forget the cached token for these arguments (only ``token``, when given)."""
        self.cache.invalidate(bind_key(self._key(principal, audience, scopes), self.dpop), token=token)

    # --- subclass hooks ---------------------------------------------------------------------------

    def _key(self, principal: Principal, audience: str | None, scopes: Sequence[str] | None) -> CacheKey:
        raise NotImplementedError

    def _form(self, principal: Principal, key: CacheKey, audience: str | None) -> dict[str, str | list[str]]:
        raise NotImplementedError

    def _scopes(self, scopes: Sequence[str] | None) -> tuple[str, ...]:
        # The common case (defaults) costs nothing; explicit scopes are validated and sorted.
        return self.scopes if scopes is None else normalise_scopes(scopes)

    # --- the request ------------------------------------------------------------------------------

    async def _request(self, key: CacheKey, principal: Principal, audience: str | None) -> AccessToken:
        return await self._send(key, self._form(principal, key, audience))

    async def _send(self, key: CacheKey, form: FormData) -> AccessToken:
        return await request_token(
            self._client(),
            self.token_endpoint,
            form,
            self._client_auth,
            now=self.cache.clock,
            requested_scopes=key.scopes,
            expected_issued_token_type=self._expected_issued_token_type(),
            require_issued_token_type=self.require_issued_token_type,
            retry_backoff=self._retry_backoff,
            attempt_timeout=self._timeout,
            what=self.what,
            dpop=self.dpop,
        )

    def _expected_issued_token_type(self) -> str | None:
        return None


    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(token_endpoint={self.token_endpoint!r}, client_id={self.client_id!r}, "
            f"auth_method={self.auth_method!r}, scopes={list(self.scopes)!r})"
        )
