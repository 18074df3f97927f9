"""AccessToken, scope normalisation and the TokenSource protocol (issue [authz])."""

from __future__ import annotations

import pytest

from mcpclient_auth.authz import (
    AccessToken,
    ClientCredentials,
    EntraOnBehalfOf,
    StaticTokens,
    TokenExchange,
    TokenSource,
    normalise_scopes,
)
from mcpclient_auth.errors import ConfigurationError, InvalidTokenResponse
from mcpclient_auth.principal import token_digest

TOKEN = "ACCESS-SENTINEL.abc.def"


def test_repr_is_redacted() -> None:
    token = AccessToken(TOKEN, expires_at=100.0, scopes=frozenset({"b", "a"}))
    for text in (repr(token), str(token), repr([token])):
        assert TOKEN not in text
        assert token.fingerprint in text
    assert token.fingerprint == token_digest(TOKEN)[:16]
    assert "scopes=['a', 'b']" in repr(token)


def test_expiry_with_skew() -> None:
    token = AccessToken(TOKEN, expires_at=1000.0)
    assert not token.expired(now=969.9)
    assert token.expired(now=970.0)  # default skew 30 s
    assert not token.expired(now=999.0, skew=0)
    assert token.expired(now=1000.0, skew=0)
    assert not AccessToken(TOKEN).expired(now=1e12)  # unknown expiry never counts as expired


def test_authorization_header() -> None:
    assert AccessToken(TOKEN).authorization_header() == f"Bearer {TOKEN}"
    with pytest.raises(InvalidTokenResponse) as caught:
        AccessToken(TOKEN, token_type="N_A").authorization_header()
    assert TOKEN not in str(caught.value)


def test_scopes_are_normalised_from_any_iterable() -> None:
    assert AccessToken(TOKEN, scopes={"x", "y"}).scopes == frozenset({"x", "y"})  # type: ignore[arg-type]
    assert AccessToken(TOKEN, scopes="y x").scopes == frozenset({"x", "y"})  # type: ignore[arg-type]
    assert AccessToken(TOKEN, scopes=["x"]) == AccessToken(TOKEN, scopes=frozenset({"x"}))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "has space", "new\nline", "tök", 42])
def test_unsendable_tokens_are_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AccessToken(bad)  # type: ignore[arg-type]
    assert "has space" not in str(caught.value)


def test_normalise_scopes() -> None:
    assert normalise_scopes(None) == ()
    assert normalise_scopes("b a  a") == ("a", "b")
    assert normalise_scopes(["mcp.write", "mcp.read", "mcp.write"]) == ("mcp.read", "mcp.write")
    assert normalise_scopes("api://x/.default") == ("api://x/.default",)
    for bad in (["two words"], ['quo"te'], ["back\\slash"], [""], [3]):
        with pytest.raises(ConfigurationError):
            normalise_scopes(bad)  # type: ignore[arg-type]


def test_every_source_satisfies_the_protocol() -> None:
    sources = [
        StaticTokens({"alice": TOKEN}),
        TokenExchange("https://idp.example/token", client_id="c", client_secret="s"),
        EntraOnBehalfOf(client_id="c", client_secret="s", tenant="contoso.onmicrosoft.com"),
        ClientCredentials("https://idp.example/token", client_id="c", client_secret="s"),
    ]
    for source in sources:
        assert isinstance(source, TokenSource)
