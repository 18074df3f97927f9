"""Structured field values (RFC 8941) for signatures and digests: a strict face over ``http-sf``.

Parsing untrusted ``Signature-Input`` / ``Signature`` / ``Content-Digest`` values goes through
:func:`parse_dictionary`, which refuses repeated keys (RFC 8941 would let the last one win, which lets
two parsers disagree about what was signed) and turns *every* parser failure into one
:class:`StructuredFieldError`. Serialisation of the few values the signer writes itself is done by the
small helpers here, so the hot path never walks ``http-sf``'s generic serializer.

    parse_dictionary('sig1=("@method");created=1')
    # {'sig1': ([('@method', {})], {'created': 1})}
    sf_string('mcpclient-auth/1')     # '"mcpclient-auth/1"'
"""

from __future__ import annotations

import base64
from typing import Any, TypeAlias, cast

import http_sf
from http_sf.item import ser_item
from http_sf.parameters import ser_params
from http_sf.types import DisplayString, Token

__all__ = [
    "BareItem",
    "DisplayString",
    "InnerList",
    "Item",
    "Member",
    "Params",
    "StructuredFieldError",
    "Token",
    "parse_as",
    "parse_dictionary",
    "serialize_inner_list",
    "serialize_item",
    "serialize_member",
    "serialize_params",
    "serialize_structured",
    "sf_bytes",
    "sf_string",
]

#: int | Decimal | str | Token | DisplayString | bytes | bool | datetime, as ``http-sf`` returns them.
BareItem: TypeAlias = Any
Params: TypeAlias = dict[str, BareItem]
Item: TypeAlias = tuple[BareItem, Params]
InnerList: TypeAlias = tuple[list[Item], Params]
Member: TypeAlias = Item | InnerList


class StructuredFieldError(ValueError):
    """A value that is not a well-formed structured field (or one this module refuses)."""


def _refuse_duplicate(key: str, context: str) -> None:
    raise StructuredFieldError(f"repeated {context} key {key!r}")


def parse_dictionary(value: str | bytes) -> dict[str, Member]:
    """Parse an RFC 8941 dictionary; raise :class:`StructuredFieldError` on anything malformed.

    Members are normalised to ``(bare_item, params)`` or ``([items], params)``; a key without a value
    is ``(True, params)``. Repeated dictionary keys and repeated parameter names are refused.
    """
    try:
        data = value.encode("ascii") if isinstance(value, str) else bytes(value)
        parsed = http_sf.parse(data, tltype="dictionary", on_duplicate_key=_refuse_duplicate)
    except StructuredFieldError:
        raise
    except Exception as exc:
        # The parser is third-party code fed attacker-controlled bytes: whatever it raises
        # (StructuredFieldError, UnicodeError, IndexError, ...) means "malformed" to us, never a crash.
        raise StructuredFieldError(_describe(exc)) from None
    if not isinstance(parsed, dict):  # pragma: no cover - tltype="dictionary" guarantees a dict
        raise StructuredFieldError("not a dictionary")
    out: dict[str, Member] = {}
    for key, member in parsed.items():
        if isinstance(member, tuple):
            out[key] = cast(Member, member)
        else:  # pragma: no cover - http-sf always returns (value, params) pairs
            out[key] = (member, {})
    return out


def _describe(exc: Exception) -> str:
    # http-sf messages describe positions and characters, never echo whole values; keep them short.
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def sf_string(value: str) -> str:
    """Serialise an sf-string (printable ASCII only); raise :class:`StructuredFieldError` otherwise."""
    if not (value.isascii() and value.isprintable()):
        raise StructuredFieldError("an sf-string holds printable ASCII only")
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


def sf_bytes(value: bytes) -> str:
    """Serialise an sf-binary (``:<base64>:``)."""
    return f":{base64.b64encode(value).decode('ascii')}:"


def serialize_item(item: Item) -> str:
    """Serialise ``(bare_item, params)``; raise :class:`StructuredFieldError` when it cannot be."""
    try:
        return ser_item(item)
    except Exception as exc:
        raise StructuredFieldError(_describe(exc)) from None


def serialize_params(params: Params) -> str:
    """Serialise parameters (``;a=1;b``) in the order given."""
    try:
        return ser_params(params)
    except Exception as exc:
        raise StructuredFieldError(_describe(exc)) from None


def serialize_inner_list(items: list[Item], params: Params) -> str:
    """Serialise an inner list ``(a b);p=1``."""
    return "(" + " ".join(serialize_item(item) for item in items) + ")" + serialize_params(params)


def serialize_member(member: Member) -> str:
    """Serialise a dictionary member value (an item or an inner list) without its key."""
    bare, params = member
    if isinstance(bare, list):
        return serialize_inner_list(bare, params)
    return serialize_item((bare, params))


def serialize_structured(value: Any) -> str:
    """Serialise any structure ``http-sf`` parsed (dictionary, list or item)."""
    try:
        return http_sf.ser(value)
    except Exception as exc:
        raise StructuredFieldError(_describe(exc)) from None


def parse_as(value: str, kind: str) -> Any:
    """Parse a field value as ``"dictionary"``, ``"list"`` or ``"item"`` (for ``;sf`` and ``;key``).

    Unlike :func:`parse_dictionary` this follows RFC 8941 to the letter (a repeated key keeps its last
    value): it canonicalises what a peer sent, it does not decide what a signature means.
    """
    try:
        return http_sf.parse(value.encode("ascii"), tltype=kind)
    except StructuredFieldError:
        raise
    except Exception as exc:
        raise StructuredFieldError(_describe(exc)) from None
