"""The authorization-code flow's pure parts: PKCE S256, the authorization URL, and the redirect checks
(state, RFC 9207 ``iss`` without normalisation, errors) — plus the new sources' reprs and configuration."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from mcpclient_auth.authz import (
    AuthorizationCode,
    AuthorizationServerMetadata,
    IdJag,
    JwtBearer,
    authorization_request,
    parse_redirect,
    pkce_challenge,
)
from mcpclient_auth.errors import (
    AuthorizationResponseError,
    AuthorizationServerMetadataError,
    ConfigurationError,
)

ISSUER = "https://as.example/tenant1"
REDIRECT = "http://127.0.0.1:8765/callback"
SERVER = AuthorizationServerMetadata(
    issuer=ISSUER,
    authorization_endpoint="https://as.example/tenant1/authorize?prompt=login",
    token_endpoint="https://as.example/tenant1/token",
    code_challenge_methods_supported=("S256",),
)
SECRET = "SECRET-SENTINEL-c1"


def request(server: AuthorizationServerMetadata = SERVER):  # type: ignore[no-untyped-def]
    return authorization_request(
        server,
        client_id="agent",
        redirect_uri=REDIRECT,
        resource=["https://mcp.example/mcp"],
        scopes=["a", "b"],
    )


def test_pkce_s256_matches_rfc7636_appendix_b() -> None:
    assert (
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_authorization_url_carries_pkce_state_and_the_resource_as_published() -> None:
    first, second = request(), request()
    parts = urlsplit(first.url)
    query = parse_qs(parts.query)
    assert parts.path == "/tenant1/authorize" and query["prompt"] == ["login"]  # the AS's own query is kept
    assert query["response_type"] == ["code"] and query["client_id"] == ["agent"]
    assert query["redirect_uri"] == [REDIRECT]
    assert query["code_challenge_method"] == ["S256"]
    assert query["code_challenge"] == [pkce_challenge(first.verifier)]
    assert query["state"] == [first.state]
    assert query["resource"] == ["https://mcp.example/mcp"]
    assert query["scope"] == ["a b"]
    assert 43 <= len(first.verifier) <= 128
    assert first.state != second.state and first.verifier != second.verifier  # fresh every time
    assert first.state not in repr(first) and first.verifier not in repr(first)


def test_no_s256_no_authorization() -> None:
    plain_only = AuthorizationServerMetadata(
        issuer=ISSUER,
        authorization_endpoint="https://as.example/a",
        code_challenge_methods_supported=("plain",),
    )
    with pytest.raises(AuthorizationServerMetadataError):
        request(plain_only)


def redirect(req, **params: str) -> str:  # type: ignore[no-untyped-def]
    from urllib.parse import urlencode

    return REDIRECT + "?" + urlencode(params)


def test_a_good_redirect_yields_the_code() -> None:
    req = request()
    assert parse_redirect(redirect(req, code="c0de", state=req.state), req) == "c0de"
    assert parse_redirect(redirect(req, code="c0de", state=req.state, iss=ISSUER), req) == "c0de"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"code": "c", "state": "forged"}, "state_mismatch"),
        ({"code": "c"}, "state_mismatch"),
        ({"code": "c", "iss": ISSUER + "/"}, "issuer_mismatch"),  # no normalisation (iss-normalized)
        ({"code": "c", "iss": "https://evil.example"}, "issuer_mismatch"),  # unadvertised, still compared
        ({"error": "access_denied"}, "access_denied"),
        ({}, "no_code"),
    ],
)
def test_bad_redirects_are_refused(params: dict[str, str], reason: str) -> None:
    req = request()
    query = {"state": req.state, **params} if "state" not in params and reason != "state_mismatch" else params
    with pytest.raises(AuthorizationResponseError) as caught:
        parse_redirect(redirect(req, **query), req)
    assert caught.value.reason == reason
    assert req.state not in str(caught.value) and "c0de" not in str(caught.value)


def test_iss_is_required_when_advertised() -> None:
    advertised = AuthorizationServerMetadata(
        issuer=ISSUER,
        authorization_endpoint="https://as.example/a",
        code_challenge_methods_supported=("S256",),
        authorization_response_iss_parameter_supported=True,
    )
    req = request(advertised)
    with pytest.raises(AuthorizationResponseError) as caught:
        parse_redirect(redirect(req, code="c", state=req.state), req)
    assert caught.value.reason == "issuer_mismatch"
    assert parse_redirect(redirect(req, code="c", state=req.state, iss=ISSUER), req) == "c"


def test_a_redirect_elsewhere_or_with_repeated_members_is_refused() -> None:
    req = request()
    with pytest.raises(AuthorizationResponseError) as caught:
        parse_redirect(f"http://127.0.0.1:9999/callback?code=c&state={req.state}", req)
    assert caught.value.reason == "redirect_mismatch"
    with pytest.raises(AuthorizationResponseError):
        parse_redirect(f"{REDIRECT}?code=a&code=b&state={req.state}", req)


async def _never(url: str) -> str:
    raise AssertionError("not called")


def test_new_sources_show_no_secret_and_refuse_bad_configuration() -> None:
    sources = [
        JwtBearer(
            "https://as.example/token", client_id="c", client_secret=SECRET, assertion=lambda p: SECRET
        ),
        IdJag(
            idp_token_endpoint="https://idp.example/token",
            idp_client_id="i",
            idp_client_secret=SECRET,
            token_endpoint="https://as.example/token",
            issuer="https://as.example",
            client_id="c",
            client_secret=SECRET,
            resource="https://mcp.example/mcp",
        ),
        AuthorizationCode(
            server_url="https://mcp.example/mcp",
            interaction=_never,
            redirect_uri=REDIRECT,
            client_id="c",
            client_secret=SECRET,
        ),
    ]
    for source in sources:
        assert SECRET not in repr(source)
    with pytest.raises(ConfigurationError):
        AuthorizationCode(
            server_url="https://mcp.example/mcp",
            interaction=_never,
            redirect_uri=REDIRECT,
            client_secret=SECRET,
        )
    with pytest.raises(ConfigurationError):
        JwtBearer("https://as.example/token", client_id="c", assertion="not-callable")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        IdJag(
            idp_token_endpoint="https://idp.example/token",
            idp_client_id="i",
            token_endpoint="https://as.example/token",
            issuer="https://as.example",
            client_id="c",
            resource=[],
        )
