"""One ES256 / Ed25519 implementation for JWS (keys) and RFC 9421 (``_rfc9421``), one verify policy:
a malformed signature is ``False``, a key of the wrong type a typed error, never a crash."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mcpclient_auth._rfc9421 import HTTP_SIGNATURE_ALGORITHMS, http_signature_algorithm
from mcpclient_auth.errors import KeyFormatError, SignaturePolicyError
from mcpclient_auth.keys import ALGORITHMS, Identity

DATA = b"@method: POST\n@authority: mcp.example"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.mark.parametrize(("jose_name", "http_name"), [("ES256", "ecdsa-p256-sha256"), ("EdDSA", "ed25519")])
def test_rfc9421_delegates_the_sdk_algorithms_to_keys(jose_name: str, http_name: str) -> None:
    # One implementation: the HTTP-signature algorithm holds keys' object and no code of its own.
    algorithm = http_signature_algorithm(http_name)
    assert algorithm.signing is ALGORITHMS[jose_name]  # type: ignore[attr-defined]
    assert ALGORITHMS[jose_name].http_name == http_name
    identity = Identity.generate(jose_name)
    signature = algorithm.sign(identity.private_key, DATA)
    assert identity.public.verify(DATA, signature)  # JWS verification accepts the HTTP signature
    assert algorithm.verify(identity.public.key, DATA, identity.sign(DATA))


def _malformed(size: int) -> list[bytes]:
    half = size // 2
    return [
        b"",
        b"\x00" * (size - 1),
        b"\x00" * (size + 1),
        b"\x00" * size,  # r = s = 0
        b"\xff" * size,  # r, s >= the group order
        P256_ORDER.to_bytes(half, "big") * 2,  # r = s = n
        (1).to_bytes(half, "big") * 2,
    ]


@pytest.mark.parametrize("jose_name", ["ES256", "EdDSA"])
def test_malformed_signatures_are_false_on_both_paths(jose_name: str) -> None:
    identity = Identity.generate(jose_name)
    algorithm = HTTP_SIGNATURE_ALGORITHMS[identity.public.http_alg]
    for signature in _malformed(64):
        assert ALGORITHMS[jose_name].verify(identity.public.key, DATA, signature) is False
        assert algorithm.verify(identity.public.key, DATA, signature) is False


def test_a_key_of_another_type_or_curve_never_verifies() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    signature = Identity.generate("ES256").sign(DATA)
    others = [
        p384.public_key(),
        p384,
        ed25519.Ed25519PrivateKey.generate().public_key(),
        rsa.generate_private_key(65537, 2048).public_key(),
        b"secret",
        None,
    ]
    for key in others:
        assert ALGORITHMS["ES256"].verify(key, DATA, signature) is False  # type: ignore[arg-type]
        assert http_signature_algorithm("ecdsa-p256-sha256").verify(key, DATA, signature) is False
        assert ALGORITHMS["EdDSA"].verify(key, DATA, signature) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(("jose_name", "http_name"), [("ES256", "ecdsa-p256-sha256"), ("EdDSA", "ed25519")])
def test_signing_with_a_key_of_another_type_is_a_typed_error(jose_name: str, http_name: str) -> None:
    # keys used to assert the key type (an AssertionError, or nothing at all under python -O).
    wrong = [ec.generate_private_key(ec.SECP384R1()), b"secret", None]
    wrong.append(ed25519.Ed25519PrivateKey.generate() if jose_name == "ES256" else Identity.generate("ES256").private_key)
    for key in wrong:
        with pytest.raises(KeyFormatError):
            ALGORITHMS[jose_name].sign(key, DATA)  # type: ignore[arg-type]
        with pytest.raises(SignaturePolicyError):
            http_signature_algorithm(http_name).sign(key, DATA)


def test_a_p384_key_of_the_remembered_class_still_never_verifies() -> None:
    # _ES256.verify remembers concrete EC public-key classes; the curve is still checked per key.
    identity = Identity.generate("ES256")
    signature = identity.sign(DATA)
    assert ALGORITHMS["ES256"].verify(identity.public.key, DATA, signature) is True
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    assert type(p384) is type(identity.public.key)  # the same class: only the curve tells them apart
    assert ALGORITHMS["ES256"].verify(p384, DATA, signature) is False
    assert ALGORITHMS["ES256"].verify(identity.public.key, DATA, signature[:-1] + bytes([signature[-1] ^ 1])) is False
