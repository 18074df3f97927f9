"""A second, independent DPoP proof checker (RFC 9449 §4.3) for the test servers: PyJWT verifies the
signature with the key in the proof's ``jwk`` header, joserfc computes the RFC 7638 thumbprint. None
of the SDK's own JOSE code is used, so a proof that passes here is not just self-consistent.

    claims, jkt = check_proof(header_value, "POST", "http://127.0.0.1:1234/token", seen_jtis)
    claims, jkt = check_proof(header_value, "POST", url, seen_jtis, access_token=token, nonce="n-1")
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any
from urllib.parse import urlsplit

import jwt
from joserfc.jwk import ECKey, OKPKey

ALGORITHMS = ["ES256", "EdDSA"]


class ProofRejected(Exception):
    """Why a proof is not acceptable (the test servers answer ``invalid_dpop_proof``)."""


def _b64json(segment: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def target_uri(url: str) -> str:
    """The request URI as a server compares it with ``htu``: no query, no fragment."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"


def thumbprint(jwk: dict[str, Any]) -> str:
    key = ECKey.import_key(jwk) if jwk.get("kty") == "EC" else OKPKey.import_key(jwk)
    return str(key.thumbprint())


def check_proof(
    proof: str | None,
    method: str,
    url: str,
    seen_jtis: set[str],
    *,
    access_token: str | None = None,
    nonce: str | None = None,
    window: float = 60.0,
) -> tuple[dict[str, Any], str]:
    """The proof's claims and its key's thumbprint, or :class:`ProofRejected` (the ``jti`` is then not
    consumed). ``nonce``: the nonce the server requires (``ProofRejected("nonce")`` when absent or
    different)."""
    if not proof or "," in proof:
        raise ProofRejected("missing or multiple DPoP proofs")
    try:
        header = _b64json(proof.split(".")[0])
    except (ValueError, IndexError):
        raise ProofRejected("not a JWS") from None
    if header.get("typ") != "dpop+jwt" or header.get("alg") not in ALGORITHMS:
        raise ProofRejected("typ/alg")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or "d" in jwk:
        raise ProofRejected("jwk missing or private")
    try:
        key = jwt.PyJWK(jwk, algorithm=header["alg"])
        claims = jwt.decode(proof, key=key.key, algorithms=ALGORITHMS, options={"verify_aud": False})
    except jwt.PyJWTError as exc:
        raise ProofRejected(f"signature: {type(exc).__name__}") from None
    if not isinstance(claims.get("jti"), str) or len(claims["jti"]) < 16:
        raise ProofRejected("jti")
    if claims.get("htm") != method:
        raise ProofRejected("htm")
    if claims.get("htu") != target_uri(url):
        raise ProofRejected(f"htu {claims.get('htu')!r} != {target_uri(url)!r}")
    if not isinstance(claims.get("iat"), int) or abs(time.time() - claims["iat"]) > window:
        raise ProofRejected("iat")
    if access_token is not None:
        expected = base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()).rstrip(b"=")
        if claims.get("ath") != expected.decode():
            raise ProofRejected("ath")
    elif "ath" in claims:
        raise ProofRejected("ath at the token endpoint")
    if nonce is not None and claims.get("nonce") != nonce:
        raise ProofRejected("nonce")
    if claims["jti"] in seen_jtis:
        raise ProofRejected("jti replayed")
    seen_jtis.add(claims["jti"])
    return claims, thumbprint(jwk)
