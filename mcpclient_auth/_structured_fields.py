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
import binascii
import re
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


# --- fast path ---------------------------------------------------------------------------------------
#
# Verifying a request parses three dictionaries (Signature-Input, Signature, Content-Digest), and the
# generic parser walks them byte by byte. The values our own signers write have one narrow canonical
# shape, so a strict regular subset of RFC 8941 is recognised directly: members separated by ", ",
# each ``key=`` an inner list of plain sf-strings, an sf-binary (canonical padding), an integer or an
# sf-string without escapes, followed by ``;key=integer`` / ``;key="string"`` parameters. Anything
# else — whitespace variants, escapes, tokens, decimals, booleans, item parameters, repeated keys,
# non-canonical base64 — is left to ``http-sf``, which decides. The fast path therefore never accepts
# a value the full parser would refuse, and returns exactly what it would return (a test holds it to
# that on generated inputs).

_KEY = r"[a-z*][a-z0-9_\-.*]*"
_STRING = r'"[ !#-\[\]-~]*"'
_INTEGER = r"-?[0-9]{1,15}"
# Text patterns, run on ASCII-only text (parse_dictionary checks): every class is an explicit ASCII
# range, so they match exactly what the same patterns match on the encoded bytes, and no group has
# to be decoded afterwards.
_PARAM = re.compile(r";(" + _KEY + r")=(?:(" + _INTEGER + r")|\"([ !#-\[\]-~]*)\")")
_MEMBER = re.compile(
    r"(" + _KEY + r")="
    r"(?:\(((?:" + _STRING + r"(?: " + _STRING + r")*)?)\)"  # 2: inner list of sf-strings
    r"|:([A-Za-z0-9+/]*={0,2}):"  # 3: sf-binary
    r"|(" + _INTEGER + r")"  # 4: integer
    r"|(" + _STRING + r"))"  # 5: sf-string
    r"((?:;" + _KEY + r"=(?:" + _INTEGER + r"|" + _STRING + r"))*)"  # 6: parameters
)


def _fast_params(text: str) -> Params | None:
    params: Params = {}
    # findall: (name, integer, string content) per parameter; an integer has at least one digit, so
    # an empty integer group means the string branch matched (possibly an empty string).
    for name, integer, string in _PARAM.findall(text):
        if name in params:
            return None  # repeated: the full parser refuses it with the right message
        params[name] = int(integer) if integer else string
    return params


def _fast_dictionary(data: str) -> dict[str, Member] | None:
    """The dictionary in ``data`` (ASCII text) if it has the narrow shape above, else ``None``."""
    out: dict[str, Member] = {}
    pos, end = 0, len(data)
    while True:
        match = _MEMBER.match(data, pos)
        if match is None:
            return None
        key = match.group(1)
        if key in out:
            return None
        params = _fast_params(match.group(6)) if match.group(6) else {}
        if params is None:
            return None
        member: Member
        if match.group(2) is not None:  # an inner list (possibly empty)
            items = match.group(2)
            # '" "' can only be the gap between two items: an sf-string here holds no '"'.
            member = ([(name, {}) for name in items[1:-1].split('" "')] if items else [], params)
        elif match.group(3) is not None:
            encoded = match.group(3)
            if len(encoded) % 4:
                return None
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                return None
            if base64.b64encode(raw).decode("ascii") != encoded:
                return None  # non-canonical bits or padding: let the full parser judge
            member = (raw, params)
        elif match.group(4) is not None:
            member = (int(match.group(4)), params)
        else:
            member = (match.group(5)[1:-1], params)
        out[key] = member
        pos = match.end()
        if pos == end:
            return out
        if data[pos : pos + 2] != ", " or pos + 2 >= end:
            return None
        pos += 2


def parse_dictionary(value: str | bytes) -> dict[str, Member]:
    """Parse an RFC 8941 dictionary; raise :class:`StructuredFieldError` on anything malformed.

    Members are normalised to ``(bare_item, params)`` or ``([items], params)``; a key without a value
    is ``(True, params)``. Repeated dictionary keys and repeated parameter names are refused.
    """
    if type(value) is str and value.isascii():
        fast = _fast_dictionary(value)
        if fast is not None:
            return fast
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


_KEY_TEXT = re.compile(_KEY)
_MAX_INTEGER = 999_999_999_999_999
#: Signature parameter names (RFC 9421 §2.3, wimse-aud): valid sf-keys, so no pattern match per use.
_KNOWN_KEYS = frozenset({"created", "expires", "nonce", "alg", "keyid", "tag", "wimse-aud"})


def _fast_params_text(params: Params) -> str | None:
    # Integers and escape-free strings only (what signature parameters are); else None.
    parts = []
    for name, value in params.items():
        if type(name) is not str or (name not in _KNOWN_KEYS and not _KEY_TEXT.fullmatch(name)):
            return None
        if type(value) is int and -_MAX_INTEGER <= value <= _MAX_INTEGER:
            parts.append(f";{name}={value}")
        elif (
            type(value) is str
            and value.isascii()
            and value.isprintable()
            and '"' not in value
            and "\\" not in value
        ):
            parts.append(f';{name}="{value}"')
        else:
            return None
    return "".join(parts)


def serialize_params(params: Params) -> str:
    """Serialise parameters (``;a=1;b``) in the order given."""
    fast = _fast_params_text(params)
    if fast is not None:
        return fast
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
