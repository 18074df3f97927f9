"""Client authentication methods at the token endpoint (issue [authz], acceptance 7 building blocks)."""

from __future__ import annotations

import base64
import json
from urllib.parse import unquote_plus

import pytest

from mcpclient_auth._encoding import b64url_decode
from mcpclient_auth.authz import (
    ClientSecretBasic,
    ClientSecretPost,
    NoClientAuthentication,
    PrivateKeyJwt,
    client_authentication,
)
from mcpclient_auth.authz.client_auth import CLIENT_ASSERTION_TYPE
from mcpclient_auth.errors import ConfigurationError
from mcpclient_auth.jose import decode
from mcpclient_auth.keys import Identity

ENDPOINT = "https://idp.example.com/oauth2/token"
SECRET = "SECRET-SENTINEL:p+w%d/ é"


def apply(auth: object) -> tuple[dict[str, str | list[str]], dict[str, str]]:
    form: dict[str, str | list[str]] = {"grant_type": "x"}
    headers: dict[str, str] = {}
    auth.apply(form, headers, token_endpoint=ENDPOINT, now=1_700_000_000.0)  # type: ignore[attr-defined]
    return form, headers


def test_basic_form_urlencodes_id_and_secret_before_base64() -> None:
    form, headers = apply(ClientSecretBasic("agent:1 ä", SECRET))
    assert form == {"grant_type": "x"}
    scheme, _, value = headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    decoded = base64.b64decode(value).decode("ascii")  # ASCII only: everything else is %-encoded
    raw_id, raw_secret = decoded.split(":")  # the ':' in the id and secret are encoded: one separator
    assert raw_id == "agent%3A1+%C3%A4"
    assert (unquote_plus(raw_id), unquote_plus(raw_secret)) == ("agent:1 ä", SECRET)


def test_basic_plain_credentials_are_unchanged() -> None:
    _, headers = apply(ClientSecretBasic("agent", "s3cret"))
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"agent:s3cret").decode()


def test_post_puts_the_credentials_in_the_form() -> None:
    form, headers = apply(ClientSecretPost("agent", SECRET))
    assert form == {"grant_type": "x", "client_id": "agent", "client_secret": SECRET}
    assert headers == {}


def test_none_sends_only_the_client_id() -> None:
    form, headers = apply(NoClientAuthentication("public"))
    assert form == {"grant_type": "x", "client_id": "public"} and headers == {}


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_private_key_jwt_assertion(alg: str) -> None:
    key = Identity.generate(alg, name="client-key")
    auth = PrivateKeyJwt("agent", key, assertion_audience="token_endpoint")  # the pre-0.2 behaviour
    form, headers = apply(auth)
    assert headers == {}
    assert form["client_id"] == "agent"
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assertion = form["client_assertion"]
    assert isinstance(assertion, str)
    jws = decode(assertion)
    assert key.public.verify(jws.signing_input, jws.signature)
    assert jws.header == {"alg": alg, "typ": "JWT", "kid": key.kid}
    claims = jws.claims
    assert claims["iss"] == claims["sub"] == "agent"
    assert claims["aud"] == ENDPOINT
    assert claims["iat"] == 1_700_000_000 and claims["exp"] == 1_700_000_060
    second, _ = apply(auth)
    other = json.loads(b64url_decode(str(second["client_assertion"]).split(".")[1]))
    assert other["jti"] != claims["jti"]


def test_the_factory_picks_the_method() -> None:
    key = Identity.generate()
    assert isinstance(client_authentication("c", "s"), ClientSecretBasic)
    assert isinstance(client_authentication("c", "s", method="client_secret_post"), ClientSecretPost)
    assert isinstance(client_authentication("c", client_key=key, issuer="https://as.example"), PrivateKeyJwt)
    assert isinstance(client_authentication("c"), NoClientAuthentication)


@pytest.mark.parametrize(
    ("secret", "with_key", "method"),
    [
        ("s", True, None),  # a secret and a key: ambiguous
        (None, False, "client_secret_basic"),
        ("", False, "client_secret_post"),
        (None, False, "private_key_jwt"),
        ("s", False, "none"),
        ("s", False, "tls_client_auth"),
    ],
)
def test_the_factory_refuses_contradictions(secret: str | None, with_key: bool, method: str | None) -> None:
    key = Identity.generate() if with_key else None
    with pytest.raises(ConfigurationError):
        client_authentication("c", secret, client_key=key, method=method)


def test_reprs_hide_the_secret_and_key() -> None:
    key = Identity.generate()
    pkj = PrivateKeyJwt("c", key, issuer="https://as.example")
    for auth in (ClientSecretBasic("c", SECRET), ClientSecretPost("c", SECRET), pkj):
        assert "SECRET-SENTINEL" not in repr(auth)
        assert str(key.private_jwk()["d"]) not in repr(auth)
        assert "'c'" in repr(auth)


def _aud(auth: PrivateKeyJwt) -> object:
    form, _ = apply(auth)
    return decode(str(form["client_assertion"])).claims["aud"]


def test_private_key_jwt_aud_is_the_issuer_by_default() -> None:
    # SEP-1046 / draft-ietf-oauth-rfc7523bis: the AS issuer, not the endpoint the assertion is sent to.
    key = Identity.generate()
    assert _aud(PrivateKeyJwt("agent", key, issuer="https://as.example/tenant")) == "https://as.example/tenant"
    via_factory = client_authentication("agent", client_key=key, issuer="https://as.example")
    assert isinstance(via_factory, PrivateKeyJwt) and _aud(via_factory) == "https://as.example"


def test_private_key_jwt_aud_old_behaviour_and_explicit_url_are_selectable() -> None:
    key = Identity.generate()
    assert _aud(PrivateKeyJwt("agent", key, assertion_audience="token_endpoint")) == ENDPOINT
    explicit = PrivateKeyJwt("agent", key, issuer="https://ignored", assertion_audience="https://aud.example")
    assert _aud(explicit) == "https://aud.example"


def test_private_key_jwt_without_an_issuer_fails_closed() -> None:
    # No silent fallback to the token endpoint: the caller says which aud the server wants.
    key = Identity.generate()
    with pytest.raises(ConfigurationError, match="issuer"):
        PrivateKeyJwt("agent", key)
    with pytest.raises(ConfigurationError, match="issuer"):
        client_authentication("agent", client_key=key)
    with pytest.raises(ConfigurationError):
        PrivateKeyJwt("agent", key, issuer="https://as.example", assertion_audience="nonsense")
