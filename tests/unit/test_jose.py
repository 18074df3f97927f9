"""jose: compact JWS encode / decode / strict verify (typ + alg allowlist, crit, kid, b64)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth import jose
from mcpclient_auth.errors import (
    AlgorithmNotAllowed,
    CriticalHeaderUnsupported,
    InvalidTokenType,
    MalformedToken,
    TokenSignatureInvalid,
    UnknownKey,
)
from mcpclient_auth.keys import Identity, TrustStore

CLAIMS = {"iss": "alice", "aud": ["https://mcp.example/mcp"], "n": 1, "text": "grüße ✓"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(
    header: object, claims: object, key: Identity | None = None, signature: bytes = b"\x00" * 64
) -> str:
    """A compact JWS assembled by hand (header/claims may be anything JSON-serialisable)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = key.sign(signing_input.encode()) if key is not None else signature
    return f"{signing_input}.{b64(sig)}"


@pytest.fixture(scope="module")
def es() -> Identity:
    return Identity.generate("ES256", name="agent-es")


@pytest.fixture(scope="module")
def ed() -> Identity:
    return Identity.generate("EdDSA", name="agent-ed")


@pytest.fixture(scope="module")
def trust(es: Identity, ed: Identity) -> TrustStore:
    return TrustStore([es, ed])


# --- encode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_encode_round_trip(alg: str) -> None:
    identity = Identity.generate(alg)
    token = jose.encode(identity, jose.ACT_TYP, CLAIMS)
    jws = jose.verify(token, TrustStore([identity]), typs={jose.ACT_TYP})
    assert jws.header == {"alg": alg, "typ": jose.ACT_TYP, "kid": identity.kid}
    assert jws.claims == CLAIMS
    assert jws.key is not None and jws.key.kid == identity.kid
    assert len(jws.signature) == 64
    # Payload is compact UTF-8 JSON (no spaces, non-ASCII kept as UTF-8).
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert payload == json.dumps(CLAIMS, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_es256_signature_is_raw_r_s_verifiable_by_cryptography(es: Identity) -> None:
    token = jose.encode(es, jose.ECT_TYP, CLAIMS)
    signing_input, _, sig = token.rpartition(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public = es.private_key.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))  # raises if invalid


def test_protected_header_is_serialised_once_per_signer_and_typ(es: Identity) -> None:
    jose.encode(es, jose.ECT_TYP, CLAIMS)
    before = jose._protected_header.cache_info()
    first = jose.encode(es, jose.ECT_TYP, {"a": 1})
    second = jose.encode(es, jose.ECT_TYP, {"a": 2})
    after = jose._protected_header.cache_info()
    assert after.hits == before.hits + 2 and after.misses == before.misses
    assert first.split(".")[0] == second.split(".")[0]


def test_encode_accepts_any_mapping(es: Identity, trust: TrustStore) -> None:
    from types import MappingProxyType

    token = jose.encode(es, jose.ACT_TYP, MappingProxyType({"x": [1, 2]}))
    assert jose.verify(token, trust, typs={jose.ACT_TYP}).claims == {"x": [1, 2]}


# --- verify: the header checks, in order -----------------------------------------------------------


def test_typ_must_be_expected(es: Identity, trust: TrustStore) -> None:
    token = jose.encode(es, jose.ECT_TYP, CLAIMS)
    with pytest.raises(InvalidTokenType) as info:
        jose.verify(token, trust, typs={jose.ACT_TYP})
    assert info.value.code == "token_type_invalid"
    assert jose.verify(token, trust, typs={jose.ACT_TYP, jose.ECT_TYP}).typ == jose.ECT_TYP


@pytest.mark.parametrize("typ", [None, 1, "", "JWT", "ACT+JWT", ["act+jwt"]])
def test_missing_or_odd_typ_is_refused(es: Identity, trust: TrustStore, typ: object) -> None:
    header = {"alg": "ES256", "kid": es.kid} | ({} if typ is None else {"typ": typ})
    with pytest.raises(InvalidTokenType):
        jose.verify(forge(header, CLAIMS, es), trust, typs={jose.ACT_TYP})


@pytest.mark.parametrize(
    "alg", ["none", "None", "HS256", "HS512", "RS256", "PS256", "ES384", "ES256K", "", None, 7]
)
def test_algorithms_outside_the_allowlist_are_refused(es: Identity, trust: TrustStore, alg: object) -> None:
    header = {"typ": jose.ACT_TYP, "kid": es.kid} | ({} if alg is None else {"alg": alg})
    token = forge(header, CLAIMS)
    with pytest.raises(AlgorithmNotAllowed) as info:
        jose.verify(token, trust, typs={jose.ACT_TYP})
    assert token not in str(info.value)


def test_alg_none_with_empty_signature_is_malformed_or_refused(es: Identity, trust: TrustStore) -> None:
    # The classic "alg": "none" token has an empty third part: refused before any key lookup.
    signing_input = forge({"alg": "none", "typ": jose.ACT_TYP, "kid": es.kid}, CLAIMS).rsplit(".", 1)[0]
    with pytest.raises(MalformedToken):
        jose.verify(signing_input + ".", trust, typs={jose.ACT_TYP})


def test_hs256_signed_with_the_public_key_as_secret_is_refused(es: Identity, trust: TrustStore) -> None:
    # Algorithm confusion: an attacker HMACs with the (public) PEM, hoping the verifier uses it as a secret.
    pem = es.public.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": jose.ACT_TYP, "kid": es.kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(CLAIMS).encode())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(mac)}"
    with pytest.raises(AlgorithmNotAllowed) as info:
        jose.verify(token, trust, typs={jose.ACT_TYP})
    assert info.value.code == "algorithm_not_allowed"


def test_header_alg_must_match_the_keys_alg(es: Identity, ed: Identity, trust: TrustStore) -> None:
    # An Ed25519 signature labelled with the ES256 key's kid, and the other way round.
    with pytest.raises(AlgorithmNotAllowed):
        jose.verify(
            forge({"alg": "EdDSA", "typ": "act+jwt", "kid": es.kid}, CLAIMS, ed), trust, typs={"act+jwt"}
        )
    with pytest.raises(AlgorithmNotAllowed):
        jose.verify(
            forge({"alg": "ES256", "typ": "act+jwt", "kid": ed.kid}, CLAIMS, es), trust, typs={"act+jwt"}
        )


@pytest.mark.parametrize("kid", [None, "", 5, ["k"]])
def test_kid_is_required(es: Identity, trust: TrustStore, kid: object) -> None:
    header = {"alg": "ES256", "typ": jose.ACT_TYP} | ({} if kid is None else {"kid": kid})
    with pytest.raises(MalformedToken):
        jose.verify(forge(header, CLAIMS, es), trust, typs={jose.ACT_TYP})


def test_unknown_kid(trust: TrustStore) -> None:
    stranger = Identity.generate()
    token = jose.encode(stranger, jose.ACT_TYP, CLAIMS)
    with pytest.raises(UnknownKey) as info:
        jose.verify(token, trust, typs={jose.ACT_TYP})
    assert info.value.code == "unknown_key"


def test_wrong_key_under_the_same_kid(es: Identity) -> None:
    # The trust store holds a different key under the signer's kid: the signature must fail.
    other = Identity.generate()
    jwk = other.public_jwk() | {"kid": es.kid}
    token = jose.encode(es, jose.ACT_TYP, CLAIMS)
    with pytest.raises(TokenSignatureInvalid) as info:
        jose.verify(token, TrustStore([jwk]), typs={jose.ACT_TYP})
    assert info.value.code == "token_signature_invalid"


def test_tampered_payload_and_signature(es: Identity, trust: TrustStore) -> None:
    token = jose.encode(es, jose.ACT_TYP, CLAIMS)
    header, payload, sig = token.split(".")
    evil_payload = b64(json.dumps(CLAIMS | {"iss": "mallory"}).encode())
    for bad in (
        f"{header}.{evil_payload}.{sig}",
        f"{header}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}",
    ):
        with pytest.raises(TokenSignatureInvalid) as info:
            jose.verify(bad, trust, typs={jose.ACT_TYP})
        assert bad not in str(info.value)


def test_truncated_signature_is_invalid(es: Identity, trust: TrustStore) -> None:
    token = jose.encode(es, jose.ACT_TYP, CLAIMS)
    header, payload, sig = token.split(".")
    short = b64(base64.urlsafe_b64decode(sig + "==")[:63])
    with pytest.raises(TokenSignatureInvalid):
        jose.verify(f"{header}.{payload}.{short}", trust, typs={jose.ACT_TYP})


@pytest.mark.parametrize("crit", [["exp"], ["b64"], [], "b64", [1], ["zip"]])
def test_crit_is_refused_unless_understood(es: Identity, trust: TrustStore, crit: object) -> None:
    header = {"alg": "ES256", "typ": jose.ACT_TYP, "kid": es.kid, "crit": crit, "b64": True, "zip": "x"}
    with pytest.raises(CriticalHeaderUnsupported) as info:
        jose.verify(forge(header, CLAIMS, es), trust, typs={jose.ACT_TYP})
    assert info.value.code == "token_crit_unsupported"


def test_embedded_header_keys_are_ignored(es: Identity, trust: TrustStore) -> None:
    # A token that carries its own key ("jwk") is still verified against the trust store only.
    mallory = Identity.generate()
    header = {"alg": "ES256", "typ": jose.ACT_TYP, "kid": es.kid, "jwk": mallory.public_jwk()}
    with pytest.raises(TokenSignatureInvalid):
        jose.verify(forge(header, CLAIMS, mallory), trust, typs={jose.ACT_TYP})


def test_error_classes_are_distinct_per_failure() -> None:
    classes = [
        MalformedToken,
        InvalidTokenType,
        AlgorithmNotAllowed,
        UnknownKey,
        TokenSignatureInvalid,
        CriticalHeaderUnsupported,
    ]
    assert len({c.code for c in classes}) == len(classes)


# --- decode: malformed compact strings ------------------------------------------------------------

GOOD_HEADER = b64(b'{"alg":"ES256","typ":"act+jwt","kid":"k"}')
GOOD_PAYLOAD = b64(b'{"a":1}')
GOOD_SIG = b64(b"\x01" * 64)


def j(*parts: str) -> str:
    return ".".join(parts)


MALFORMED = {
    "empty": "",
    "one part": GOOD_HEADER,
    "two parts": j(GOOD_HEADER, GOOD_PAYLOAD),
    "four parts": j(GOOD_HEADER, GOOD_PAYLOAD, GOOD_SIG, GOOD_SIG),
    "JWE-like five parts": j(*[GOOD_HEADER] * 5),
    "empty header": j("", GOOD_PAYLOAD, GOOD_SIG),
    "empty payload (detached)": j(GOOD_HEADER, "", GOOD_SIG),
    "empty signature": j(GOOD_HEADER, GOOD_PAYLOAD, ""),
    "only dots": "..",
    "padding": j(GOOD_HEADER + "=", GOOD_PAYLOAD, GOOD_SIG),
    "standard base64 alphabet": j(GOOD_HEADER, GOOD_PAYLOAD, GOOD_SIG[:-2] + "+/"),
    "non-canonical base64": j(GOOD_HEADER, b64(b"{}")[:-1] + "1", GOOD_SIG),
    "impossible length": j(GOOD_HEADER, GOOD_PAYLOAD, GOOD_SIG + "AAA"),
    "whitespace": j(GOOD_HEADER + " ", GOOD_PAYLOAD, GOOD_SIG),
    "newline": j(GOOD_HEADER, GOOD_PAYLOAD, GOOD_SIG + "\n"),
    "non-ascii": j(GOOD_HEADER, GOOD_PAYLOAD, GOOD_SIG[:-1] + "é"),
    "header not json": j(b64(b"not json"), GOOD_PAYLOAD, GOOD_SIG),
    "header is an array": j(b64(b"[1,2]"), GOOD_PAYLOAD, GOOD_SIG),
    "header is a string": j(b64(b'"ES256"'), GOOD_PAYLOAD, GOOD_SIG),
    "header is null": j(b64(b"null"), GOOD_PAYLOAD, GOOD_SIG),
    "payload is an array": j(GOOD_HEADER, b64(b"[]"), GOOD_SIG),
    "payload is a number": j(GOOD_HEADER, b64(b"42"), GOOD_SIG),
    "payload not utf-8": j(GOOD_HEADER, b64(b'{"a":"\xff"}'), GOOD_SIG),
    "payload utf-16": j(GOOD_HEADER, b64('{"a":1}'.encode("utf-16")), GOOD_SIG),
    "duplicate header member": j(b64(b'{"alg":"ES256","alg":"none"}'), GOOD_PAYLOAD, GOOD_SIG),
    "duplicate claim": j(GOOD_HEADER, b64(b'{"iss":"a","iss":"b"}'), GOOD_SIG),
    "NaN": j(GOOD_HEADER, b64(b'{"a":NaN}'), GOOD_SIG),
    "Infinity": j(GOOD_HEADER, b64(b'{"a":-Infinity}'), GOOD_SIG),
    "trailing garbage in json": j(GOOD_HEADER, b64(b'{"a":1} x'), GOOD_SIG),
    "deeply nested payload": j(GOOD_HEADER, b64(b'{"a":' + b"[" * 20000 + b"]" * 20000 + b"}"), GOOD_SIG),
    "too long": j(GOOD_HEADER, "A" * (jose.MAX_TOKEN_LENGTH + 4), GOOD_SIG),
}


@pytest.mark.parametrize("token", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_compact_strings(token: str) -> None:
    with pytest.raises(MalformedToken) as info:
        jose.decode(token)
    assert info.value.code == "token_malformed"
    if len(token) > 8:
        assert token not in str(info.value)
        assert GOOD_PAYLOAD not in str(info.value)


@pytest.mark.parametrize("value", [None, 1, b"a.b.c", ["a", "b", "c"]])
def test_decode_refuses_non_text(value: object) -> None:
    with pytest.raises(MalformedToken):
        jose.decode(value)  # type: ignore[arg-type]


def test_verify_also_reports_malformed_first(trust: TrustStore) -> None:
    with pytest.raises(MalformedToken):
        jose.verify(MALFORMED["header is an array"], trust, typs={jose.ACT_TYP})


def test_decoded_repr_never_shows_the_token(es: Identity) -> None:
    token = jose.encode(es, jose.ACT_TYP, CLAIMS)
    jws = jose.decode(token)
    assert jws.token == token
    assert token.split(".")[1] not in repr(jws) and token.split(".")[2] not in repr(jws)
    assert "act+jwt" in repr(jws)


# --- property: decode never raises anything but MalformedToken ------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
segment = st.one_of(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/. ", max_size=40),
    json_values.map(lambda v: b64(json.dumps(v).encode())),
    st.binary(max_size=40).map(b64),
)


def _decode_or_malformed(text: str) -> None:
    try:
        jws = jose.decode(text)
    except MalformedToken as exc:
        assert text not in str(exc) or len(text) < 4
        return
    assert isinstance(jws.header, dict) and isinstance(jws.claims, dict)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_decode_arbitrary_text(text: str) -> None:
    _decode_or_malformed(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(segment, min_size=1, max_size=5))
def test_decode_arbitrary_segments(parts: list[str]) -> None:
    _decode_or_malformed(".".join(parts))


@settings(max_examples=100, deadline=None)
@given(header=json_values, claims=json_values)
def test_verify_arbitrary_json_raises_only_token_errors(header: object, claims: object) -> None:
    from mcpclient_auth.errors import McpClientAuthError

    token = forge(header, claims)
    # An empty trust store: every token fails, but only ever with one of our typed errors.
    with pytest.raises(McpClientAuthError):
        jose.verify(token, TrustStore(), typs={jose.ACT_TYP})


# --- signatures checked ahead of the strict path (issue #16, ledger verification) -------------------


def test_preverified_answers_only_for_the_exact_valid_signature_by_that_key_once_and_in_its_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from mcpclient_auth import keys

    alice, mallory = Identity.generate("ES256", name="alice"), Identity.generate("ES256", name="mallory")
    data, other = b"header.payload", b"header.payload2"
    good = alice.sign(data)
    bad = bytes([good[0] ^ 1]) + good[1:]
    calls: list[bytes] = []
    real = keys._ES256.verify

    def counting(self: object, key: object, signed: bytes, signature: bytes) -> bool:
        calls.append(signature)
        return real(self, key, signed, signature)  # type: ignore[arg-type]

    monkeypatch.setattr(keys._ES256, "verify", counting)
    batch = keys.Preverified()
    batch.add(alice.public, data, good)
    batch.add(alice.public, data, bad)  # invalid: not remembered
    assert len(batch) == 1 and len(calls) == 2
    assert alice.public.verify(data, good) and len(calls) == 3  # outside the block: verified
    seen_elsewhere: list[bool] = []
    with batch:
        assert alice.public.verify(data, good) and len(calls) == 3  # answered, not recomputed
        assert alice.public.verify(data, good) and len(calls) == 4  # once: then verified again
        batch.add(alice.public, data, good)
        assert not mallory.public.verify(data, good)  # another key: verified, and invalid
        assert not alice.public.verify(other, good)  # other bytes
        assert not alice.public.verify(data, bad)
        worker = threading.Thread(target=lambda: seen_elsewhere.append(len(calls) and alice.public.verify(data, good)))
        before = len(calls)
        worker.start()
        worker.join()
        assert seen_elsewhere == [True] and len(calls) == before + 1  # another thread verifies itself
    assert len(batch) == 0  # nothing outlives the block
    assert keys._PREVERIFIED.get() is None
