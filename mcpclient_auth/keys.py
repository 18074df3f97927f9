"""Signing identities and trust stores.

An :class:`Identity` is a private key with a name, an algorithm and a ``kid`` (the RFC 7638 JWK
thumbprint of its public key). A :class:`TrustStore` holds public keys by ``kid``; every verifier in
the SDK resolves keys through one.

    agent = Identity.generate("ES256", name="agent-1")
    agent.save("keys/agent.jwk")                 # private JWK, file mode 0600
    trust = TrustStore([agent])                  # or TrustStore.from_jwks("keys/jwks.json")
    sig = agent.sign(b"data")
    trust.get(agent.kid).verify(b"data", sig)    # True

Algorithms live in an explicit registry (``ALGORITHMS``): ``ES256`` (P-256, raw r||s signatures) and
``EdDSA`` (Ed25519). Nothing else is accepted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any, ClassVar, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ._encoding import b64url_decode, b64url_encode
from .errors import ConfigurationError, KeyFormatError, TrustRoleConflict, TrustRolesMissing, UnknownKey

__all__ = [
    "ALGORITHMS",
    "DEFAULT_MAX_DELEGATION_DEPTH",
    "ROLES_MEMBER",
    "Identity",
    "Preverified",
    "PublicKey",
    "SigningAlgorithm",
    "TrustStore",
    "jwk_thumbprint",
]

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKeyObject = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


# --- algorithm registry ------------------------------------------------------------------------------


#: What a verification may raise for a signature that is not valid: ``InvalidSignature``, and
#: ``ValueError`` for values ``cryptography`` refuses to even try. Both mean "not valid" (``False``),
#: never a crash; this is the one verify policy of JWS and RFC 9421 signatures alike.
_NOT_VALID = (InvalidSignature, ValueError)
#: Concrete classes seen to be ``ec.EllipticCurvePublicKey`` (see _ES256.verify).
_EC_PUBLIC_TYPES: set[type] = set()


class SigningAlgorithm:
    """One JOSE signing algorithm: key generation, raw signatures, JWK (de)serialisation.

    The same objects sign and verify the SDK's HTTP message signatures (``http_name``):
    :mod:`mcpclient_auth._rfc9421` delegates ``ecdsa-p256-sha256`` and ``ed25519`` here. ``sign``
    raises :class:`~mcpclient_auth.errors.KeyFormatError` for a key of another type; ``verify``
    returns ``False`` for anything that is not a valid signature by ``key`` over ``data``.
    """

    name: ClassVar[str]
    #: The RFC 9421 algorithm name for HTTP message signatures made with this key type.
    http_name: ClassVar[str]
    signature_size: ClassVar[int]

    def generate(self) -> PrivateKey:
        raise NotImplementedError

    def sign(self, key: PrivateKey, data: bytes) -> bytes:
        raise NotImplementedError

    def signer(self, key: PrivateKey) -> Callable[[bytes], bytes]:
        """``sign`` bound to ``key`` (an :class:`Identity` signs with it; its key never changes).
        Subclasses check the key's type here, once, instead of on every signature."""
        return lambda data: self.sign(key, data)

    def verify(self, key: PublicKeyObject, data: bytes, signature: bytes) -> bool:
        raise NotImplementedError

    def owns(self, key: PrivateKey | PublicKeyObject) -> bool:
        raise NotImplementedError

    def public_members(self, key: PublicKeyObject) -> dict[str, str]:
        """The required public JWK members, in RFC 7638 (lexicographic) order."""
        raise NotImplementedError

    def public_from_jwk(self, jwk: Mapping[str, Any]) -> PublicKeyObject:
        raise NotImplementedError

    def private_from_jwk(self, jwk: Mapping[str, Any]) -> PrivateKey:
        raise NotImplementedError

    def private_members(self, key: PrivateKey) -> dict[str, str]:
        raise NotImplementedError


class _ES256(SigningAlgorithm):
    name = "ES256"
    http_name = "ecdsa-p256-sha256"
    signature_size = 64
    _ecdsa = ec.ECDSA(hashes.SHA256())

    def generate(self) -> PrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def sign(self, key: PrivateKey, data: bytes) -> bytes:
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise KeyFormatError("ES256 signs with an EC P-256 private key only")
        # JWS and RFC 9421 both use the fixed-width raw form r||s, never DER.
        return _raw_ecdsa(key.sign(data, self._ecdsa))

    def signer(self, key: PrivateKey) -> Callable[[bytes], bytes]:
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise KeyFormatError("ES256 signs with an EC P-256 private key only")
        # Two signatures per MCP call: the type checks above (ABC instance checks) run once per
        # Identity, not per signature; the key object is fixed for the Identity's lifetime.
        sign, ecdsa = key.sign, self._ecdsa
        return lambda data: _raw_ecdsa(sign(data, ecdsa))

    def verify(self, key: PublicKeyObject, data: bytes, signature: bytes) -> bool:
        # isinstance() against the ABC runs ABCMeta.__instancecheck__ (a Python frame) on every
        # verification; a concrete class once found to be an EllipticCurvePublicKey is remembered
        # (ABC membership is never withdrawn). The curve is still checked on every key.
        if type(key) not in _EC_PUBLIC_TYPES:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            _EC_PUBLIC_TYPES.add(type(key))
        ec_key = cast(ec.EllipticCurvePublicKey, key)
        if not isinstance(ec_key.curve, ec.SECP256R1) or len(signature) != 64:
            return False
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        try:
            ec_key.verify(encode_dss_signature(r, s), data, self._ecdsa)
        except _NOT_VALID:
            return False
        return True

    def owns(self, key: PrivateKey | PublicKeyObject) -> bool:
        return isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
            key.curve, ec.SECP256R1
        )

    def public_members(self, key: PublicKeyObject) -> dict[str, str]:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        numbers = key.public_numbers()
        return {
            "crv": "P-256",
            "kty": "EC",
            "x": b64url_encode(numbers.x.to_bytes(32, "big")),
            "y": b64url_encode(numbers.y.to_bytes(32, "big")),
        }

    def public_from_jwk(self, jwk: Mapping[str, Any]) -> PublicKeyObject:
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            raise KeyFormatError("ES256 needs an EC P-256 JWK")
        x, y = _coord(jwk, "x", 32), _coord(jwk, "y", 32)
        try:
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
        except ValueError:
            raise KeyFormatError("the JWK's point is not on the P-256 curve") from None

    def private_from_jwk(self, jwk: Mapping[str, Any]) -> PrivateKey:
        public = self.public_from_jwk(jwk)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        d = _coord(jwk, "d", 32)
        try:
            key = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
        except ValueError:
            raise KeyFormatError("the JWK's private value is not a valid P-256 scalar") from None
        if key.public_key().public_numbers() != public.public_numbers():
            raise KeyFormatError("the JWK's private and public parts do not match")
        return key

    def private_members(self, key: PrivateKey) -> dict[str, str]:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return {"d": b64url_encode(key.private_numbers().private_value.to_bytes(32, "big"))}


def _der_fits_32(value: bytes) -> bool:
    """A minimal DER INTEGER body of a positive number below 2**256: no sign bit, at most 32
    significant bytes, a leading 0x00 only as the sign pad of a byte with its high bit set."""
    size = len(value)
    if size == 1:
        return 0 < value[0] < 0x80
    if value[0] == 0:
        return value[1] >= 0x80 and size <= 33
    return value[0] < 0x80 and size <= 32


def _raw_ecdsa(der: bytes) -> bytes:
    """A P-256 ECDSA signature from DER (``SEQUENCE { INTEGER r, INTEGER s }``) to raw r||s (64 bytes).

    OpenSSL's DER is read directly (slices, no integers built); any shape this fast path is not sure
    of — long-form lengths, a negative or oversize integer, trailing bytes — goes to the strict
    ``decode_dss_signature`` path, whose answer (or error) is the reference
    (``test_raw_ecdsa_fast_path_agrees_with_the_strict_path``).
    """
    n = len(der)
    # 0x30 len 0x02 rlen r... 0x02 slen s...; every P-256 signature fits the short length form.
    if 8 <= n <= 72 and der[0] == 0x30 and der[1] == n - 2 and der[2] == 0x02:
        r_len = der[3]
        s_at = 6 + r_len
        if 0 < r_len <= 33 and s_at < n and der[s_at - 2] == 0x02 and der[s_at - 1] == n - s_at:
            r, s = der[4 : s_at - 2], der[s_at:]
            if _der_fits_32(r) and _der_fits_32(s):
                return r[-32:].rjust(32, b"\0") + s[-32:].rjust(32, b"\0")
    r_int, s_int = decode_dss_signature(der)
    return r_int.to_bytes(32, "big") + s_int.to_bytes(32, "big")


class _EdDSA(SigningAlgorithm):
    name = "EdDSA"
    http_name = "ed25519"
    signature_size = 64

    def generate(self) -> PrivateKey:
        return ed25519.Ed25519PrivateKey.generate()

    def sign(self, key: PrivateKey, data: bytes) -> bytes:
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise KeyFormatError("EdDSA signs with an Ed25519 private key only")
        return key.sign(data)

    def signer(self, key: PrivateKey) -> Callable[[bytes], bytes]:
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise KeyFormatError("EdDSA signs with an Ed25519 private key only")
        return key.sign

    def verify(self, key: PublicKeyObject, data: bytes, signature: bytes) -> bool:
        if not isinstance(key, ed25519.Ed25519PublicKey) or len(signature) != 64:
            return False
        try:
            key.verify(signature, data)
        except _NOT_VALID:
            return False
        return True

    def owns(self, key: PrivateKey | PublicKeyObject) -> bool:
        return isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey)

    def public_members(self, key: PublicKeyObject) -> dict[str, str]:
        assert isinstance(key, ed25519.Ed25519PublicKey)
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw)}

    def public_from_jwk(self, jwk: Mapping[str, Any]) -> PublicKeyObject:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise KeyFormatError("EdDSA needs an OKP Ed25519 JWK")
        return ed25519.Ed25519PublicKey.from_public_bytes(_coord(jwk, "x", 32))

    def private_from_jwk(self, jwk: Mapping[str, Any]) -> PrivateKey:
        public = self.public_from_jwk(jwk)
        key = ed25519.Ed25519PrivateKey.from_private_bytes(_coord(jwk, "d", 32))
        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        if key.public_key().public_bytes(*raw) != public.public_bytes(*raw):
            raise KeyFormatError("the JWK's private and public parts do not match")
        return key

    def private_members(self, key: PrivateKey) -> dict[str, str]:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return {"d": b64url_encode(raw)}


#: The only algorithms the SDK signs or verifies with. ``Ed25519`` is accepted as an alias of ``EdDSA``.
ALGORITHMS: dict[str, SigningAlgorithm] = {"ES256": _ES256(), "EdDSA": _EdDSA()}
_ALIASES = {"Ed25519": "EdDSA"}


def _algorithm(name: str) -> SigningAlgorithm:
    try:
        return ALGORITHMS[_ALIASES.get(name, name)]
    except (KeyError, TypeError):
        raise KeyFormatError(f"unsupported algorithm {name!r}; use one of {sorted(ALGORITHMS)}") from None


def _algorithm_for(key: PrivateKey | PublicKeyObject) -> SigningAlgorithm:
    for algorithm in ALGORITHMS.values():
        if algorithm.owns(key):
            return algorithm
    raise KeyFormatError("unsupported key type; use an EC P-256 or an Ed25519 key")


def _coord(jwk: Mapping[str, Any], member: str, size: int) -> bytes:
    value = jwk.get(member)
    if not isinstance(value, str):
        raise KeyFormatError(f"JWK member {member!r} is missing")
    try:
        raw = b64url_decode(value)
    except ValueError:
        raise KeyFormatError(f"JWK member {member!r} is not base64url") from None
    if len(raw) != size:
        raise KeyFormatError(f"JWK member {member!r} has the wrong length")
    return raw


def jwk_thumbprint(public_members: Mapping[str, str]) -> str:
    """RFC 7638 thumbprint: base64url(SHA-256) over the required members, sorted, no whitespace."""
    canonical = json.dumps(dict(sorted(public_members.items())), separators=(",", ":"))
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


# --- public keys -----------------------------------------------------------------------------------

#: Signatures found valid ahead of their strict check (see :class:`Preverified`), in this context only.
_PREVERIFIED: ContextVar[set[tuple[str, bytes, bytes]] | None] = ContextVar("_PREVERIFIED", default=None)


class Preverified:
    """Run signature checks ahead of the code that asks for them, back to back.

    A ledger verifier calls ``PublicKey.verify`` once per token, between a lot of Python (line
    parsing, claim checks) that evicts the CPU caches: the same ECDSA verification costs ≈ 13 µs
    more there than in a tight loop. So it checks a batch of signatures first (:meth:`add`), then
    runs its strict path unchanged inside ``with batch:`` — where ``PublicKey.verify`` answers
    ``True`` for exactly a (key thumbprint, data, signature) that :meth:`add` found valid, once, and
    verifies everything else itself. Only successes are kept; nothing outside the block, or in
    another thread or context, sees them.

        batch = Preverified()
        for key, data, signature in upcoming:
            batch.add(key, data, signature)
        with batch:
            ...  # the usual jose.verify / ExecutionContextToken.verify calls
    """

    __slots__ = ("_ok", "_reset")

    def __init__(self) -> None:
        self._ok: set[tuple[str, bytes, bytes]] = set()
        self._reset: Token[set[tuple[str, bytes, bytes]] | None] | None = None

    def add(self, key: PublicKey, data: bytes, signature: bytes) -> None:
        """Verify now; remember the signature only if it is valid."""
        if key._algorithm.verify(key._key, data, signature):
            self._ok.add((key._thumbprint, data, signature))

    def __len__(self) -> int:
        return len(self._ok)

    def __enter__(self) -> Preverified:
        self._reset = _PREVERIFIED.set(self._ok)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reset is not None:
            _PREVERIFIED.reset(self._reset)
            self._reset = None
        self._ok.clear()  # unused results do not outlive the block


class PublicKey:
    """A verification key: algorithm, ``kid`` and optional name. Safe to print and to share."""

    __slots__ = ("_algorithm", "_key", "_members", "_thumbprint", "kid", "name")

    def __init__(self, key: PublicKeyObject, *, kid: str | None = None, name: str | None = None) -> None:
        self._algorithm = _algorithm_for(key)
        self._key = key
        self._members = self._algorithm.public_members(key)
        # Computed once: verifiers compare it with cnf.jkt on every request (~9 µs a computation).
        self._thumbprint = jwk_thumbprint(self._members)
        #: The RFC 7638 thumbprint unless the JWK named another ``kid``.
        self.kid: str = kid or self._thumbprint
        self.name: str | None = name

    @property
    def alg(self) -> str:
        return self._algorithm.name

    @property
    def http_alg(self) -> str:
        """The RFC 9421 algorithm name (``ecdsa-p256-sha256`` or ``ed25519``)."""
        return self._algorithm.http_name

    @property
    def key(self) -> PublicKeyObject:
        """The ``cryptography`` public key object."""
        return self._key

    @property
    def thumbprint(self) -> str:
        return self._thumbprint

    def verify(self, data: bytes, signature: bytes) -> bool:
        """True when ``signature`` (raw r||s for ES256) is valid over ``data``."""
        ahead = _PREVERIFIED.get()
        if ahead:  # only inside a Preverified block of this context (ledger verification)
            entry = (self._thumbprint, data, signature)
            if entry in ahead:
                ahead.discard(entry)  # each result is used once
                return True
        return self._algorithm.verify(self._key, data, signature)

    def to_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = dict(self._members)
        jwk.update(kid=self.kid, alg=self.alg, use="sig")
        if self.name:
            jwk["name"] = self.name
        return jwk

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        if not isinstance(jwk, Mapping):
            raise KeyFormatError("a JWK must be a JSON object")
        algorithm = _algorithm(str(jwk.get("alg") or _default_alg(jwk)))
        kid = jwk.get("kid")
        name = jwk.get("name")
        return cls(
            algorithm.public_from_jwk(jwk),
            kid=kid if isinstance(kid, str) and kid else None,
            name=name if isinstance(name, str) else None,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other._members == self._members and other.kid == self.kid

    def __hash__(self) -> int:
        return hash((self.kid, tuple(self._members.items())))

    def __repr__(self) -> str:
        return f"PublicKey(alg={self.alg!r}, kid={self.kid!r}, name={self.name!r})"


def _default_alg(jwk: Mapping[str, Any]) -> str:
    if jwk.get("kty") == "OKP":
        return "EdDSA"
    if jwk.get("kty") == "EC":
        return "ES256"
    raise KeyFormatError("unsupported JWK key type; use EC P-256 or OKP Ed25519")


# --- identities --------------------------------------------------------------------------------------


class Identity:
    """A private signing key with a name, an algorithm and a ``kid``.

    ``repr()`` and ``str()`` never show key material. ``name`` defaults to the ``kid``; it is what
    mandates use as ``sub`` (agents) or ``iss`` (users).
    """

    __slots__ = ("_algorithm", "_key", "_public", "_sign", "name")

    def __init__(self, key: PrivateKey, *, name: str | None = None, kid: str | None = None) -> None:
        self._algorithm = _algorithm_for(key)
        self._key = key
        self._sign = self._algorithm.signer(key)
        self._public = PublicKey(key.public_key(), kid=kid, name=name)
        self.name: str = name or self._public.kid
        self._public.name = self.name

    # construction ---------------------------------------------------------------------------------

    @classmethod
    def generate(cls, alg: str = "ES256", *, name: str | None = None) -> Identity:
        """A fresh key pair. ``alg`` is ``"ES256"`` (default) or ``"EdDSA"``."""
        return cls(_algorithm(alg).generate(), name=name)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any] | str) -> Identity:
        """From a private JWK (a dict or its JSON text)."""
        if isinstance(jwk, str):
            try:
                jwk = json.loads(jwk)
            except ValueError:
                raise KeyFormatError("the private key is not valid JWK JSON") from None
        if not isinstance(jwk, Mapping):
            raise KeyFormatError("a JWK must be a JSON object")
        if "d" not in jwk:
            raise KeyFormatError("the JWK has no private part ('d'); this is a public key")
        algorithm = _algorithm(str(jwk.get("alg") or _default_alg(jwk)))
        kid, name = jwk.get("kid"), jwk.get("name")
        return cls(
            algorithm.private_from_jwk(jwk),
            name=name if isinstance(name, str) and name else None,
            kid=kid if isinstance(kid, str) and kid else None,
        )

    @classmethod
    def from_pem(
        cls, pem: bytes | str, *, password: bytes | None = None, name: str | None = None
    ) -> Identity:
        """From a PKCS#8 / SEC1 PEM private key (EC P-256 or Ed25519)."""
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError):
            raise KeyFormatError("could not read the PEM private key (wrong format or password)") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise KeyFormatError("unsupported key type; use an EC P-256 or an Ed25519 key")
        return cls(key, name=name)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, password: bytes | None = None) -> Identity:
        """From a file holding a private JWK (JSON) or a PEM private key."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise KeyFormatError(f"cannot read key file {os.fspath(path)!r}: {exc.strerror}") from None
        if data.lstrip().startswith(b"{"):
            return cls.from_jwk(data.decode("utf-8", "replace"))
        return cls.from_pem(data, password=password)

    # use ----------------------------------------------------------------------------------------------

    @property
    def kid(self) -> str:
        return self._public.kid

    @property
    def alg(self) -> str:
        """The JOSE algorithm (``ES256`` or ``EdDSA``)."""
        return self._algorithm.name

    @property
    def http_alg(self) -> str:
        """The RFC 9421 algorithm (``ecdsa-p256-sha256`` or ``ed25519``)."""
        return self._algorithm.http_name

    @property
    def public(self) -> PublicKey:
        return self._public

    @property
    def private_key(self) -> PrivateKey:
        """The ``cryptography`` private key object (for interop; keep it out of logs)."""
        return self._key

    def sign(self, data: bytes) -> bytes:
        """A raw signature over ``data`` (r||s for ES256, 64 bytes either way)."""
        return self._sign(data)

    def verify(self, data: bytes, signature: bytes) -> bool:
        return self._public.verify(data, signature)

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK with ``kid``, ``alg``, ``use`` and ``name``."""
        return self._public.to_jwk()

    def private_jwk(self) -> dict[str, Any]:
        """The private JWK. Handle with care: it is the key."""
        jwk = self.public_jwk()
        jwk.update(self._algorithm.private_members(self._key))
        return jwk

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the private JWK to ``path``, created with mode 0600 (never group/world readable)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.private_jwk(), indent=2).encode("utf-8") + b"\n"
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        return target

    def __repr__(self) -> str:
        return f"Identity(name={self.name!r}, alg={self.alg!r}, kid={self.kid!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling would copy the private key into places nobody audits (caches, task queues).
        raise TypeError("Identity objects hold a private key and cannot be pickled; use save()/load()")


# --- trust stores --------------------------------------------------------------------------------

#: The top-level JWKS member that holds a trust store's roles (RFC 7517 §5: other readers ignore it).
ROLES_MEMBER = "mcpclient_auth"
ROLES_VERSION = 1
#: Default bound on delegation hops (the user's own mandate is depth 0).
DEFAULT_MAX_DELEGATION_DEPTH = 4

#: What to tell someone whose trust store has no roles.
HOW_TO_ADD_ROLES = (
    "register who may sign mandates for whom and which keys are agent keys: "
    "`mcpclient-auth keys trust JWKS --issuer USER_KEY [--principal NAME] --agent AGENT_KEY`, "
    "or TrustStore.add_issuer(key, principals=[...]) and TrustStore.add_agent(key)"
)

KeyLike = Identity | PublicKey | Mapping[str, Any]


class TrustStore:
    """Public keys by ``kid``, and the roles they play; the only place verifiers look keys up.

        TrustStore([agent, user])                   # identities or public keys or JWK dicts
        TrustStore.from_jwks("keys/jwks.json")      # a JWKS file (or a dict), roles included
        TrustStore.from_directory("keys/")          # every *.jwk / *.json holding a JWK or JWKS

    **Roles** (the trust model, docs/SECURITY.md): an *issuer* key signs top-level mandates, and only
    for the ``iss`` values it is registered for — a user's own key for that user, a mandate service's
    key for the principals it speaks for. An *agent* key signs ECTs, requests, records, seals and
    delegations; a mandate binds it with ``cnf.jkt``. No key is both. ``max_delegation_depth`` bounds
    delegation chains. Mandate verifiers refuse a store without roles (:class:`TrustRolesMissing`);
    signature-only uses (HTTP signatures, ECTs) need none.

        trust = TrustStore()
        trust.add_issuer(maria)                          # maria's key, for iss "maria" (its name)
        trust.add_issuer(service, principals=["maria", "erik"])
        trust.add_agent(agent)
        trust.save("keys/jwks.json")                     # a JWKS plus a "mcpclient_auth" member

    There is deliberately no wildcard principal: a key that may speak for everyone is a key whose theft
    is total, so every principal is listed.
    """

    def __init__(
        self,
        keys: Iterable[KeyLike] = (),
        *,
        max_delegation_depth: int = DEFAULT_MAX_DELEGATION_DEPTH,
    ) -> None:
        self._keys: dict[str, PublicKey] = {}
        self._issuers: dict[str, frozenset[str]] = {}
        self._agents: set[str] = set()
        self._kids_by_thumbprint: dict[str, set[str]] = {}
        self._max_depth = DEFAULT_MAX_DELEGATION_DEPTH
        self._generation = 0
        self.max_delegation_depth = max_delegation_depth
        for key in keys:
            self.add(key)

    def add(self, key: KeyLike) -> PublicKey:
        """Add a key without a role (enough for signature-only uses)."""
        if isinstance(key, Identity):
            public = key.public
        elif isinstance(key, PublicKey):
            public = key
        else:
            public = PublicKey.from_jwk(key)
        existing = self._keys.get(public.kid)
        if existing is not None and existing != public:
            raise KeyFormatError(f"two different keys claim kid {public.kid!r}")
        # A mandate binds its agent by thumbprint (cnf.jkt); a kid spelling another key's thumbprint
        # would let a verifier that ever compared kid with jkt confuse the two keys. Refused both ways.
        for other in self._kids_by_thumbprint.get(public.kid, ()):
            if self._keys[other].thumbprint != public.thumbprint:
                raise KeyFormatError(f"kid {public.kid[:16]!r} is the thumbprint of another key")
        claimed = self._keys.get(public.thumbprint)
        if claimed is not None and claimed.thumbprint != public.thumbprint:
            raise KeyFormatError(
                f"another key uses this key's thumbprint {public.thumbprint[:16]!r} as its kid"
            )
        self._keys[public.kid] = public
        self._kids_by_thumbprint.setdefault(public.thumbprint, set()).add(public.kid)
        self._generation += 1
        return public

    def _same_key_kids(self, public: PublicKey) -> set[str]:
        """Every kid under which this very key (same thumbprint) is registered."""
        return self._kids_by_thumbprint.get(public.thumbprint, set()) | {public.kid}

    # --- roles -------------------------------------------------------------------------------------

    def add_issuer(self, key: KeyLike, *, principals: Iterable[str] | None = None) -> PublicKey:
        """Add ``key`` and let it sign top-level mandates whose ``iss`` is one of ``principals``.

        ``principals=None`` means the key's own name (a user's key). Registering the same key again
        adds principals. A key already registered as an agent is refused (:class:`TrustRoleConflict`).
        """
        public = self._public_for(key)
        if principals is None:
            if not public.name:
                raise ConfigurationError(
                    f"issuer key {public.kid[:16]!r} has no name; give principals=[...] explicitly"
                )
            names = [public.name]
        else:
            if isinstance(principals, str):
                raise ConfigurationError("principals= is a list of names, not one string")
            names = list(principals)
            if not names:
                raise ConfigurationError("an issuer needs at least one principal")
        for name in names:
            if not isinstance(name, str) or not name:
                raise ConfigurationError("each principal must be a non-empty string")
        if self._same_key_kids(public) & self._agents:
            raise TrustRoleConflict(
                f"key {public.kid[:16]!r} is an agent key; an agent key cannot also issue mandates"
            )
        self.add(public)
        self._issuers[public.kid] = self._issuers.get(public.kid, frozenset()) | frozenset(names)
        self._generation += 1
        return public

    def add_agent(self, key: KeyLike) -> PublicKey:
        """Add ``key`` as an agent key (signs ECTs, requests, records, seals and delegations)."""
        public = self._public_for(key)
        if self._same_key_kids(public) & self._issuers.keys():
            raise TrustRoleConflict(
                f"key {public.kid[:16]!r} is an issuer key; an issuer key cannot also be an agent key"
            )
        self.add(public)
        self._agents.add(public.kid)
        self._generation += 1
        return public

    @staticmethod
    def _public_for(key: KeyLike) -> PublicKey:
        if isinstance(key, Identity):
            return key.public
        if isinstance(key, PublicKey):
            return key
        return PublicKey.from_jwk({k: v for k, v in key.items() if k != "d"})

    @property
    def has_roles(self) -> bool:
        """Whether any issuer or agent is registered (mandate paths refuse a store without roles)."""
        return bool(self._issuers or self._agents)

    def require_roles(self) -> None:
        """Raise :class:`TrustRolesMissing` (saying how to add roles) unless :attr:`has_roles`."""
        if not self.has_roles:
            raise TrustRolesMissing(f"the trust store has no roles; {HOW_TO_ADD_ROLES}")

    def may_issue(self, kid: str, iss: str) -> bool:
        """Whether the key ``kid`` is registered to sign top-level mandates with this ``iss``."""
        principals = self._issuers.get(kid) if isinstance(kid, str) else None
        return principals is not None and iss in principals

    def is_agent(self, kid: str) -> bool:
        """Whether the key ``kid`` is a registered agent key."""
        return isinstance(kid, str) and kid in self._agents

    def agent_named(self, name: str) -> PublicKey | None:
        """The one agent key whose JWK ``name`` is ``name`` — what a name-only mandate (no ``cnf.jkt``)
        designates; ``None`` when no agent key, or more than one distinct key, carries that name
        (names are not unique, so an ambiguous name binds nobody)."""
        keys = (self._keys[kid] for kid in self._agents)
        found = {key.thumbprint: key for key in keys if key.name == name}
        return next(iter(found.values())) if len(found) == 1 else None

    @property
    def issuers(self) -> dict[str, frozenset[str]]:
        """Issuer ``kid`` -> the principals it may sign mandates for (a copy)."""
        return dict(self._issuers)

    @property
    def agents(self) -> frozenset[str]:
        """The ``kid`` of every agent key."""
        return frozenset(self._agents)

    @property
    def max_delegation_depth(self) -> int:
        """The most delegation hops any mandate may have (a root mandate's ``del.max_depth`` can
        lower it further, never raise it)."""
        return self._max_depth

    @max_delegation_depth.setter
    def max_delegation_depth(self, value: int) -> None:
        if type(value) is not int or value < 0:
            raise ConfigurationError("max_delegation_depth must be a non-negative integer")
        self._max_depth = value
        self._generation += 1

    @property
    def generation(self) -> int:
        """Counts every change (key, role, delegation depth): a verifier caching what it verified
        against this store re-verifies when it moved (server/_mandate_cache.py)."""
        return self._generation

    def _roles_document(self) -> dict[str, Any]:
        return {
            "version": ROLES_VERSION,
            "issuers": {kid: sorted(names) for kid, names in self._issuers.items()},
            "agents": sorted(self._agents),
            "delegation": {"max_depth": self._max_depth},
        }

    def _load_roles(self, document: Any, where: str) -> None:
        """Apply a ``mcpclient_auth`` member; every referenced kid must be a key of the store."""
        if not isinstance(document, Mapping):
            raise KeyFormatError(f"{where}: {ROLES_MEMBER!r} must be a JSON object")
        if document.get("version") != ROLES_VERSION:
            raise KeyFormatError(f"{where}: unsupported {ROLES_MEMBER!r} version (expected {ROLES_VERSION})")
        issuers = document.get("issuers", {})
        agents = document.get("agents", [])
        delegation = document.get("delegation", {})
        if (
            not isinstance(issuers, Mapping)
            or not isinstance(agents, list)
            or not isinstance(delegation, Mapping)
        ):
            raise KeyFormatError(
                f"{where}: {ROLES_MEMBER!r} needs 'issuers' (object), 'agents' (array), 'delegation' (object)"
            )
        for kid in [*issuers, *agents]:
            if not isinstance(kid, str) or kid not in self._keys:
                shown = kid[:16] if isinstance(kid, str) else repr(kid)
                raise KeyFormatError(f"{where}: a role names kid {shown!r}, which is not among the keys")
        try:
            for kid, principals in issuers.items():
                if not isinstance(principals, list):
                    raise KeyFormatError(f"{where}: the principals of an issuer must be an array")
                self.add_issuer(self._keys[kid], principals=principals)
            for kid in agents:
                self.add_agent(self._keys[kid])
            if "max_depth" in delegation:
                self.max_delegation_depth = delegation["max_depth"]
        except (ConfigurationError, TrustRoleConflict) as exc:
            raise KeyFormatError(f"{where}: {exc.message}") from None

    # --- files -------------------------------------------------------------------------------------

    @classmethod
    def from_jwks(cls, source: str | os.PathLike[str] | Mapping[str, Any]) -> TrustStore:
        """From a JWKS (``{"keys": [...]}``), given as a dict or a file path; its roles
        (``"mcpclient_auth"`` member) when present."""
        where = "the JWKS"
        if isinstance(source, Mapping):
            document: Any = source
        else:
            where = f"JWKS {os.fspath(source)!r}"
            try:
                document = json.loads(Path(source).read_text("utf-8"))
            except OSError as exc:
                raise KeyFormatError(f"cannot read JWKS {os.fspath(source)!r}: {exc.strerror}") from None
            except ValueError:
                raise KeyFormatError(f"JWKS {os.fspath(source)!r} is not valid JSON") from None
        keys = document.get("keys") if isinstance(document, Mapping) else None
        if not isinstance(keys, list):
            raise KeyFormatError("a JWKS must be an object with a 'keys' array")
        # A JWKS is public material: strip private members if someone exported them by mistake.
        store = cls([{k: v for k, v in jwk.items() if k != "d"} for jwk in keys if isinstance(jwk, Mapping)])
        if ROLES_MEMBER in document:
            store._load_roles(document[ROLES_MEMBER], where)
        return store

    @classmethod
    def from_directory(cls, path: str | os.PathLike[str]) -> TrustStore:
        """Every ``*.jwk`` / ``*.json`` file in ``path`` holding a JWK or a JWKS (public parts only);
        the roles of every JWKS in it that carries them."""
        store = cls()
        directory = Path(path)
        if not directory.is_dir():
            raise KeyFormatError(f"{os.fspath(path)!r} is not a directory")
        roles: list[tuple[Any, str]] = []
        for file in sorted(directory.iterdir()):
            if file.suffix not in (".jwk", ".json") or not file.is_file():
                continue
            try:
                document = json.loads(file.read_text("utf-8"))
            except (OSError, ValueError):
                raise KeyFormatError(f"{file.name!r} is not a readable JWK/JWKS file") from None
            jwks = document.get("keys") if isinstance(document, dict) else None
            for jwk in jwks if isinstance(jwks, list) else [document]:
                if isinstance(jwk, Mapping):
                    store.add({k: v for k, v in jwk.items() if k != "d"})
            if isinstance(jwks, list) and ROLES_MEMBER in document:
                roles.append((document[ROLES_MEMBER], f"JWKS {file.name!r}"))
        for document, where in roles:  # after every key is in: a role may name a key of another file
            store._load_roles(document, where)
        return store

    def get(self, kid: str) -> PublicKey:
        """The key for ``kid``; raises :class:`UnknownKey` when absent."""
        try:
            return self._keys[kid]
        except (KeyError, TypeError):
            shown = kid[:16] + "…" if isinstance(kid, str) and len(kid) > 16 else kid
            raise UnknownKey(f"no trusted key with kid {shown!r}", kid=str(shown)) from None

    def to_jwks(self) -> dict[str, Any]:
        """The public keys as a JWKS, with the roles in a ``"mcpclient_auth"`` member when there are any."""
        document: dict[str, Any] = {"keys": [key.to_jwk() for key in self._keys.values()]}
        if self.has_roles or self._max_depth != DEFAULT_MAX_DELEGATION_DEPTH:
            document[ROLES_MEMBER] = self._roles_document()
        return document

    def save(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_jwks(), indent=2) + "\n", "utf-8")
        return target

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def __iter__(self) -> Iterator[PublicKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"TrustStore({len(self._keys)} keys, {len(self._issuers)} issuers, {len(self._agents)} agents)"
