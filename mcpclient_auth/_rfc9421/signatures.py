"""RFC 9421 §3 and §4: ``Signature-Input`` / ``Signature`` parsing, creating and verifying signatures.

This layer knows nothing of profiles; :mod:`mcpclient_auth.httpsig` builds the ``mcp`` and ``wimse``
profiles on it (and signs its fixed profiles on a faster, direct path).

    parsed = parse_signatures(message)["sig1"]          # ParsedSignature (label, components, params, ...)
    verify_signature(message, parsed, public_key, "ecdsa-p256-sha256")   # SignatureInvalid unless valid
    created = create_signature(message, label="sig1", components=["@method", "@authority"],
                               params={"created": 1618884473, "keyid": "k"}, key=private_key,
                               algorithm="ed25519")
    created.headers     # {"Signature-Input": 'sig1=("@method" "@authority");created=...', "Signature": ...}
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _structured_fields
from ..errors import (
    SignatureInvalid,
    SignatureMalformed,
    SignatureMissing,
    SignaturePolicyError,
)
from .algorithms import http_signature_algorithm
from .components import ComponentId, HttpMessage, signature_base

__all__ = [
    "CreatedSignature",
    "ParsedField",
    "ParsedSignature",
    "create_signature",
    "parse_signature_fields",
    "parse_signatures",
    "serialize_signature_params",
    "verify_signature",
]


# --- Signature-Input / Signature ---------------------------------------------------------------------

_INT_PARAMS = frozenset({"created", "expires"})
_STR_PARAMS = frozenset({"nonce", "alg", "keyid", "tag"})
_MAX_SF_INTEGER = 999_999_999_999_999
_LABEL = re.compile(r"[a-z*][a-z0-9_\-.*]*")
#: Longer Signature-Input values are parsed without the component-list cache (see _parse_one).
_CACHED_INPUT_MAX = 2048


@dataclass(frozen=True)
class ParsedSignature:
    """One labelled signature read from ``Signature-Input`` + ``Signature``.

    ``signature_params`` is the serialised inner list (what goes after ``"@signature-params": ``).
    """

    label: str
    components: tuple[ComponentId, ...]
    params: Mapping[str, Any]
    signature: bytes = field(repr=False)
    signature_params: str = field(repr=False)

    @property
    def created(self) -> int | None:
        value = self.params.get("created")
        return value if type(value) is int else None

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        return value if type(value) is int else None

    @property
    def nonce(self) -> str | None:
        return self._str("nonce")

    @property
    def keyid(self) -> str | None:
        return self._str("keyid")

    @property
    def alg(self) -> str | None:
        return self._str("alg")

    @property
    def tag(self) -> str | None:
        return self._str("tag")

    @property
    def covered(self) -> tuple[str, ...]:
        """The serialised component identifiers, in signed order."""
        return tuple(cid.text for cid in self.components)

    def _str(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if type(value) is str else None


def serialize_signature_params(components: Sequence[ComponentId], params: Mapping[str, Any]) -> str:
    """``("@method" "@path");created=1;keyid="k"`` — the value after the label in ``Signature-Input``."""
    _check_params(params)
    try:
        inner = " ".join(cid.text for cid in components)
        return "(" + inner + ")" + _structured_fields.serialize_params(dict(params))
    except _structured_fields.StructuredFieldError:
        raise SignatureMalformed("signature parameters cannot be serialised") from None


def _check_params(params: Mapping[str, Any]) -> None:
    for name, value in params.items():
        if name in _INT_PARAMS and (type(value) is not int or not 0 <= value <= _MAX_SF_INTEGER):
            raise SignatureMalformed(f"signature parameter {name!r} must be a non-negative integer")
        if name in _STR_PARAMS and type(value) is not str:
            raise SignatureMalformed(f"signature parameter {name!r} must be an sf-string")


@dataclass(frozen=True, slots=True)
class ParsedField:
    """A field value and what :func:`mcpclient_auth._structured_fields.parse_dictionary` returned for
    it, for a caller that had to parse ``Signature-Input`` before verifying (the server's pre-auth
    gate reads the ``keyid`` before the body). :func:`parse_signature_fields` uses ``members`` only
    when ``value`` is exactly the value it would parse, and parses afresh otherwise."""

    value: str
    members: Mapping[str, _structured_fields.Member] = field(repr=False)


def parse_signature_fields(
    signature_input: str | None, signature: str | None, *, parsed_input: ParsedField | None = None
) -> dict[str, ParsedSignature]:
    """Parse ``Signature-Input`` and ``Signature`` values into ``{label: ParsedSignature}``.

    Raises :class:`SignatureMissing` when either is absent or empty, :class:`SignatureMalformed` for
    anything that is not a pair of well-formed dictionaries with the same labels, and
    :class:`ComponentError` for component identifiers this implementation cannot resolve.
    ``parsed_input``: ``Signature-Input`` parsed already (see :class:`ParsedField`).
    """
    if not signature_input or not signature:
        raise SignatureMissing("the request carries no Signature-Input / Signature")
    inputs: Mapping[str, _structured_fields.Member]
    if parsed_input is not None and type(parsed_input.value) is str and parsed_input.value == signature_input:
        # The same text parses to the same members (parse_dictionary is pure): no second parse.
        inputs = parsed_input.members
    else:
        try:
            inputs = _structured_fields.parse_dictionary(signature_input)
        except _structured_fields.StructuredFieldError as exc:
            raise SignatureMalformed(f"Signature-Input is not a structured-field dictionary: {exc}") from None
    try:
        values = _structured_fields.parse_dictionary(signature)
    except _structured_fields.StructuredFieldError as exc:
        raise SignatureMalformed(f"Signature is not a structured-field dictionary: {exc}") from None
    if not inputs or not values:
        raise SignatureMissing("the request carries no Signature-Input / Signature")
    if inputs.keys() != values.keys():
        raise SignatureMalformed("Signature-Input and Signature name different labels")
    parsed: dict[str, ParsedSignature] = {}
    cache = len(signature_input) <= _CACHED_INPUT_MAX
    for label, member in inputs.items():
        parsed[label] = _parse_one(label, member, values[label], cache=cache)
    return parsed


def _parse_one(
    label: str, member: _structured_fields.Member, value: _structured_fields.Member, *, cache: bool = False
) -> ParsedSignature:
    items, params = member
    if not isinstance(items, list):
        raise SignatureMalformed(f"Signature-Input member {label!r} is not an inner list")
    signature = value[0]
    if not isinstance(signature, bytes):
        raise SignatureMalformed(f"Signature member {label!r} is not a byte sequence")
    # A signer covers the same parameterless components in every request: resolve each distinct
    # list once (validated, duplicate-checked; a failure is not cached and raises as below). Only
    # from a Signature-Input of ordinary size: the names are the sender's, and the cache must not
    # become a place to park large strings (256 entries of at most _CACHED_INPUT_MAX characters).
    names = tuple([name for name, item_params in items if not item_params and type(name) is str])
    if cache and len(names) == len(items):
        components: Sequence[ComponentId] = _plain_components(label, names)
    else:
        components = _resolve_components(label, items)
    _check_params(params)
    own = dict(params)
    try:  # serialize_signature_params without its second _check_params (done just above)
        inner = " ".join([cid.text for cid in components])
        text = "(" + inner + ")" + _structured_fields.serialize_params(own)
    except _structured_fields.StructuredFieldError:
        raise SignatureMalformed("signature parameters cannot be serialised") from None
    return ParsedSignature(label, tuple(components), own, signature, text)


def _resolve_components(label: str, items: Sequence[tuple[Any, Mapping[str, Any]]]) -> list[ComponentId]:
    components: list[ComponentId] = []
    seen: set[tuple[str, frozenset[tuple[str, Any]]]] = set()
    for name, item_params in items:
        cid = ComponentId.from_item(name, item_params)
        if cid.identity in seen:
            raise SignatureMalformed(f"Signature-Input {label!r} covers {cid.text} twice")
        seen.add(cid.identity)
        components.append(cid)
    return components


@functools.lru_cache(maxsize=256)
def _plain_components(label: str, names: tuple[str, ...]) -> tuple[ComponentId, ...]:
    return tuple(_resolve_components(label, [(name, {}) for name in names]))


def parse_signatures(message: Any) -> dict[str, ParsedSignature]:
    """Every signature on ``message`` (an :class:`HttpMessage` or anything it adapts)."""
    view = HttpMessage.of(message)
    return parse_signature_fields(view.header("signature-input"), view.header("signature"))


# --- sign / verify -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedSignature:
    """The output of :func:`create_signature`: what to put into ``Signature-Input`` / ``Signature``."""

    label: str
    signature_params: str
    signature: bytes
    base: bytes = field(repr=False)

    @property
    def signature_input_member(self) -> str:
        return f"{self.label}={self.signature_params}"

    @property
    def signature_member(self) -> str:
        return f"{self.label}=:{base64.b64encode(self.signature).decode('ascii')}:"

    @property
    def headers(self) -> dict[str, str]:
        return {"Signature-Input": self.signature_input_member, "Signature": self.signature_member}


def _components(components: Sequence[ComponentId | str]) -> list[ComponentId]:
    return [c if isinstance(c, ComponentId) else ComponentId.parse(c) for c in components]


def create_signature(
    message: Any,
    *,
    label: str,
    components: Sequence[ComponentId | str],
    params: Mapping[str, Any],
    key: Any,
    algorithm: str,
    structured_fields: Mapping[str, str] | None = None,
) -> CreatedSignature:
    """Sign ``message`` over ``components`` with ``params`` in the given order (generic path).

    ``components`` are :class:`ComponentId` or their text (``'"@query-param";name="Pet"'``, ``"date"``).
    ``key`` is a ``cryptography`` private key (or the secret bytes for ``hmac-sha256``).
    """
    view = HttpMessage.of(message)
    if not isinstance(label, str) or _LABEL.fullmatch(label) is None:
        raise SignatureMalformed("a signature label must be an sf-key (lowercase, e.g. 'sig1')")
    cids = _components(components)
    text = serialize_signature_params(cids, params)
    base = signature_base(view, cids, text, structured_fields=structured_fields)
    return CreatedSignature(label, text, http_signature_algorithm(algorithm).sign(key, base), base)


def verify_signature(
    message: Any,
    parsed: ParsedSignature,
    key: Any,
    algorithm: str,
    *,
    structured_fields: Mapping[str, str] | None = None,
) -> bytes:
    """Verify one parsed signature with ``key``; return the signature base.

    Raises :class:`SignaturePolicyError` when the signed ``alg`` names another algorithm,
    :class:`ComponentError` when a covered component cannot be resolved, and
    :class:`SignatureInvalid` when the signature does not verify. Time, tag and replay policy belong
    to the caller (see :class:`mcpclient_auth.httpsig.RequestVerifier`).
    """
    implementation = http_signature_algorithm(algorithm)
    if parsed.alg is not None and parsed.alg != algorithm:
        raise SignaturePolicyError("the signed 'alg' does not match the verification key's algorithm")
    view = HttpMessage.of(message)
    base = signature_base(
        view, parsed.components, parsed.signature_params, structured_fields=structured_fields
    )
    if not implementation.verify(key, base, parsed.signature):
        raise SignatureInvalid(f"signature {parsed.label!r} does not verify")
    return base
