"""OAuth client authentication at the token endpoint: one small class per method, in a registry.

    auth = client_authentication("my-app", client_secret="s3cr3t")                 # client_secret_basic
    auth = client_authentication("my-app", client_secret="s", method="client_secret_post")
    auth = client_authentication("my-app", client_key=Identity.load("app.jwk"))    # private_key_jwt
    auth.apply(form, headers, token_endpoint="https://idp/token", now=time.time())

``apply`` runs once per attempt (a retry gets a fresh ``private_key_jwt`` assertion with a new
``jti``). ``repr`` never shows the secret or the key. Pure module: no I/O, no httpx.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, MutableMapping
from typing import ClassVar, Protocol
from urllib.parse import quote_plus

from ..errors import ConfigurationError
from ..jose import encode
from ..keys import Identity

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "CLIENT_AUTH_METHODS",
    "ClientAuthentication",
    "ClientSecretBasic",
    "ClientSecretPost",
    "NoClientAuthentication",
    "PrivateKeyJwt",
    "client_authentication",
]

#: RFC 7523 §2.2 client assertion type.
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

Form = MutableMapping[str, "str | list[str]"]


class ClientAuthentication(Protocol):
    """Adds the client's credentials to one token request (form fields and/or headers)."""

    method: ClassVar[str]
    client_id: str

    def apply(
        self, form: Form, headers: MutableMapping[str, str], *, token_endpoint: str, now: float
    ) -> None: ...


def _check_client_id(client_id: str) -> str:
    if not isinstance(client_id, str) or not client_id:
        raise ConfigurationError("client_id must be a non-empty string")
    return client_id


def _check_secret(secret: str | None, method: str) -> str:
    if not isinstance(secret, str) or not secret:
        raise ConfigurationError(f"{method} needs a non-empty client_secret")
    return secret


class ClientSecretBasic:
    """``client_secret_basic`` (RFC 6749 §2.3.1): HTTP Basic over the form-urlencoded id and secret.

    Both are ``application/x-www-form-urlencoded`` *before* base64, as §2.3.1 requires, so ids or
    secrets with ``:``, ``%``, ``+`` or non-ASCII characters round-trip at a conforming server.
    """

    method: ClassVar[str] = "client_secret_basic"
    __slots__ = ("_secret", "client_id")

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = _check_client_id(client_id)
        self._secret = _check_secret(client_secret, self.method)

    def apply(
        self, form: Form, headers: MutableMapping[str, str], *, token_endpoint: str, now: float
    ) -> None:
        userpass = f"{quote_plus(self.client_id, safe='')}:{quote_plus(self._secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(userpass.encode("ascii")).decode("ascii")

    def __repr__(self) -> str:
        return f"ClientSecretBasic(client_id={self.client_id!r})"


class ClientSecretPost:
    """``client_secret_post`` (RFC 6749 §2.3.1): ``client_id`` and ``client_secret`` in the form."""

    method: ClassVar[str] = "client_secret_post"
    __slots__ = ("_secret", "client_id")

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = _check_client_id(client_id)
        self._secret = _check_secret(client_secret, self.method)

    def apply(
        self, form: Form, headers: MutableMapping[str, str], *, token_endpoint: str, now: float
    ) -> None:
        form["client_id"] = self.client_id
        form["client_secret"] = self._secret

    def __repr__(self) -> str:
        return f"ClientSecretPost(client_id={self.client_id!r})"


class PrivateKeyJwt:
    """``private_key_jwt`` (RFC 7523 §2.2, OIDC Core §9): a short-lived JWT signed by the client key.

    Claims: ``iss`` = ``sub`` = client_id, ``aud``, a random ``jti``, ``iat`` and
    ``exp`` = ``iat + lifetime``. Header ``{"alg", "typ": "JWT", "kid"}``.

    ``aud`` (``assertion_audience``): ``"issuer"`` (default) — the authorization server's issuer
    identifier from its RFC 8414 metadata, as draft-ietf-oauth-rfc7523bis and MCP SEP-1046 require (an
    assertion that names only the issuer cannot be replayed at another server's token endpoint that
    accepts its own URL); ``"token_endpoint"`` — the token endpoint URL (the behaviour before 0.2, and
    what Entra ID documents); or an explicit URL.
    """

    method: ClassVar[str] = "private_key_jwt"
    __slots__ = ("_audience", "_identity", "client_id", "lifetime")

    def __init__(
        self,
        client_id: str,
        identity: Identity,
        *,
        lifetime: int = 60,
        issuer: str | None = None,
        assertion_audience: str = "issuer",
    ) -> None:
        self.client_id = _check_client_id(client_id)
        if not isinstance(identity, Identity):
            raise ConfigurationError("private_key_jwt needs client_key=<an Identity>")
        if not 1 <= lifetime <= 300:
            raise ConfigurationError("a client assertion lifetime must be 1..300 seconds")
        self._identity = identity
        self.lifetime = lifetime
        self._audience = _assertion_audience(assertion_audience, issuer)

    @property
    def audience(self) -> str | None:
        """The fixed ``aud`` (the issuer or an explicit URL); ``None`` = the token endpoint."""
        return self._audience

    def assertion(self, token_endpoint: str, now: float) -> str:
        """A fresh client assertion for a request to ``token_endpoint``."""
        iat = int(now)
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self._audience if self._audience is not None else token_endpoint,
            "jti": secrets.token_urlsafe(18),
            "iat": iat,
            "exp": iat + self.lifetime,
        }
        return encode(self._identity, "JWT", claims)

    def apply(
        self, form: Form, headers: MutableMapping[str, str], *, token_endpoint: str, now: float
    ) -> None:
        form["client_id"] = self.client_id
        form["client_assertion_type"] = CLIENT_ASSERTION_TYPE
        form["client_assertion"] = self.assertion(token_endpoint, now)

    def __repr__(self) -> str:
        return (
            f"PrivateKeyJwt(client_id={self.client_id!r}, kid={self._identity.kid!r}, "
            f"aud={self._audience or 'token_endpoint'!r})"
        )


def _assertion_audience(mode: str, issuer: str | None) -> str | None:
    if mode == "token_endpoint":
        return None
    if mode == "issuer":
        if not isinstance(issuer, str) or not issuer:
            raise ConfigurationError(
                "private_key_jwt puts the authorization server's issuer in the assertion's aud: give "
                "issuer=<the AS issuer from its RFC 8414 metadata>, or assertion_audience='token_endpoint' "
                "for servers that want the token endpoint URL"
            )
        return issuer
    if isinstance(mode, str) and mode.startswith(("https://", "http://")):
        return mode
    raise ConfigurationError("assertion_audience must be 'issuer', 'token_endpoint' or an explicit URL")


class NoClientAuthentication:
    """``none``: a public client that only identifies itself with ``client_id`` in the form."""

    method: ClassVar[str] = "none"
    __slots__ = ("client_id",)

    def __init__(self, client_id: str) -> None:
        self.client_id = _check_client_id(client_id)

    def apply(
        self, form: Form, headers: MutableMapping[str, str], *, token_endpoint: str, now: float
    ) -> None:
        form["client_id"] = self.client_id

    def __repr__(self) -> str:
        return f"NoClientAuthentication(client_id={self.client_id!r})"


def _basic(client_id: str, secret: str | None, key: Identity | None, **_: str | None) -> ClientAuthentication:
    _refuse(key, "client_key", ClientSecretBasic.method)
    return ClientSecretBasic(client_id, _check_secret(secret, ClientSecretBasic.method))


def _post(client_id: str, secret: str | None, key: Identity | None, **_: str | None) -> ClientAuthentication:
    _refuse(key, "client_key", ClientSecretPost.method)
    return ClientSecretPost(client_id, _check_secret(secret, ClientSecretPost.method))


def _private_key_jwt(
    client_id: str,
    secret: str | None,
    key: Identity | None,
    *,
    issuer: str | None = None,
    assertion_audience: str | None = None,
) -> ClientAuthentication:
    _refuse(secret, "client_secret", PrivateKeyJwt.method)
    if key is None:
        raise ConfigurationError("private_key_jwt needs client_key=<an Identity>")
    return PrivateKeyJwt(client_id, key, issuer=issuer, assertion_audience=assertion_audience or "issuer")


def _none(client_id: str, secret: str | None, key: Identity | None, **_: str | None) -> ClientAuthentication:
    _refuse(secret, "client_secret", NoClientAuthentication.method)
    _refuse(key, "client_key", NoClientAuthentication.method)
    return NoClientAuthentication(client_id)


def _refuse(value: object, name: str, method: str) -> None:
    # A secret configured but not used is a misconfiguration worth stopping at construction.
    if value is not None:
        raise ConfigurationError(f"{name} is not used by {method}; remove it or pick another method")


#: Method name (RFC 8414 ``token_endpoint_auth_methods_supported`` values) -> constructor.
CLIENT_AUTH_METHODS: dict[str, Callable[..., ClientAuthentication]] = {
    "client_secret_basic": _basic,
    "client_secret_post": _post,
    "private_key_jwt": _private_key_jwt,
    "none": _none,
}


def client_authentication(
    client_id: str,
    client_secret: str | None = None,
    *,
    client_key: Identity | None = None,
    method: str | None = None,
    issuer: str | None = None,
    assertion_audience: str | None = None,
) -> ClientAuthentication:
    """Pick the client authentication for these credentials.

    Without ``method``: ``private_key_jwt`` when ``client_key`` is given, ``client_secret_basic`` when
    ``client_secret`` is, else ``none`` (a public client). ``issuer`` / ``assertion_audience`` set the
    ``private_key_jwt`` assertion's ``aud`` (see :class:`PrivateKeyJwt`).
    """
    if method is None:
        if client_key is not None:
            method = PrivateKeyJwt.method
        elif client_secret is not None:
            method = ClientSecretBasic.method
        else:
            method = NoClientAuthentication.method
    try:
        build = CLIENT_AUTH_METHODS[method]
    except KeyError:
        raise ConfigurationError(
            f"unknown client authentication method {method!r}; use one of {sorted(CLIENT_AUTH_METHODS)}"
        ) from None
    return build(client_id, client_secret, client_key, issuer=issuer, assertion_audience=assertion_audience)
