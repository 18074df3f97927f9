"""Workload Identity Tokens (WIT), the credential of the ``wimse`` HTTP-signature profile.

A WIT is a JWT (``typ: wit+jwt``) by which an issuer vouches that a workload (``sub``) holds a key:
``cnf.jwk`` carries that public key *with its* ``alg``. The workload sends the WIT in the
``Workload-Identity-Token`` header and signs each request with the confirmed key; the verifier checks
the WIT with the issuer's key (from a :class:`~mcpclient_auth.keys.TrustStore`) and then the request
signature with the key the WIT confirms (draft-ietf-wimse-http-signature, draft-ietf-wimse-workload-creds).

    wit = WorkloadIdentityToken.issue(issuer, subject="spiffe://example.org/agent", key=agent)
    signer = RequestSigner(agent, profile="wimse", workload_identity_token=wit.token)
    checked = WorkloadIdentityToken.verify(wit.token, TrustStore([issuer]))
    checked.key            # PublicKey of the agent (the signature key of the wimse profile)
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from . import jose
from ._claims import check_times, now_seconds, require_int, require_str
from .errors import ClaimsInvalid, KeyFormatError, TokenExpired
from .keys import Identity, PublicKey, TrustStore

__all__ = ["WIT_HEADER", "WIT_TYP", "WorkloadIdentityToken"]

WIT_TYP = "wit+jwt"
WIT_HEADER = "Workload-Identity-Token"

#: JWK members that describe the confirmed key (RFC 7638 members plus ``alg``); nothing private.
_CNF_MEMBERS = ("kty", "crv", "x", "y", "alg")


class WorkloadIdentityToken:
    """A WIT: ``iss``, ``sub``, ``exp``, ``jti`` and the confirmed key ``cnf.jwk``.

    ``repr()`` shows subject, issuer and key id, never the token.
    """

    __slots__ = ("claims", "header", "key", "token")

    def __init__(self, token: str, header: dict[str, Any], claims: dict[str, Any], key: PublicKey) -> None:
        self.token = token
        self.header = header
        self.claims = claims
        #: The confirmed (workload) public key from ``cnf.jwk``.
        self.key = key

    # claims ----------------------------------------------------------------------------------------

    @property
    def subject(self) -> str:
        return str(self.claims["sub"])

    @property
    def issuer(self) -> str:
        return str(self.claims["iss"])

    @property
    def expires_at(self) -> int:
        return int(self.claims["exp"])

    @property
    def jti(self) -> str:
        return str(self.claims["jti"])

    # construction ----------------------------------------------------------------------------------

    @classmethod
    def issue(
        cls,
        issuer: Identity,
        *,
        subject: str,
        key: Identity | PublicKey,
        ttl: int = 3600,
        now: float | None = None,
        jti: str | None = None,
        **extra: Any,
    ) -> WorkloadIdentityToken:
        """Sign a WIT for ``subject`` confirming ``key`` (the workload's signing key), valid ``ttl`` s."""
        if not isinstance(subject, str) or not subject:
            raise ClaimsInvalid("a WIT needs a non-empty subject", claim="sub")
        if ttl <= 0:
            raise ClaimsInvalid("a WIT lifetime must be positive", claim="exp")
        public = key.public if isinstance(key, Identity) else key
        iat = int(time.time() if now is None else now)
        claims: dict[str, Any] = dict(extra)
        claims.update(
            iss=issuer.name,
            sub=subject,
            iat=iat,
            exp=iat + int(ttl),
            jti=jti or str(uuid.uuid4()),
            cnf={"jwk": _cnf_jwk(public)},
        )
        token = jose.encode(issuer, WIT_TYP, claims)
        return cls.decode(token)

    @classmethod
    def decode(cls, token: str) -> WorkloadIdentityToken:
        """Parse without checking the issuer's signature (:class:`MalformedToken`, :class:`ClaimsInvalid`)."""
        jws = jose.decode(token)
        return cls(token, jws.header, jws.claims, _check_claims(jws.claims))

    @classmethod
    def verify(
        cls,
        token: str,
        trust: TrustStore,
        *,
        now: float | None = None,
        skew: int = 60,
        verify_time: bool = True,
    ) -> WorkloadIdentityToken:
        """Check ``typ``, algorithm, the issuer's key (by ``kid``) and signature, claims and time.

        Errors: the :mod:`~mcpclient_auth.jose` family (:class:`InvalidTokenType`, :class:`UnknownKey`,
        :class:`TokenSignatureInvalid`, ...), :class:`ClaimsInvalid`, :class:`TokenExpired`,
        :class:`TokenNotYetValid`.
        """
        jws = jose.verify(token, trust, typs={WIT_TYP})
        key = _check_claims(jws.claims)
        if verify_time:
            exp = int(jws.claims["exp"])
            if "iat" in jws.claims:
                check_times(int(jws.claims["iat"]), exp, now=now, skew=skew)
            elif now_seconds(now) >= exp + skew:
                raise TokenExpired("the WIT has expired", exp=exp)
        return cls(token, jws.header, jws.claims, key)

    def __repr__(self) -> str:
        sub, iss = self.claims.get("sub"), self.claims.get("iss")
        return f"WorkloadIdentityToken(sub={sub!r}, iss={iss!r}, kid={self.key.kid!r})"


def _cnf_jwk(public: PublicKey) -> dict[str, Any]:
    jwk = public.to_jwk()
    return {name: jwk[name] for name in _CNF_MEMBERS if name in jwk}


def _check_claims(claims: dict[str, Any]) -> PublicKey:
    require_str(claims, "iss")
    require_str(claims, "sub")
    require_str(claims, "jti")
    require_int(claims, "exp")
    if "iat" in claims:
        require_int(claims, "iat")
    if not isinstance(claims.get("cnf"), dict) or not isinstance(claims["cnf"].get("jwk"), dict):
        raise ClaimsInvalid("a WIT must confirm a key in 'cnf.jwk'", claim="cnf")
    jwk: dict[str, Any] = claims["cnf"]["jwk"]
    alg = jwk.get("alg")
    if not isinstance(alg, str) or alg not in jose.ALLOWED_ALGS:
        # The wimse profile takes the HTTP signature algorithm from cnf.jwk.alg, so it must be pinned.
        raise ClaimsInvalid("the WIT's 'cnf.jwk' must name an allowed 'alg' (ES256 or EdDSA)", claim="cnf")
    if "d" in jwk:
        raise ClaimsInvalid("the WIT's 'cnf.jwk' must be a public key", claim="cnf")
    try:
        return PublicKey.from_jwk({name: jwk[name] for name in _CNF_MEMBERS if name in jwk})
    except KeyFormatError:
        raise ClaimsInvalid("the WIT's 'cnf.jwk' is not a usable public key", claim="cnf") from None
