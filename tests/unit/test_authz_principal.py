"""Principal: redacted repr, fingerprints, validation (issue [authz])."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from mcpclient_auth._encoding import b64url_encode
from mcpclient_auth.authz import ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE
from mcpclient_auth.errors import ConfigurationError
from mcpclient_auth.principal import Principal, token_digest

TOKEN = "eyJ-SUBJECT-SENTINEL.payload.sig"
ACTOR = "ACTOR-SENTINEL-token"


def test_repr_and_str_show_only_the_fingerprint() -> None:
    principal = Principal(id="alice", subject_token=TOKEN, actor_token=ACTOR)
    expected = b64url_encode(hashlib.sha256(TOKEN.encode()).digest())[:16]
    assert principal.fingerprint == expected
    for text in (repr(principal), str(principal), f"{principal}", repr([principal])):
        assert TOKEN not in text and ACTOR not in text
        assert f"<sha256:{expected}>" in text
        assert "id='alice'" in text
    assert principal.actor_fingerprint == token_digest(ACTOR)[:16]


def test_subject_digest_is_the_full_sha256() -> None:
    principal = Principal(id="alice", subject_token=TOKEN)
    assert principal.subject_digest == b64url_encode(hashlib.sha256(TOKEN.encode()).digest())
    assert len(principal.subject_digest) == 43


def test_a_principal_without_token() -> None:
    principal = Principal(id="alice")
    assert principal.subject_token is None
    assert principal.fingerprint is None and principal.subject_digest is None
    assert principal.subject_token_type == ACCESS_TOKEN_TYPE
    assert repr(principal) == "Principal(id='alice')"


def test_equality_and_hash_include_the_token() -> None:
    a1 = Principal(id="alice", subject_token=TOKEN)
    a2 = Principal(id="alice", subject_token=TOKEN)
    other = Principal(id="alice", subject_token=TOKEN + "x")
    assert a1 == a2 and hash(a1) == hash(a2)
    assert a1 != other
    assert len({a1, a2, other}) == 2
    assert a1 != Principal(id="alice", subject_token=TOKEN, subject_token_type=ID_TOKEN_TYPE)


def test_frozen_and_replace_recomputes_the_digest() -> None:
    principal = Principal(id="alice", subject_token=TOKEN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.subject_token = "other"  # type: ignore[misc]
    rotated = dataclasses.replace(principal, subject_token="rotated-token")
    assert rotated.subject_digest == token_digest("rotated-token") != principal.subject_digest


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": ""},
        {"id": 7},
        {"id": "a", "subject_token": ""},
        {"id": "a", "subject_token": "two words"},
        {"id": "a", "subject_token": "line\nbreak"},
        {"id": "a", "subject_token": "tök"},
        {"id": "a", "subject_token": "t", "subject_token_type": ""},
        {"id": "a", "actor_token_type": ACCESS_TOKEN_TYPE},
        {"id": "a", "actor_token": "bad token"},
    ],
)
def test_invalid_principals_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Principal(**kwargs)  # type: ignore[arg-type]


def test_error_messages_do_not_echo_a_bad_token() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Principal(id="a", subject_token="SENTINEL with space")
    assert "SENTINEL" not in str(caught.value)
