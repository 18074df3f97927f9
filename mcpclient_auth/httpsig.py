"""RFC 9421 HTTP message signatures for MCP requests: the ``mcp`` and ``wimse`` profiles (DESIGN §3).

    signer = RequestSigner(agent)                       # profile "mcp", label sig1, ES256 or Ed25519
    result = signer.sign(request)                       # sets Content-Digest, Signature-Input, Signature
    verified = RequestVerifier(TrustStore([agent])).verify(request)    # or a typed error
    verified.keyid, verified.covered, verified.nonce

Profile ``mcp`` covers ``"@method" "@target-uri"`` and, when present, ``content-type``,
``content-digest``, ``authorization``, ``act-mandate``, the ECT header, ``mcp-session-id``,
``mcp-protocol-version``, ``mcp-method``, ``mcp-name`` (SEP-2243 standard headers), ``last-event-id``
(an SSE resumption, SEP-1699), ``dpop`` (RFC 9449 proof) and every ``mcp-param-*`` header (SEP-2243
custom headers, names in lower case and sorted); parameters ``created``, ``expires``, ``nonce``,
``keyid``, ``tag="mcpclient-auth/1"``, ``wimse-aud``. A verifier refuses a request that carries any of
these headers uncovered (:class:`~mcpclient_auth.errors.SignatureComponentUncovered`,
``component_uncovered``): a header the server may act on is never unsigned. Profile ``wimse``
(draft-ietf-wimse-http-signature) covers ``"@method" "@request-target" "workload-identity-token"`` and,
when present, ``content-type``, ``content-digest``, ``authorization``, ``txn-token``; it has no
``keyid`` and no ``alg``: the key is the one the Workload Identity Token confirms.

Signing is on the hot path of every MCP call, so :class:`RequestSigner` builds the signature base for
its fixed component list directly (identifiers serialised once per signer); verification goes through
the generic RFC 9421 layer (:mod:`mcpclient_auth._rfc9421`), which parses arbitrary input with
``http-sf`` and is proven against the RFC's test vectors. Both are re-exported here.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import os
import re
import time
from collections.abc import Collection, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from . import _structured_fields
from ._rfc9421.components import ComponentId, HttpMessage, target_uri
from ._rfc9421.signatures import ParsedField, ParsedSignature, parse_signature_fields, verify_signature
from .digest import verify_content_digest
from .errors import (
    ComponentError,
    ConfigurationError,
    DigestError,
    ReplayDetected,
    SignatureComponentUncovered,
    SignatureExpired,
    SignatureMalformed,
    SignatureMissing,
    SignaturePolicyError,
    SignatureReplay,
)
from .keys import Identity, PublicKey, TrustStore
from .replay import MemoryReplayStore, ReplayClaim, ReplayStore, key_partition
from .wit import WIT_HEADER, WorkloadIdentityToken

__all__ = [
    "MCP_TAG",
    "PROFILES",
    "WIMSE_TAG",
    "RequestSigner",
    "RequestVerifier",
    "SignatureProfile",
    "SignatureResult",
    "VerifiedSignature",
]

MCP_TAG = "mcpclient-auth/1"
WIMSE_TAG = "wimse-workload-to-workload"

#: SEP-2243 (2026-07-28 transport): a tool argument mirrored into a header, ``Mcp-Param-<Name>``.
MCP_PARAM_PREFIX = "mcp-param-"

#: Methods whose requests always carry a ``Content-Digest`` (also for an empty body).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+")
_LABEL = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_MAX_LIFETIME = 3600


# --- profiles ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureProfile:
    """What a profile signs and what its verifier insists on.

    ``derived`` components are always covered, then each of ``fields`` when the request carries it
    (in this order), then every field whose name starts with one of ``field_prefixes`` (lower case,
    sorted by name). ``required_fields`` must be present. ``keyid``: whether the ``keyid`` parameter
    is sent (``mcp``) or forbidden together with ``alg`` (``wimse``).
    """

    name: str
    label: str
    tag: str
    derived: tuple[str, ...]
    fields: tuple[str, ...]
    required_fields: frozenset[str] = frozenset()
    keyid: bool = True
    field_prefixes: tuple[str, ...] = ()


def _mcp_profile(ect_header: str) -> SignatureProfile:
    return SignatureProfile(
        name="mcp",
        label="sig1",
        tag=MCP_TAG,
        derived=("@method", "@target-uri"),
        fields=(
            "content-type",
            "content-digest",
            "authorization",
            "act-mandate",
            ect_header,
            "mcp-session-id",
            "mcp-protocol-version",
            "mcp-method",
            "mcp-name",
            "last-event-id",
            "dpop",
        ),
        field_prefixes=(MCP_PARAM_PREFIX,),
    )


def _wimse_profile(ect_header: str) -> SignatureProfile:
    return SignatureProfile(
        name="wimse",
        label="wimse",
        tag=WIMSE_TAG,
        derived=("@method", "@request-target"),
        fields=("workload-identity-token", "content-type", "content-digest", "authorization", "txn-token"),
        required_fields=frozenset({"workload-identity-token"}),
        keyid=False,
    )


#: Profiles by name; each factory takes the (lowercase) ECT header name.
PROFILES = {"mcp": _mcp_profile, "wimse": _wimse_profile}


def _profile(name: str, ect_header: str) -> SignatureProfile:
    if not isinstance(ect_header, str) or not _FIELD_NAME.fullmatch(ect_header):
        raise ConfigurationError("ect_header must be an HTTP field name")
    factory = PROFILES.get(name)
    if factory is None:
        raise ConfigurationError(f"unknown signature profile {name!r}; use one of {sorted(PROFILES)}")
    profile = factory(ect_header.lower())
    if len(set(profile.fields)) != len(profile.fields) or any(
        name.startswith(profile.field_prefixes) for name in profile.fields
    ):
        raise ConfigurationError("ect_header must not name another covered field")
    return profile


@functools.lru_cache(maxsize=256)
def _audience_of(url: str) -> str:
    """``wimse-aud`` default: the target URI without query and fragment."""
    return target_uri(url).partition("?")[0]


@functools.lru_cache(maxsize=256)
def _audience_param(url: str) -> str:
    try:
        return f";wimse-aud={_structured_fields.sf_string(_audience_of(url))}"
    except _structured_fields.StructuredFieldError:
        raise ComponentError("the request URL cannot be used as an audience") from None


# --- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureResult:
    """What :meth:`RequestSigner.sign` did: label, covered components, parameters, base, signature.

    ``base`` and the header values are left out of ``repr()`` (the base holds credential headers).
    """

    label: str
    covered: tuple[str, ...]
    params: dict[str, Any]
    base: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    signature_input: str = field(repr=False, default="")
    signature_header: str = field(repr=False, default="")
    content_digest: str | None = field(repr=False, default=None)


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature that :meth:`RequestVerifier.verify` accepted.

    ``keyid`` is the signing key's id (``wimse``: the thumbprint of the key the WIT confirms, whose
    subject is ``wit.subject``).
    """

    label: str
    keyid: str
    key: PublicKey
    covered: tuple[str, ...]
    params: dict[str, Any]
    created: int
    expires: int
    nonce: str
    algorithm: str = ""
    wit: WorkloadIdentityToken | None = None
    base: bytes = field(repr=False, default=b"")
    #: The nonce as a replay-store claim (charged to the signing key, kept until the signature could
    #: no longer be accepted). Already stored unless ``verify(..., claim_nonce=False)`` was used.
    replay_claim: ReplayClaim | None = field(repr=False, default=None)
    #: SHA-256 of the body the ``Content-Digest`` check hashed (and found equal to the field's
    #: ``sha-256`` member); ``None`` when no ``sha-256`` member was checked.
    body_sha256: bytes | None = field(repr=False, default=None)


# --- header helpers ------------------------------------------------------------------------------------


def _set_header(headers: Any, name: str, value: str) -> None:
    """Overwrite every field line called ``name`` with one line ``value`` (never append)."""
    if hasattr(headers, "multi_items"):
        # httpx / httpx2 / starlette Headers: case-insensitive, and assignment replaces all lines.
        headers[name] = value
        return
    lower = name.lower()
    if isinstance(headers, MutableMapping):
        for existing in [key for key in headers if isinstance(key, str) and key.lower() == lower]:
            del headers[existing]
        headers[name] = value
        return
    if isinstance(headers, list):
        headers[:] = [pair for pair in headers if str(pair[0]).lower() != lower]
        headers.append((name, value))
        return
    raise ConfigurationError("the request's headers cannot be modified")


_URLSAFE = bytes.maketrans(b"+/", b"-_")
#: Bytes a signature-base value may hold: printable ASCII and HTAB (RFC 9110 field-content).
_SIGNABLE = bytes(range(0x20, 0x7F)) + b"\t"
_SIGNABLE_OR_LF = _SIGNABLE + b"\n"
_WIT_KEY_NAME = WIT_HEADER.lower().encode("ascii")
_WIT_KEY = frozenset({_WIT_KEY_NAME})


def _raw_fields(
    headers: Any, wanted: frozenset[bytes], prefixes: tuple[bytes, ...] = ()
) -> dict[bytes, list[bytes]]:
    """The wire bytes of the ``wanted`` fields and of every field whose name starts with one of
    ``prefixes`` (lower-case names), in one pass over the container.

    httpx and starlette expose the encoded field lines as ``.raw``; reading those avoids decoding
    every value and signs exactly the bytes that go on the wire.
    """
    raw = getattr(headers, "raw", None)
    if isinstance(raw, list) and (not raw or isinstance(raw[0][0], bytes)):
        pairs: Any = raw
    else:
        try:
            pairs = [
                (name.encode("latin-1"), value.encode("latin-1"))
                for name, value in (headers.items() if hasattr(headers, "items") else headers)
            ]
        except (UnicodeEncodeError, AttributeError, TypeError, ValueError):
            raise ComponentError("a request header is not a latin-1 (name, value) string pair") from None
    found: dict[bytes, list[bytes]] = {}
    for name, value in pairs:
        key = name.lower()
        if key in wanted or (prefixes and key.startswith(prefixes)):
            if key in found:
                found[key].append(value)
            else:
                found[key] = [value]
    return found


def _field_bytes(values: list[bytes]) -> bytes:
    # RFC 9421 §2.1: each line trimmed, several lines joined with ", ".
    if len(values) == 1:
        return values[0].strip(b" \t")
    return b", ".join(value.strip(b" \t") for value in values)


def _explain_unsignable(parts: list[bytes], names: tuple[str, ...]) -> None:
    """Raise the :class:`ComponentError` naming the first value that cannot be signed (never the value)."""
    for name, value in zip(names, parts[1::2], strict=False):
        if b"\r" in value or b"\n" in value:
            raise ComponentError(f"covered component {name!r} contains CR or LF")
        if value.translate(None, _SIGNABLE):
            raise ComponentError(f"covered component {name!r} contains a non-ASCII or control character")
    raise ComponentError("the signature base holds a character that cannot be signed")  # pragma: no cover


def _ascii(name: str, value: str) -> bytes:
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        raise ComponentError(f"component {name} holds a non-ASCII character") from None


def _body_of(request: Any) -> bytes:
    try:
        content = request.content
    except Exception:  # httpx raises RequestNotRead for an unread stream
        raise ComponentError(
            "the request body is not available; read it first (await request.aread()) or pass body="
        ) from None
    if isinstance(content, bytes | bytearray | memoryview):
        return bytes(content)
    raise ComponentError("the request has no byte content; pass body=")


# --- signing -------------------------------------------------------------------------------------------


class RequestSigner:
    """Signs requests with one identity under one profile; safe to share between tasks and threads.

        signer = RequestSigner(agent)                                # profile "mcp"
        signer = RequestSigner(agent, ect_header="Wimse-ECT", audience="https://mcp.example/")
        signer = RequestSigner(agent, profile="wimse", workload_identity_token=wit)
        result = signer.sign(request, body=raw_bytes)                # headers overwritten in place

    ``created`` / ``expires`` / ``nonce`` may be fixed for reproducible output; by default ``created``
    is now, ``expires`` is ``created + lifetime`` and the nonce is 128 random bits.
    """

    def __init__(
        self,
        identity: Identity,
        profile: str = "mcp",
        *,
        ect_header: str = "Execution-Context",
        audience: str | None = None,
        workload_identity_token: str | None = None,
        lifetime: int = 60,
        label: str | None = None,
    ) -> None:
        if not isinstance(identity, Identity):
            raise ConfigurationError("RequestSigner needs an Identity (a private key)")
        self._profile = _profile(profile, ect_header)
        if type(lifetime) is not int or not 0 < lifetime <= _MAX_LIFETIME:
            raise ConfigurationError(f"lifetime must be an integer between 1 and {_MAX_LIFETIME} seconds")
        self._label = self._profile.label if label is None else label
        if not isinstance(self._label, str) or not _LABEL.fullmatch(self._label):
            raise ConfigurationError("a signature label must be an sf-key (lowercase, e.g. 'sig1')")
        self._identity = identity
        self._lifetime = lifetime
        self._algorithm = identity.http_alg
        try:
            self._aud_param = (
                None if audience is None else f";wimse-aud={_structured_fields.sf_string(audience)}"
            )
            tail = f";tag={_structured_fields.sf_string(self._profile.tag)}"
            if self._profile.keyid:
                tail = f";keyid={_structured_fields.sf_string(identity.kid)}" + tail
        except _structured_fields.StructuredFieldError:
            raise ConfigurationError("audience and key id must be printable ASCII") from None
        self._audience = audience
        self._tail = tail
        # Identifiers serialised once: '"@method"', '"content-digest"', ... and the base-line prefixes
        # ('\n"content-digest": ') the hot path concatenates.
        derived, fields = self._profile.derived, self._profile.fields
        self._derived_ids = tuple(_structured_fields.sf_string(name) for name in derived)
        self._field_ids = tuple(_structured_fields.sf_string(name) for name in fields)
        self._field_keys = tuple(name.encode("ascii") for name in fields)
        self._wanted = frozenset(self._field_keys)
        self._prefixes = tuple(prefix.encode("ascii") for prefix in self._profile.field_prefixes)
        self._method_prefix = f"{self._derived_ids[0]}: ".encode("ascii")
        self._target_prefix = f"\n{self._derived_ids[1]}: ".encode("ascii")
        self._field_prefixes = tuple(f"\n{text}: ".encode("ascii") for text in self._field_ids)
        self._inner_lists: dict[int, tuple[str, tuple[str, ...]]] = {}
        self._wit: str | None = None
        self._checked_wit: str | None = None
        if workload_identity_token is not None:
            if self._profile.name != "wimse":
                raise ConfigurationError("workload_identity_token belongs to the 'wimse' profile")
            self._check_wit(workload_identity_token)
            self._wit = workload_identity_token

    @property
    def identity(self) -> Identity:
        return self._identity

    @property
    def profile(self) -> str:
        return self._profile.name

    @property
    def label(self) -> str:
        return self._label

    def __repr__(self) -> str:
        return f"RequestSigner(profile={self._profile.name!r}, kid={self._identity.kid!r})"

    def _check_wit(self, token: str) -> None:
        if token == self._checked_wit:
            return
        if not isinstance(token, str) or not token or not (token.isascii() and token.isprintable()):
            raise ConfigurationError("the Workload Identity Token must be a compact JWT")
        wit = WorkloadIdentityToken.decode(token)
        if wit.key.thumbprint != self._identity.public.thumbprint:
            # Signing with a key the WIT does not confirm would only produce rejected requests.
            raise ConfigurationError("the Workload Identity Token confirms another key than this signer's")
        self._checked_wit = token

    def _inner_list(self, mask: int, extra: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...]]:
        """The serialised component list for one combination of present fields (cached per signer;
        ``extra``: the prefixed fields present, e.g. ``mcp-param-region``, appended uncached)."""
        cached = self._inner_lists.get(mask)
        if cached is None:
            ids = list(self._derived_ids)
            names = list(self._profile.derived)
            for i, text in enumerate(self._field_ids):
                if mask >> i & 1:
                    ids.append(text)
                    names.append(self._profile.fields[i])
            cached = ("(" + " ".join(ids) + ")", tuple(names))
            self._inner_lists[mask] = cached
        if not extra:
            return cached
        inner = cached[0][:-1] + "".join(f' "{name}"' for name in extra) + ")"
        return inner, (*cached[1], *extra)

    def sign(
        self,
        request: Any,
        *,
        body: bytes | None = None,
        created: int | None = None,
        expires: int | None = None,
        nonce: str | None = None,
        body_sha256: bytes | None = None,
    ) -> SignatureResult:
        """Sign ``request`` in place and return what was signed.

        Sets ``Content-Digest`` (``POST``/``PUT``/``PATCH`` always, other methods when the body is not
        empty), ``Signature-Input`` and ``Signature``, replacing any earlier values. ``body`` is the
        exact content bytes (defaults to ``request.content``). Raises :class:`ComponentError` when a
        covered value cannot be signed (CR/LF, non-ASCII), :class:`ConfigurationError` when the
        ``wimse`` profile has no Workload Identity Token. ``body_sha256``: the SHA-256 digest of
        ``body`` when the caller has computed it already (the request hook hashes the body once for
        the ECT's ``inp_hash`` and the ``Content-Digest``); it needs ``body``.
        """
        profile = self._profile
        headers = request.headers
        method = request.method
        if not isinstance(method, str):
            method = bytes(method).decode("ascii", "replace")
        url = str(request.url)
        content = _body_of(request) if body is None else bytes(body)
        if body_sha256 is not None and (
            body is None or type(body_sha256) is not bytes or len(body_sha256) != 32
        ):
            raise ConfigurationError("body_sha256 is the 32-byte SHA-256 digest of the body passed with it")

        if profile.name == "wimse":
            self._ensure_wit(headers)
        digest = None
        if content or method in _BODY_METHODS:
            if body_sha256 is None:
                body_sha256 = hashlib.sha256(content).digest()
            digest = "sha-256=:" + binascii.b2a_base64(body_sha256, newline=False).decode("ascii") + ":"
            _set_header(headers, "Content-Digest", digest)

        target = _target(url) if profile.derived[1] == "@target-uri" else _request_target(url)
        parts = [
            self._method_prefix,
            _ascii("@method", method),
            self._target_prefix,
            _ascii(profile.derived[1], target),
        ]
        found = _raw_fields(headers, self._wanted, self._prefixes)
        mask = 0
        for i, key in enumerate(self._field_keys):
            values = found.get(key)
            if values is not None:
                mask |= 1 << i
                parts.append(self._field_prefixes[i])
                # _field_bytes, inlined for the usual single field line (7 covered fields a call)
                parts.append(values[0].strip(b" \t") if len(values) == 1 else _field_bytes(values))
        extra: tuple[str, ...] = ()
        if len(found) > mask.bit_count():
            # Prefixed fields (Mcp-Param-*): every one present is covered, sorted by name.
            extra = tuple(sorted(_prefixed_name(key) for key in found if key not in self._wanted))
            for name in extra:
                parts.append(f'\n"{name}": '.encode("ascii"))
                parts.append(_field_bytes(found[name.encode("ascii")]))
        inner, covered = self._inner_list(mask, extra)

        if created is None:
            created = int(time.time())
        if expires is None:
            expires = created + self._lifetime
        if nonce is None:
            # secrets.token_urlsafe(16) without its three Python layers: 128 random bits (os.urandom,
            # as secrets uses), base64url unpadded; that alphabet needs no sf-string escaping.
            nonce = (
                binascii.b2a_base64(os.urandom(16), newline=False).translate(_URLSAFE).rstrip(b"=").decode()
            )
            nonce_text = f'"{nonce}"'
        else:
            try:
                nonce_text = _structured_fields.sf_string(nonce)
            except _structured_fields.StructuredFieldError:
                raise ComponentError("the nonce must be printable ASCII") from None
        aud_param = self._aud_param if self._aud_param is not None else _audience_param(url)
        params_text = (
            f"{inner};created={int(created)};expires={int(expires)};nonce={nonce_text}{self._tail}{aud_param}"
        )
        parts.append(b'\n"@signature-params": ')
        parts.append(params_text.encode("ascii"))
        base = b"".join(parts)
        # One pass over the whole base instead of one per value: only signable bytes, and no LF
        # except the line separators written above (a CR or LF inside a value would forge lines).
        if base.translate(None, _SIGNABLE_OR_LF) or base.count(b"\n") != len(parts) // 2 - 1:
            _explain_unsignable(parts, (*covered, "@signature-params"))

        signature = self._identity.sign(base)
        signature_input = f"{self._label}={params_text}"
        signature_header = f"{self._label}=:{binascii.b2a_base64(signature, newline=False).decode('ascii')}:"
        _set_header(headers, "Signature-Input", signature_input)
        _set_header(headers, "Signature", signature_header)

        params: dict[str, Any] = {"created": int(created), "expires": int(expires), "nonce": nonce}
        if profile.keyid:
            params["keyid"] = self._identity.kid
        params["tag"] = profile.tag
        params["wimse-aud"] = self._audience if self._audience is not None else _audience_of(url)
        return SignatureResult(
            self._label, covered, params, base, signature, signature_input, signature_header, digest
        )

    def _ensure_wit(self, headers: Any) -> None:
        if self._wit is not None:
            _set_header(headers, WIT_HEADER, self._wit)
            return
        present = _raw_fields(headers, _WIT_KEY).get(_WIT_KEY_NAME)
        if not present or len(present) != 1:
            raise ConfigurationError(
                "the wimse profile needs a Workload Identity Token: pass workload_identity_token= "
                "or set one Workload-Identity-Token header on the request"
            )
        self._check_wit(present[0].strip(b" \t").decode("latin-1"))


def _prefixed_name(key: bytes) -> str:
    name = key.decode("latin-1")
    if not _FIELD_NAME.fullmatch(name):
        raise ComponentError("a request header name is not an HTTP field name")
    return name


@functools.lru_cache(maxsize=256)
def _target(url: str) -> str:
    # A client talks to a handful of URLs; derive each one's target URI once.
    return target_uri(url)


@functools.lru_cache(maxsize=256)
def _request_target(url: str) -> str:
    uri = target_uri(url)
    start = uri.find("/", uri.find("://") + 3)
    return uri[start:]


# --- verification --------------------------------------------------------------------------------------


class RequestVerifier:
    """Verifies signed requests against a :class:`TrustStore` under one profile.

        verifier = RequestVerifier(trust)                      # profile "mcp", max_age 300 s, skew 60 s
        verified = verifier.verify(request, body=raw_bytes)    # VerifiedSignature, or a typed error

    Checks, in order: the profile's label is present (:class:`SignatureMissing`) and well-formed
    (:class:`SignatureMalformed`); ``tag``, parameters and covered components follow the profile
    (:class:`SignaturePolicyError`) — every profile header present on the request must be covered, so
    nobody can add an unsigned ``Authorization``, mandate or ECT; ``created`` / ``expires`` with
    ``max_age`` and ``skew`` (:class:`SignatureExpired`); ``wimse-aud`` equals ``audience`` (default:
    the request's target URI without query); the key (``mcp``: ``keyid`` in ``trust``, else
    :class:`UnknownKey`; ``wimse``: the key confirmed by a Workload Identity Token that ``trust``
    verifies); the signature (:class:`SignatureInvalid`, :class:`ComponentError`); ``Content-Digest``
    against the body (:class:`DigestError`); the nonce was not seen before (:class:`SignatureReplay`).
    """

    def __init__(
        self,
        trust: TrustStore,
        profile: str = "mcp",
        *,
        max_age: int = 300,
        skew: int = 60,
        required_components: Collection[str] | None = None,
        nonce_cache: ReplayStore | None = None,
        audience: str | None = None,
        ect_header: str = "Execution-Context",
        expect_tag: str | None = None,
    ) -> None:
        self._trust = trust
        self._profile = _profile(profile, ect_header)
        if max_age <= 0 or skew < 0:
            raise ConfigurationError("max_age must be positive and skew non-negative")
        self._max_age = max_age
        self._skew = skew
        self._audience = audience
        self._tag = self._profile.tag if expect_tag is None else expect_tag
        # A verifier without a replay store would accept the same signed request again and again.
        self._nonces: ReplayStore = nonce_cache if nonce_cache is not None else MemoryReplayStore()
        try:
            self._extra = tuple(ComponentId.parse(c) for c in (required_components or ()))
        except (SignatureMalformed, ComponentError) as exc:
            raise ConfigurationError(f"invalid required component: {exc}") from None
        # The coverage check runs per request over the same profile: its component ids once.
        chosen = self._profile
        self._derived_ids = tuple(ComponentId.of(name) for name in chosen.derived)
        self._field_ids = tuple(
            (name, ComponentId.of(name), name in chosen.required_fields) for name in chosen.fields
        )
        self._digest_id = ComponentId.of("content-digest")

    @property
    def profile(self) -> str:
        return self._profile.name

    def __repr__(self) -> str:
        return f"RequestVerifier(profile={self._profile.name!r}, trust={self._trust!r})"

    def verify(
        self,
        request: Any,
        *,
        body: bytes | None = None,
        now: float | None = None,
        claim_nonce: bool = True,
        parsed_input: ParsedField | None = None,
    ) -> VerifiedSignature:
        """Verify the profile's signature on ``request``; see the class docstring for the checks.

        The nonce is claimed in the replay store last, after every check here passed. A caller with
        checks of its own (the server verifier) passes ``claim_nonce=False`` and claims
        ``result.replay_claim`` once its own checks passed too, so a request refused later never
        takes room in the store. ``parsed_input``: the ``Signature-Input`` value as the caller parsed
        it already (used only if it is this request's exact value; see ``ParsedField``)."""
        profile = self._profile
        message = HttpMessage.of(request, body=body)
        current = time.time() if now is None else float(now)
        signatures = parse_signature_fields(
            message.header("signature-input"), message.header("signature"), parsed_input=parsed_input
        )
        parsed = signatures.get(profile.label)
        if parsed is None:
            raise SignatureMissing(f"no signature labelled {profile.label!r}")

        if parsed.tag != self._tag:
            raise SignaturePolicyError(f"the signature's tag is not {self._tag!r}")
        self._check_params(parsed)
        needs_digest = self._check_coverage(message, parsed)
        created, expires = self._check_time(parsed, current)
        self._check_audience(message, parsed)

        wit: WorkloadIdentityToken | None = None
        if profile.keyid:
            key = self._trust.get(str(parsed.keyid))
        else:
            wit = WorkloadIdentityToken.verify(
                str(message.header(WIT_HEADER)), self._trust, now=current, skew=self._skew
            )
            key = wit.key
        algorithm = key.http_alg
        base = verify_signature(message, parsed, key.key, algorithm)

        body_sha256 = None
        if needs_digest:
            if message.body is None:
                raise DigestError("the request body is not available to check Content-Digest; pass body=")
            body_sha256 = verify_content_digest(message.header("content-digest"), message.body).get("sha-256")

        nonce = str(parsed.nonce)
        claim = ReplayClaim.for_nonce(
            key_partition(key), nonce, min(expires, created + self._max_age) + self._skew
        )
        if claim_nonce:
            try:
                self._nonces.claim([claim], now=current)
            except ReplayDetected:
                raise SignatureReplay("this signature nonce was already used", kid=key.kid) from None
        return VerifiedSignature(
            label=parsed.label,
            keyid=key.kid,
            key=key,
            covered=tuple(cid.name if not cid.params else cid.text for cid in parsed.components),
            params=dict(parsed.params),
            created=created,
            expires=expires,
            nonce=nonce,
            algorithm=algorithm,
            wit=wit,
            base=base,
            replay_claim=claim,
            body_sha256=body_sha256,
        )

    # checks -------------------------------------------------------------------------------------------

    def _check_params(self, parsed: ParsedSignature) -> None:
        params = parsed.params
        if self._profile.keyid:
            if parsed.keyid is None:
                raise SignaturePolicyError("the signature has no 'keyid'")
        elif "keyid" in params or "alg" in params:
            raise SignaturePolicyError(f"the {self._profile.name} profile forbids 'keyid' and 'alg'")
        if parsed.nonce is None or not parsed.nonce:
            raise SignaturePolicyError("the signature has no 'nonce'")
        if parsed.created is None or parsed.expires is None:
            raise SignaturePolicyError("the signature needs 'created' and 'expires'")

    def _check_coverage(self, message: HttpMessage, parsed: ParsedSignature) -> bool:
        """Refuse signatures that leave a profile component uncovered; return whether a digest is due."""
        covered = {cid.identity for cid in parsed.components}
        profile = self._profile
        required = list(self._derived_ids)
        for name, cid, must in self._field_ids:
            if message.field_lines(name) is not None:
                required.append(cid)
            elif must:
                raise SignaturePolicyError(f"the request has no {name!r} header")
        if profile.field_prefixes:
            for name in message.field_names():
                if name.startswith(profile.field_prefixes):
                    required.append(ComponentId.of(name))
        method = (message.method or "").upper()
        needs_digest = (
            method in _BODY_METHODS or bool(message.body) or message.field_lines("content-digest") is not None
        )
        if needs_digest:
            required.append(self._digest_id)
        required.extend(self._extra)
        for cid in required:
            if cid.identity not in covered:
                raise SignatureComponentUncovered(f"the signature does not cover {cid.text}")
        return needs_digest

    def _check_time(self, parsed: ParsedSignature, now: float) -> tuple[int, int]:
        created, expires = parsed.created, parsed.expires
        assert created is not None and expires is not None  # _check_params
        if expires < created:
            raise SignaturePolicyError("the signature expires before it was created")
        if created > now + self._skew:
            raise SignatureExpired("the signature was created in the future (beyond the clock skew)")
        if now > expires + self._skew:
            raise SignatureExpired("the signature has expired")
        if now - created > self._max_age + self._skew:
            raise SignatureExpired(f"the signature is older than {self._max_age} s")
        return created, expires

    def _check_audience(self, message: HttpMessage, parsed: ParsedSignature) -> None:
        aud = parsed.params.get("wimse-aud")
        if type(aud) is not str:
            raise SignaturePolicyError("the signature has no 'wimse-aud'")
        if self._audience is not None:
            expected = self._audience
        else:
            if message.url is None:
                raise SignaturePolicyError("no audience configured and the request has no URL")
            try:
                expected = _audience_of(message.url)
            except ComponentError:
                raise SignaturePolicyError("the request URL cannot be turned into an audience") from None
        if aud != expected:
            raise SignaturePolicyError("the signature is addressed to another audience ('wimse-aud')")
