"""RFC 9421 §3.3 signature algorithms by their registered names (pure: no I/O).

    algorithm = http_signature_algorithm("ecdsa-p256-sha256")   # SignaturePolicyError if unknown
    signature = algorithm.sign(private_key, base)               # raw bytes (r||s for ECDSA)
    algorithm.verify(public_key, base, signature)               # True / False, never raises

``ecdsa-p256-sha256`` and ``ed25519``, the algorithms the SDK signs with, are the JWS algorithms of
:mod:`mcpclient_auth.keys` under their RFC 9421 names (one implementation for tokens and HTTP
signatures). ``ecdsa-p384-sha384``, ``rsa-pss-sha512``, ``rsa-v1_5-sha256`` and ``hmac-sha256`` are here
to verify the RFC's test vectors and other signers.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from ..errors import KeyFormatError, SignaturePolicyError
from ..keys import ALGORITHMS, SigningAlgorithm

__all__ = ["HTTP_SIGNATURE_ALGORITHMS", "HttpSignatureAlgorithm", "http_signature_algorithm"]


class HttpSignatureAlgorithm:
    """One RFC 9421 §3.3 signature algorithm over raw signature-base bytes."""

    name: ClassVar[str]

    def sign(self, key: Any, data: bytes) -> bytes:
        raise NotImplementedError

    def verify(self, key: Any, data: bytes, signature: bytes) -> bool:
        raise NotImplementedError


class _SdkAlgorithm(HttpSignatureAlgorithm):
    """``ecdsa-p256-sha256`` and ``ed25519``, the algorithms the SDK signs with: delegated to
    :data:`mcpclient_auth.keys.ALGORITHMS`, so JWS and HTTP message signatures share one
    implementation (raw r||s for ECDSA, one verify policy)."""

    signing: ClassVar[SigningAlgorithm]

    def sign(self, key: Any, data: bytes) -> bytes:
        try:
            return self.signing.sign(key, data)
        except KeyFormatError:
            raise SignaturePolicyError(f"{self.name} needs a matching private key") from None

    def verify(self, key: Any, data: bytes, signature: bytes) -> bool:
        return self.signing.verify(key, data, signature)


class _EcdsaP256(_SdkAlgorithm):
    signing = ALGORITHMS["ES256"]
    name = signing.http_name


class _Ed25519(_SdkAlgorithm):
    signing = ALGORITHMS["EdDSA"]
    name = signing.http_name


class _EcdsaP384(HttpSignatureAlgorithm):
    # RFC 9421 §3.3.5: the signature is r||s, each left-padded to 48 bytes (not DER). Verified for
    # the RFC's test vectors and other signers; the SDK never signs with it.
    name = "ecdsa-p384-sha384"

    def sign(self, key: Any, data: bytes) -> bytes:
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
            raise SignaturePolicyError(f"{self.name} needs a matching EC private key")
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA384())))
        return r.to_bytes(48, "big") + s.to_bytes(48, "big")

    def verify(self, key: Any, data: bytes, signature: bytes) -> bool:
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
            return False
        if len(signature) != 96:
            return False
        r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
        try:
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA384()))
        except (InvalidSignature, ValueError):
            return False
        return True


class _Rsa(HttpSignatureAlgorithm):
    hash: ClassVar[type[hashes.HashAlgorithm]]

    def _padding(self) -> padding.AsymmetricPadding:
        raise NotImplementedError

    def sign(self, key: Any, data: bytes) -> bytes:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SignaturePolicyError(f"{self.name} needs an RSA private key")
        return key.sign(data, self._padding(), self.hash())

    def verify(self, key: Any, data: bytes, signature: bytes) -> bool:
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        try:
            key.verify(signature, data, self._padding(), self.hash())
        except (InvalidSignature, ValueError):
            return False
        return True


class _RsaPssSha512(_Rsa):
    name = "rsa-pss-sha512"
    hash = hashes.SHA512

    def _padding(self) -> padding.AsymmetricPadding:
        # RFC 9421 §3.3.1: MGF1 with SHA-512 and a 64-byte salt.
        return padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)


class _RsaV15Sha256(_Rsa):
    name = "rsa-v1_5-sha256"
    hash = hashes.SHA256

    def _padding(self) -> padding.AsymmetricPadding:
        return padding.PKCS1v15()


class _HmacSha256(HttpSignatureAlgorithm):
    name = "hmac-sha256"

    def sign(self, key: Any, data: bytes) -> bytes:
        if not isinstance(key, bytes) or not key:
            raise SignaturePolicyError("hmac-sha256 needs a shared secret (bytes)")
        return _hmac.new(key, data, hashlib.sha256).digest()

    def verify(self, key: Any, data: bytes, signature: bytes) -> bool:
        if not isinstance(key, bytes) or not key:
            return False
        return _hmac.compare_digest(_hmac.new(key, data, hashlib.sha256).digest(), signature)


#: The RFC 9421 §3.3 algorithms by their registered names. The SDK's profiles sign only with
#: ``ecdsa-p256-sha256`` and ``ed25519``; the others are here for conformance and verification.
HTTP_SIGNATURE_ALGORITHMS: dict[str, HttpSignatureAlgorithm] = {
    algorithm.name: algorithm
    for algorithm in (
        _EcdsaP256(),
        _EcdsaP384(),
        _Ed25519(),
        _RsaPssSha512(),
        _RsaV15Sha256(),
        _HmacSha256(),
    )
}


def http_signature_algorithm(name: str) -> HttpSignatureAlgorithm:
    """The registered algorithm ``name``; :class:`SignaturePolicyError` for anything else."""
    try:
        return HTTP_SIGNATURE_ALGORITHMS[name]
    except (KeyError, TypeError):
        raise SignaturePolicyError(f"unsupported HTTP signature algorithm {str(name)[:40]!r}") from None
