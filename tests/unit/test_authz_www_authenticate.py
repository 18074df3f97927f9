"""WWW-Authenticate parsing (RFC 9110 §11.6.1, RFC 6750 §3, RFC 9728 §5.1) (issue [authz])."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth.authz import BearerChallenge, Challenge, bearer_challenge, parse_challenges
from mcpclient_auth.errors import ChallengeMalformed


def test_rfc6750_insufficient_scope() -> None:
    header = 'Bearer realm="example", error="insufficient_scope", scope="mcp.read mcp.write"'
    assert bearer_challenge(header) == BearerChallenge(
        error="insufficient_scope", scopes=("mcp.read", "mcp.write"), realm="example"
    )


def test_rfc9728_resource_metadata_and_invalid_token() -> None:
    header = (
        'Bearer error="invalid_token", error_description="The access token expired", '
        'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"'
    )
    challenge = bearer_challenge(header)
    assert challenge is not None
    assert challenge.error == "invalid_token"
    assert challenge.error_description == "The access token expired"
    assert challenge.resource_metadata == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    assert challenge.scopes == ()


def test_several_challenges_in_one_header_and_in_several() -> None:
    header = 'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'
    assert parse_challenges(header) == [
        Challenge("Newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
        Challenge("Basic", {"realm": "simple"}),
    ]
    values = ['Basic realm="x"', 'DPoP algs="ES256", bearer error=invalid_token']
    assert [c.scheme for c in parse_challenges(values)] == ["Basic", "DPoP", "bearer"]
    assert bearer_challenge(values) == BearerChallenge(error="invalid_token")


def test_token68_and_bare_schemes() -> None:
    assert parse_challenges("Negotiate abc==, Basic, Bearer") == [
        Challenge("Negotiate", {}, "abc=="),
        Challenge("Basic"),
        Challenge("Bearer"),
    ]
    assert bearer_challenge("Bearer") == BearerChallenge()


def test_parameter_names_are_case_insensitive_and_ows_is_allowed() -> None:
    challenge = bearer_challenge('Bearer  ERROR = "invalid_token" ,Scope=a')
    assert challenge == BearerChallenge(error="invalid_token", scopes=("a",))


def test_no_bearer_challenge() -> None:
    assert bearer_challenge('Basic realm="x"') is None
    assert bearer_challenge(None) is None
    assert bearer_challenge([]) is None


@pytest.mark.parametrize(
    "header",
    [
        'Bearer error="unterminated',
        "Bearer error=",
        'Bearer error="a" scope="b"',  # missing comma
        'Bearer error="a", error="b"',  # repeated parameter
        'Bearer scope="a\\"b"',  # a quote is not a scope-token character
        'Bearer resource_metadata="javascript:alert(1)"',
        "Bearer abc==",  # token68 on a Bearer challenge
        "=bad",
        "Bearer\x00error=x",
        'Bearer error="\x01"',
        "x" * 9000,
        "Basic a b",
    ],
)
def test_malformed_headers(header: str) -> None:
    with pytest.raises(ChallengeMalformed) as caught:
        bearer_challenge(header)
    assert caught.value.retryable is False
    assert header[:40] not in str(caught.value) or len(header) < 3


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_garbage_only_ever_raises_the_typed_error(text: str) -> None:
    try:
        parse_challenges(text)
        bearer_challenge(text)
    except ChallengeMalformed:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.from_regex(r"[a-z][a-z0-9._:/-]{0,12}", fullmatch=True), min_size=1, max_size=5),
    st.sampled_from(["invalid_token", "insufficient_scope", "invalid_request"]),
)
def test_generated_bearer_challenges_round_trip(scopes: list[str], error: str) -> None:
    header = f'Basic realm="r", Bearer error="{error}", scope="{" ".join(scopes)}", realm="mcp"'
    challenge = bearer_challenge(header)
    assert challenge is not None
    assert challenge.error == error
    assert challenge.scopes == tuple(dict.fromkeys(scopes))
    assert challenge.realm == "mcp"
