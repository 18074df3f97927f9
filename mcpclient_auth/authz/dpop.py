"""DPoP (RFC 9449): sender-constrained access tokens, at the token endpoint and at the MCP server.

    dpop = DPoP(agent)                        # prove with the agent's key (ES256 or Ed25519) ...
    dpop = DPoP()                             # ... or with a fresh ES256 key of its own (memory only)
    source = TokenExchange(..., dpop=dpop)    # a proof on every token request; token_type must be DPoP
    run = AgentRun(..., token_source=source)  # Authorization: DPoP <token> + a fresh proof per request

    proof = dpop.proof("POST", "https://mcp.example.com/mcp?x=1", access_token=token.token)
    proof.token      # the DPoP header value (a dpop+jwt JWS); never in repr()
    proof.jti        # what the ledger records for the call

A proof (RFC 9449 §4.2) is a JWS with header ``typ=dpop+jwt``, ``alg`` (``ES256`` or ``EdDSA``) and
``jwk`` (the public key: only its required members, never ``d``), and claims ``jti`` (fresh, 128 bits
of randomness), ``htm`` (the method), ``htu`` (the target URI without query and fragment, scheme and
host lower-cased, default port dropped), ``iat``, ``ath`` (base64url SHA-256 of the access token, at a
resource server) and ``nonce`` (when a server gave one). The token endpoint and the resource server
each keep their own nonce (§8, §9): :class:`DPoP` remembers the last nonce per role (``"as"``/``"rs"``)
and origin, so one server's nonce is never sent to another, and later proofs carry it without a
challenge first.

A resource server checks a proof with :func:`verify_proof` (§4.3, §7.1) once its own token validation
told it the token's ``cnf.jkt``; the reference verifier (:mod:`mcpclient_auth.server`) does not validate
access tokens, so it does not call this itself (it only insists that our signature covers the header):

    proof = verify_proof(request.headers["DPoP"], method="POST", url=str(request.url),
                         access_token=token, jkt=claims["cnf"]["jkt"], replay=replay_store)

Pure module: no I/O, no httpx (randomness and the clock aside).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any, Literal
from urllib.parse import urlsplit

from .._encoding import b64url_encode, compact_json, sha256_b64url
from ..errors import ConfigurationError, DPoPProofInvalid, KeyFormatError, MalformedToken, ReplayDetected
from ..jose import ALLOWED_ALGS, decode
from ..keys import Identity, PublicKey, jwk_thumbprint
from ..replay import ReplayClaim, ReplayStore

__all__ = [
    "DPOP_HEADER",
    "DPOP_NONCE_HEADER",
    "DPOP_SCHEME",
    "DPOP_TOKEN_TYPE",
    "DPOP_TYP",
    "USE_DPOP_NONCE",
    "DPoP",
    "DPoPProof",
    "VerifiedProof",
    "access_token_hash",
    "htu",
    "valid_nonce",
    "verify_proof",
]

DPOP_TYP = "dpop+jwt"
#: The request header that carries the proof, and the response header that carries a nonce.
DPOP_HEADER = "DPoP"
DPOP_NONCE_HEADER = "DPoP-Nonce"
#: The ``Authorization`` scheme (RFC 9449 §7.1) and the ``token_type`` of a DPoP-bound token (§5).
DPOP_SCHEME = "DPoP"
DPOP_TOKEN_TYPE = "DPoP"
#: The ``error`` of a token endpoint (400) or resource server (401) that wants a nonce (§8, §9).
USE_DPOP_NONCE = "use_dpop_nonce"

Role = Literal["as", "rs"]

# RFC 9449 §8.1: nonce = 1*NQCHAR; NQCHAR = %x21 / %x23-5B / %x5D-7E. Servers send short values; a
# bound keeps a hostile one from growing every later proof.
_NONCE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,512}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110 §9.1: a method is a token (tchar), as httpx sends it.
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
#: The JWK members RFC 7638 names per key type: all a verifier needs, nothing that names the agent.
_REQUIRED_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
DEFAULT_MAX_ORIGINS = 1024


@functools.lru_cache(maxsize=256)
def htu(url: str) -> str:
    """The ``htu`` of a request to ``url`` (RFC 9449 §4.2): no query, no fragment, no user info;
    scheme and host lower-case, the default port dropped, an empty path as ``/``.

        htu("HTTPS://MCP.example.com:443/mcp?session=1")   # 'https://mcp.example.com/mcp'

    Raises :class:`~mcpclient_auth.errors.ConfigurationError` for anything but an absolute http(s) URL.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except (ValueError, TypeError, AttributeError):
        raise ConfigurationError("a DPoP proof needs an absolute http(s) URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not host:
        raise ConfigurationError("a DPoP proof needs an absolute http(s) URL")
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


def _origin(url: str) -> str:
    parts = urlsplit(htu(url))
    return f"{parts.scheme}://{parts.netloc}"


def access_token_hash(access_token: str) -> str:
    """``ath`` (RFC 9449 §4.2): base64url SHA-256 of the ASCII access token."""
    try:
        encoded = access_token.encode("ascii")
    except UnicodeEncodeError:
        # RFC 6750 token68 is ASCII; a server can be handed a latin-1-decoded header value.
        raise DPoPProofInvalid("the access token is not ASCII, so it cannot be DPoP-bound") from None
    return b64url_encode(hashlib.sha256(encoded).digest())


def valid_nonce(value: object) -> bool:
    """Whether ``value`` is a nonce we accept from a server (RFC 9449 §8.1 syntax, at most 512 chars)."""
    return isinstance(value, str) and _NONCE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class DPoPProof:
    """One proof: ``token`` is the ``DPoP`` header value (kept out of ``repr``), the rest its claims."""

    token: str = field(repr=False)
    jti: str
    htm: str
    htu: str
    iat: int
    nonce: str | None = field(default=None, repr=False)
    ath: str | None = field(default=None, repr=False)


class DPoP:
    """A DPoP key with its nonce memory: the ``dpop=`` option of token sources and runs.

    ``key`` is an :class:`~mcpclient_auth.keys.Identity` (the agent's own key, or a dedicated one);
    without it a fresh ES256 key is generated and lives only in this object (a restart means new
    tokens, which is the point of an ephemeral key). ``thumbprint`` is the RFC 7638 ``jkt`` the
    authorization server binds tokens to; the token caches key on it.

    Thread-safe: the nonce memory is guarded by a lock; proofs share nothing else.
    """

    __slots__ = ("_header", "_key", "_lock", "_max_origins", "_nonces", "_thumbprint")

    def __init__(self, key: Identity | None = None, *, max_origins: int = DEFAULT_MAX_ORIGINS) -> None:
        if key is None:
            key = Identity.generate("ES256", name="dpop")
        if not isinstance(key, Identity):
            raise ConfigurationError("DPoP(key) needs an Identity (ES256 or Ed25519 private key)")
        if max_origins < 1:
            raise ConfigurationError("max_origins must be at least 1")
        public = key.public.to_jwk()
        members = {name: public[name] for name in _REQUIRED_MEMBERS[public["kty"]]}
        self._key = key
        self._thumbprint = jwk_thumbprint(members)
        # The protected header is the same bytes on every proof: serialised and encoded once.
        header = compact_json({"typ": DPOP_TYP, "alg": key.alg, "jwk": members})
        self._header = base64.urlsafe_b64encode(header).rstrip(b"=") + b"."
        self._lock = threading.Lock()
        self._max_origins = max_origins
        self._nonces: OrderedDict[tuple[Role, str], str] = OrderedDict()

    @classmethod
    def generate(cls, alg: str = "ES256") -> DPoP:
        """A DPoP key of its own (``"ES256"`` or ``"EdDSA"``), held in memory only."""
        return cls(Identity.generate(alg, name="dpop"))

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 JWK thumbprint (``jkt``) of the proof key: what a DPoP-bound token's ``cnf``
        names."""
        return self._thumbprint

    @property
    def alg(self) -> str:
        return self._key.alg

    @property
    def key(self) -> Identity:
        return self._key

    def public_jwk(self) -> dict[str, str]:
        """The ``jwk`` header member: the public key's required members only."""
        public = self._key.public.to_jwk()
        return {name: public[name] for name in _REQUIRED_MEMBERS[public["kty"]]}

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        now: float | None = None,
    ) -> DPoPProof:
        """A fresh proof for one request (a new ``jti`` every time; RFC 9449 §4.2)."""
        if not isinstance(method, str) or not _METHOD.fullmatch(method):
            raise ConfigurationError("a DPoP proof needs the request's HTTP method")
        if not isinstance(url, str):
            raise ConfigurationError("a DPoP proof needs an absolute http(s) URL")
        target = htu(url)
        jti = secrets.token_urlsafe(16)
        iat = int(time.time() if now is None else now)
        # One proof per request: the claims are written out directly (every value is either JSON-escaped
        # or of a syntax without quote or backslash: base64url, a tchar method, an integer, NQCHARs).
        payload = f'{{"jti":"{jti}","htm":"{method}","htu":{encode_basestring_ascii(target)},"iat":{iat}'
        ath = None
        if access_token is not None:
            ath = access_token_hash(access_token)
            payload += f',"ath":"{ath}"'
        if nonce is not None:
            if not valid_nonce(nonce):
                raise ConfigurationError("a DPoP nonce must be 1..512 visible ASCII characters, no quote")
            payload += f',"nonce":"{nonce}"'
        payload += "}"
        signing_input = self._header + base64.urlsafe_b64encode(payload.encode("ascii")).rstrip(b"=")
        signature = base64.urlsafe_b64encode(self._key.sign(signing_input)).rstrip(b"=")
        token = (signing_input + b"." + signature).decode("ascii")
        return DPoPProof(token, jti, method, target, iat, nonce, ath)

    # --- nonce memory (RFC 9449 §8: per authorization server, §9: per resource server) -------------

    def nonce_for(self, role: Role, url: str) -> str | None:
        """The last nonce the ``role`` server at ``url``'s origin gave us, if any."""
        key = (role, _origin(url))
        with self._lock:
            return self._nonces.get(key)

    def remember_nonce(self, role: Role, url: str, nonce: object) -> bool:
        """Keep ``nonce`` for the ``role`` server at ``url``'s origin. False (and nothing kept) for a
        value that is not a valid nonce; True when kept (also when unchanged)."""
        if role not in ("as", "rs"):
            raise ConfigurationError("role is 'as' (token endpoint) or 'rs' (MCP server)")
        if not valid_nonce(nonce):
            return False
        assert isinstance(nonce, str)
        key = (role, _origin(url))
        with self._lock:
            self._nonces[key] = nonce
            self._nonces.move_to_end(key)
            while len(self._nonces) > self._max_origins:
                self._nonces.popitem(last=False)
        return True

    def __repr__(self) -> str:
        return f"DPoP(alg={self.alg!r}, jkt={self._thumbprint!r})"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("DPoP objects hold a private key and cannot be pickled")


# --- checking a proof (a resource server's side, RFC 9449 §4.3) -------------------------------------

#: How far ``iat`` may lie from the verifier's clock (seconds), either way.
DEFAULT_PROOF_WINDOW = 60
_REPLAY_KIND = "dpop"


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """A proof :func:`verify_proof` accepted: its ``jti``, the key's thumbprint, ``iat``, ``nonce``."""

    jti: str
    jkt: str
    iat: int
    nonce: str | None = field(default=None, repr=False)


def _refuse(reason: str) -> DPoPProofInvalid:
    return DPoPProofInvalid(f"the DPoP proof is not acceptable ({reason})", reason=reason)


def verify_proof(
    proof: str | None,
    *,
    method: str,
    url: str,
    access_token: str | None,
    jkt: str | None,
    nonce: str | None = None,
    replay: ReplayStore | None = None,
    window: int = DEFAULT_PROOF_WINDOW,
    now: float | None = None,
) -> VerifiedProof:
    """Check one ``DPoP`` header value as RFC 9449 §4.3 asks; :class:`~mcpclient_auth.errors.DPoPProofInvalid`
    (``reason``: which check) otherwise, never with the proof or the token in the message.

    ``jkt`` is the token's ``cnf.jkt`` (``None`` at a token endpoint, where the proof's key is what gets
    bound); ``access_token`` the token presented with it (``ath`` must be its hash; ``None`` at a token
    endpoint, where ``ath`` must be absent); ``nonce`` the nonce the server currently demands;
    ``replay`` claims the ``jti`` per key until ``iat + window`` (a replayed proof raises
    :class:`~mcpclient_auth.errors.ReplayDetected`).
    """
    if not isinstance(proof, str) or not proof or "," in proof:
        raise _refuse("missing or more than one proof")
    try:
        jws = decode(proof)
    except MalformedToken:
        raise _refuse("not a compact JWS") from None
    header, claims = jws.header, jws.claims
    alg = header.get("alg")
    if header.get("typ") != DPOP_TYP or alg not in ALLOWED_ALGS:
        raise _refuse("typ or alg")
    if "crit" in header:
        raise _refuse("crit")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or "d" in jwk:
        raise _refuse("jwk missing or private")
    try:
        key = PublicKey.from_jwk({k: v for k, v in jwk.items() if k not in ("kid", "alg", "use", "name")})
    except KeyFormatError:
        raise _refuse("jwk") from None
    if key.alg != alg or not key.verify(jws.signing_input, jws.signature):
        raise _refuse("signature")
    if jkt is not None and key.thumbprint != jkt:
        raise _refuse("key is not the one the token is bound to")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 16 <= len(jti) <= 256:
        raise _refuse("jti")
    if claims.get("htm") != method:
        raise _refuse("htm")
    claimed = claims.get("htu")
    try:
        if not isinstance(claimed, str) or "?" in claimed or "#" in claimed or htu(claimed) != htu(url):
            raise _refuse("htu")
    except ConfigurationError:
        raise _refuse("htu") from None
    iat = claims.get("iat")
    current = time.time() if now is None else now
    if type(iat) is not int or abs(current - iat) > window:
        raise _refuse("iat")
    ath = claims.get("ath")
    if access_token is None:
        if ath is not None:
            raise _refuse("ath without an access token")
    elif (
        not isinstance(ath, str)
        or not ath.isascii()  # compare_digest raises TypeError on non-ASCII str
        or not secrets.compare_digest(ath, access_token_hash(access_token))
    ):
        raise _refuse("ath")
    got_nonce = claims.get("nonce")
    if nonce is not None and got_nonce != nonce:
        raise _refuse("nonce")
    if replay is not None:
        digest = sha256_b64url(jti.encode("utf-8", "surrogatepass"))[:32]
        # Remembered one second past the window: a proof accepted at exactly iat + window must still
        # be claimed (a store drops claims whose expiry is not after now).
        claim = ReplayClaim(key.thumbprint, _REPLAY_KIND, f"p:{digest}", float(iat + window + 1))
        try:
            replay.claim([claim], now=current)
        except ReplayDetected:
            raise ReplayDetected("this DPoP proof was already used", kind=_REPLAY_KIND) from None
    return VerifiedProof(jti, key.thumbprint, iat, got_nonce if isinstance(got_nonce, str) else None)
