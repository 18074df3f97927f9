"""Compact JWS for the SDK's own tokens: a fast signer and a strict verifier.

Only what the wire profile needs (DESIGN §3): compact serialisation, ``ES256`` (raw r||s) and
``EdDSA``, an explicit ``typ`` per token kind, ``kid`` = the signer's key id. Nothing else is accepted
on input: no ``none``, no HMAC, no RSA, no unknown ``crit`` extensions, no keys carried in the header
(``jwk`` / ``jku`` / ``x5u`` are ignored; keys come from a :class:`~mcpclient_auth.keys.TrustStore`).

    token = encode(agent, ECT_TYP, {"iss": agent.name, "jti": "..."})
    jws = verify(token, TrustStore([agent]), typs={ECT_TYP})
    jws.claims["iss"], jws.header["kid"], jws.key.kid

Signing is on the hot path (one ECT per MCP call), so :func:`encode` signs with
:meth:`Identity.sign <mcpclient_auth.keys.Identity.sign>` directly over a protected header that is
serialised once per ``(kid, alg, typ)`` and cached.

Errors (all from :mod:`mcpclient_auth.errors`): :class:`MalformedToken`, :class:`InvalidTokenType`,
:class:`AlgorithmNotAllowed`, :class:`UnknownKey`, :class:`TokenSignatureInvalid`,
:class:`CriticalHeaderUnsupported`. Their messages never contain the token.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Collection, Mapping
from typing import Any

from ._encoding import b64url_decode, compact_json, strict_json_loads
from .errors import (
    AlgorithmNotAllowed,
    CriticalHeaderUnsupported,
    InvalidTokenType,
    MalformedToken,
    TokenSignatureInvalid,
)
from .keys import Identity, PublicKey, TrustStore

__all__ = [
    "ACT_TYP",
    "ALLOWED_ALGS",
    "ECT_TYP",
    "ECT_TYP_LEGACY",
    "MAX_TOKEN_LENGTH",
    "SEAL_TYP",
    "UNDERSTOOD_CRIT",
    "DecodedJWS",
    "decode",
    "encode",
    "verify",
]

ACT_TYP = "act+jwt"
ECT_TYP = "exec+jwt"
#: The ``typ`` of draft-nennemann-wimse-ect-00; accepted on input, never produced.
ECT_TYP_LEGACY = "wimse-exec+jwt"
SEAL_TYP = "ledger-seal+jwt"

#: The only JWS algorithms signed or accepted. Never ``none``, never HS*/RS*/PS*.
ALLOWED_ALGS: frozenset[str] = frozenset({"ES256", "EdDSA"})

#: ``crit`` header names this implementation understands (RFC 7515 §4.1.11). None so far, so any
#: token that declares a critical extension is refused rather than half-understood.
UNDERSTOOD_CRIT: frozenset[str] = frozenset()

#: Refuse larger inputs before decoding anything: our tokens are a few hundred bytes to a few KiB,
#: and a bound keeps a hostile header from costing unbounded base64/JSON work.
MAX_TOKEN_LENGTH = 64 * 1024


# --- encoding ------------------------------------------------------------------------------------


def _make_payload_encoder() -> Any:
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - CPython always has the C encoder
        return None

    def default(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    # json.dumps(..., separators=(",", ":"), ensure_ascii=False, allow_nan=False) builds a new
    # JSONEncoder per call; the C encoder alone gives the same bytes without that set-up (this runs
    # once per MCP call). No circular-reference markers: a cycle ends in RecursionError, mapped below.
    return c_make_encoder(None, default, json.encoder.encode_basestring, None, ":", ",", False, False, False)


_payload_encoder = _make_payload_encoder()


def _payload_json(claims: dict[str, Any]) -> bytes:
    """``compact_json(claims)``, byte for byte."""
    if _payload_encoder is None:  # pragma: no cover
        return compact_json(claims)
    try:
        return "".join(_payload_encoder(claims, 0)).encode("utf-8")
    except RecursionError:
        raise ValueError("the claims are nested too deeply (or contain a cycle)") from None


@functools.lru_cache(maxsize=1024)
def _protected_header(kid: str, alg: str, typ: str) -> bytes:
    """``b64url(header) + "."`` for one signer and token kind, serialised once."""
    if alg not in ALLOWED_ALGS:
        raise AlgorithmNotAllowed(f"refusing to sign with algorithm {alg!r}", alg=alg)
    header = compact_json({"alg": alg, "typ": typ, "kid": kid})
    return base64.urlsafe_b64encode(header).rstrip(b"=") + b"."


def encode(identity: Identity, typ: str, claims: Mapping[str, Any]) -> str:
    """Sign ``claims`` as a compact JWS with header ``{"alg", "typ", "kid"}``.

        encode(agent, ACT_TYP, {"iss": "alice", ...})   # 'eyJhbGciOiJFUzI1NiIs...'

    ``claims`` must be JSON-serialisable (``ValueError``/``TypeError`` otherwise); no claim checks
    happen here, the token classes do those.
    """
    payload = _payload_json(claims if type(claims) is dict else dict(claims))
    # base64.urlsafe_b64encode is two Python layers over binascii: called directly (same bytes).
    signing_input = _protected_header(identity.kid, identity.alg, typ) + binascii.b2a_base64(
        payload, newline=False
    ).translate(_URLSAFE).rstrip(b"=")
    signature = binascii.b2a_base64(identity.sign(signing_input), newline=False).translate(_URLSAFE)
    return (signing_input + b"." + signature.rstrip(b"=")).decode("ascii")


_URLSAFE = bytes.maketrans(b"+/", b"-_")


# --- decoding ------------------------------------------------------------------------------------


class DecodedJWS:
    """The parts of a compact JWS. ``key`` is set only by :func:`verify` (the key that verified it).

    ``repr()`` shows the header's ``typ``/``alg``/``kid`` only, never the token or the signature.
    """

    __slots__ = ("claims", "header", "key", "signature", "signing_input", "token")

    def __init__(
        self,
        token: str,
        header: dict[str, Any],
        claims: dict[str, Any],
        signing_input: bytes,
        signature: bytes,
        key: PublicKey | None = None,
    ) -> None:
        self.token = token
        self.header = header
        self.claims = claims
        self.signing_input = signing_input
        self.signature = signature
        self.key = key

    @property
    def typ(self) -> Any:
        return self.header.get("typ")

    @property
    def alg(self) -> Any:
        return self.header.get("alg")

    @property
    def kid(self) -> Any:
        return self.header.get("kid")

    def __repr__(self) -> str:
        return f"DecodedJWS(typ={self.typ!r}, alg={self.alg!r}, kid={self.kid!r})"


def _parse_object(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = b64url_decode(segment)
    except ValueError:
        raise MalformedToken(f"the JWS {what} is not base64url") from None
    value = strict_json_loads(raw, error=MalformedToken, what=f"the JWS {what}")
    if not isinstance(value, dict):
        raise MalformedToken(f"the JWS {what} is not a JSON object")
    return value


@functools.lru_cache(maxsize=256)
def _cached_header(segment: str) -> dict[str, Any]:
    return _parse_object(segment, "header")


def _header(segment: str) -> dict[str, Any]:
    # A signer's protected header is the same bytes on every token it issues: parse each distinct
    # (short) header once. Callers get a copy, so the cached dict cannot be altered through them.
    # A malformed header raises and is not cached (lru_cache does not store exceptions).
    if len(segment) <= 512:
        return dict(_cached_header(segment))
    return _parse_object(segment, "header")


def decode(token: str) -> DecodedJWS:
    """Split and parse a compact JWS **without** checking its signature.

        decode(token).claims        # raises MalformedToken on anything that is not header.payload.sig

    Strict: exactly three non-empty base64url parts without padding, header and payload UTF-8 JSON
    objects without duplicate members. The only exception it raises is :class:`MalformedToken`.
    """
    if not isinstance(token, str):
        raise MalformedToken("a compact JWS must be text")
    if len(token) > MAX_TOKEN_LENGTH:
        raise MalformedToken(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken(f"a compact JWS has 3 dot-separated parts, not {len(parts)}")
    header_part, payload_part, signature_part = parts
    if not header_part or not payload_part or not signature_part:
        raise MalformedToken("a compact JWS part is empty")
    header = _header(header_part)
    claims = _parse_object(payload_part, "payload")
    try:
        signature = b64url_decode(signature_part)
    except ValueError:
        raise MalformedToken("the JWS signature is not base64url") from None
    signing_input = f"{header_part}.{payload_part}".encode("ascii")
    return DecodedJWS(token, header, claims, signing_input, signature)


# --- verification ----------------------------------------------------------------------------------


def _short(value: Any) -> str:
    """A header value fit for an error message: repr, truncated (headers are attacker-controlled)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _check_crit(header: Mapping[str, Any]) -> None:
    if "crit" not in header:
        return
    crit = header["crit"]
    if not isinstance(crit, list) or not crit or not all(isinstance(name, str) for name in crit):
        raise CriticalHeaderUnsupported("the JWS 'crit' header must be a non-empty list of names")
    unknown = [name for name in crit if name not in UNDERSTOOD_CRIT or name not in header]
    if unknown:
        raise CriticalHeaderUnsupported(
            f"the JWS declares critical extensions this verifier does not understand: {_short(unknown)}"
        )


def verify(token: str, trust: TrustStore, *, typs: Collection[str]) -> DecodedJWS:
    """Decode ``token`` and check its header and signature against ``trust``.

        jws = verify(token, trust, typs={ACT_TYP})
        jws.key        # the PublicKey that verified it

    Order (first failure wins): parse (:class:`MalformedToken`), ``typ`` ∈ ``typs``
    (:class:`InvalidTokenType`), ``crit`` (:class:`CriticalHeaderUnsupported`), ``alg`` ∈
    :data:`ALLOWED_ALGS` (:class:`AlgorithmNotAllowed`), ``kid`` present (:class:`MalformedToken`)
    and trusted (:class:`UnknownKey`), the key's algorithm equals ``alg``
    (:class:`AlgorithmNotAllowed`), the signature (:class:`TokenSignatureInvalid`). Claims are not
    checked here.
    """
    jws = decode(token)
    header = jws.header
    typ = header.get("typ")
    if not isinstance(typ, str) or typ not in typs:
        expected = " or ".join(sorted(typs))
        raise InvalidTokenType(f"the token's typ is {_short(typ)}, expected {expected}", typ=str(typ)[:40])
    _check_crit(header)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGS:
        raise AlgorithmNotAllowed(f"JWS algorithm {_short(alg)} is not allowed", alg=str(alg)[:40])
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise MalformedToken("the JWS header has no 'kid'")
    key = trust.get(kid)
    if key.alg != alg:
        # Algorithm confusion: a header may not pick another algorithm than the key's own.
        raise AlgorithmNotAllowed(f"the token says {alg} but the key for its kid is {key.alg}", alg=alg)
    if not key.verify(jws.signing_input, jws.signature):
        raise TokenSignatureInvalid("the token's signature does not verify with its key", kid=key.kid)
    jws.key = key
    return jws
