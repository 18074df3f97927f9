"""Token-endpoint sources: construction-time refusals, cache keys, reprs (no network) (issue [authz])."""

from __future__ import annotations

import pytest

from mcpclient_auth.authz import ClientCredentials, EntraOnBehalfOf, TokenExchange
from mcpclient_auth.errors import ConfigurationError, MissingSubjectToken
from mcpclient_auth.keys import Identity
from mcpclient_auth.principal import Principal

SECRET = "SECRET-SENTINEL-source"
ALICE = Principal(id="alice", subject_token="SUBJ-SENTINEL-alice")
BOB = Principal(id="bob", subject_token="SUBJ-SENTINEL-bob")
ENDPOINT = "https://idp.example.com/token"


def test_entra_endpoint_from_tenant_and_authority() -> None:
    source = EntraOnBehalfOf(client_id="c", client_secret="s", tenant="11111111-2222-3333-4444-555555555555")
    assert source.token_endpoint == (
        "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token"
    )
    custom = EntraOnBehalfOf(client_id="c", client_secret="s", tenant="contoso.com", authority="https://login.example/")
    assert custom.token_endpoint == "https://login.example/contoso.com/oauth2/v2.0/token"


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"tenant": "t", "token_endpoint": ENDPOINT},
        {"tenant": "../evil"},
        {"tenant": "a/b"},
        {"tenant": "contoso?x=1"},
        {"tenant": "t", "authority": "http://login.example"},
    ],
)
def test_entra_refuses_bad_endpoints(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        EntraOnBehalfOf(client_id="c", client_secret="s", **kwargs)


def test_entra_scopes_must_belong_to_the_audience() -> None:
    source = EntraOnBehalfOf(client_id="c", client_secret="s", token_endpoint=ENDPOINT, scopes="api://a/.default")
    assert source._key(ALICE, "api://b", None).scopes == ("api://b/.default",)
    assert source._key(ALICE, "api://b/", ["api://b/x", "offline_access"]).scopes == ("api://b/x", "offline_access")
    with pytest.raises(ConfigurationError):
        source._key(ALICE, "api://b", ["api://a/.default"])
    empty = EntraOnBehalfOf(client_id="c", client_secret="s", token_endpoint=ENDPOINT)
    with pytest.raises(ConfigurationError):
        empty._key(ALICE, None, None)


def test_missing_subject_tokens_are_refused_before_any_request() -> None:
    for source in (
        TokenExchange(ENDPOINT, client_id="c", client_secret="s"),
        EntraOnBehalfOf(client_id="c", client_secret="s", token_endpoint=ENDPOINT, scopes="api://a/.default"),
    ):
        with pytest.raises(MissingSubjectToken) as caught:
            source._key(Principal(id="carol"), None, None)
        assert caught.value.details["principal"] == "carol"


def test_exchange_cache_keys_separate_everything_that_matters() -> None:
    source = TokenExchange(ENDPOINT, client_id="c", client_secret="s", audience="api://mcp", scopes=["r"])
    base = source._key(ALICE, None, None)
    assert base.subject == ALICE.subject_digest and base.principal == "alice"
    assert "SUBJ-SENTINEL" not in repr(base)
    variants = {
        source._key(BOB, None, None),
        source._key(ALICE, "api://other", None),
        source._key(ALICE, None, ["w"]),
        source._key(Principal(id="alice", subject_token="SUBJ-SENTINEL-rotated"), None, None),
        source._key(Principal(id="alice-2", subject_token="SUBJ-SENTINEL-alice"), None, None),
        source._key(Principal(id="alice", subject_token="SUBJ-SENTINEL-alice", actor_token="act"), None, None),
        TokenExchange(ENDPOINT, client_id="other", client_secret="s", audience="api://mcp", scopes=["r"])._key(
            ALICE, None, None
        ),
    }
    assert base not in variants and len(variants) == 7
    # Scope order and duplicates do not matter.
    assert source._key(ALICE, None, ["w", "r", "w"]) == source._key(ALICE, None, "r w")


def test_client_credentials_key_ignores_the_principal() -> None:
    source = ClientCredentials(ENDPOINT, client_id="c", client_secret="s", scopes=["tools.list"])
    assert source._service_key(None, None) == source._key(ALICE, None, None) == source._key(BOB, None, None)
    assert source._service_key(None, None).principal is None


def test_reprs_show_no_secret() -> None:
    key = Identity.generate()
    sources = [
        TokenExchange(ENDPOINT, client_id="c", client_secret=SECRET, actor_token="ACTOR-SENTINEL"),
        EntraOnBehalfOf(client_id="c", client_secret=SECRET, tenant="contoso.com"),
        ClientCredentials(ENDPOINT, client_id="c", client_secret=SECRET),
        TokenExchange(ENDPOINT, client_id="c", client_key=key, issuer="https://idp.example"),
    ]
    for source in sources:
        text = repr(source) + repr(vars(source).get("_client_auth"))
        assert "SENTINEL" not in text
        assert str(key.private_jwk()["d"]) not in text
        assert "client_id='c'" in text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_secret": "s", "timeout": 0},
        {"client_secret": "s", "retry_backoff": -1},
        {"client_secret": "s", "scopes": ["two words"]},
        {"client_secret": "s", "audience": [""]},
        {"client_secret": "s", "requested_token_type": ""},
        {"client_secret": "s", "actor_token_type": "urn:x"},
        {"client_secret": "s", "auth_method": "private_key_jwt"},
        {"client_id": ""},
    ],
)
def test_exchange_construction_errors(kwargs: dict[str, object]) -> None:
    options: dict[str, object] = {"client_id": "c"}
    options.update(kwargs)
    with pytest.raises(ConfigurationError):
        TokenExchange(ENDPOINT, **options)  # type: ignore[arg-type]
