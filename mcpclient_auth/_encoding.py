"""Small encoding helpers shared by every pure module (no I/O).

The one home of the SDK's strict decoders: :func:`b64url_decode` (JWS segments, JWK members) and
:func:`strict_json_loads` (JSON-RPC bodies, JWS headers and payloads, token responses, ledger lines).
A security rule written twice drifts apart; here it is written once.

    >>> b64url_decode("aGk")
    b'hi'
    >>> strict_json_loads(b'{"a": 1}', error=ValueError, what="the body")
    {'a': 1}
    >>> strict_json_loads(b'{"a": 1, "a": 2}', error=ValueError, what="the body")
    Traceback (most recent call last):
    ...
    ValueError: the body has a duplicate member name
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Callable
from typing import Any

__all__ = [
    "b64url_decode",
    "b64url_encode",
    "compact_json",
    "sha256_b64url",
    "strict_json_loads",
    "strict_json_loads_canonical",
]


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    # base64.urlsafe_b64encode is two Python layers over binascii (this runs several times a call).
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode("ascii")


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


#: base64url -> standard alphabet for binascii; "+" and "/" are refused before translating.
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
#: Characters that may end a canonical unpadded encoding, by ``len % 4``: the unused low bits of the
#: last character must be zero, so one value has exactly one text form.
_CANONICAL_LAST = {0: None, 2: frozenset(b"AQgw"), 3: frozenset(b"AEIMQUYcgkosw048")}
_PADDING = {0: b"", 2: b"==", 3: b"="}


def b64url_decode(text: str) -> bytes:
    """Strict, canonical base64url without padding (RFC 7515 §2); ``ValueError`` on anything else.

    Refused: padding, the standard alphabet's ``+`` / ``/``, whitespace, non-ASCII, a length of
    ``4n + 1``, and a non-canonical last character (stray low bits). It runs on every token
    verification, so the canonical check looks at the last character instead of re-encoding, and the
    decoding runs in ``binascii``'s strict mode.
    """
    if type(text) is not str:
        raise ValueError("not base64url without padding")
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("not base64url without padding") from None
    rest = len(raw) % 4
    if rest == 1 or b"=" in raw or b"+" in raw or b"/" in raw:
        raise ValueError("not base64url without padding")
    last = _CANONICAL_LAST[rest]
    if last is not None and raw[-1] not in last:
        raise ValueError("not canonical base64url")
    try:
        return binascii.a2b_base64(raw.translate(_TO_STANDARD) + _PADDING[rest], strict_mode=True)
    except binascii.Error:
        raise ValueError("not base64url without padding") from None


def sha256_b64url(data: bytes) -> str:
    """The hash format of ``inp_hash`` / ``out_hash``: base64url(SHA-256(data)), unpadded, no prefix."""
    return b64url_encode(hashlib.sha256(data).digest())


def compact_json(value: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces), the serialisation used for token payloads and ledger lines."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


# --- strict JSON -------------------------------------------------------------------------------------


class _DuplicateMember(ValueError):
    pass


class _NotJsonConstant(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers that keep different copies of a duplicated member disagree on what was signed or
    # checked (RFC 7515 §5.2, RFC 8259 §4 allow refusing): we refuse.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateMember
    return obj


def _refuse_constant(name: str) -> Any:
    # NaN, Infinity and -Infinity are Python's extension, not JSON (RFC 8259 §6).
    raise _NotJsonConstant(name)


#: One decoder for every caller: json.loads() with hooks would build a new decoder per call.
_STRICT = json.JSONDecoder(object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)


def strict_json_loads(
    data: bytes | str, *, error: Callable[[str], BaseException], what: str = "the document"
) -> Any:
    """Decode one UTF-8 JSON document strictly, or raise ``error(message)``.

    Refused: invalid UTF-8, a repeated member name in any object, ``NaN`` / ``Infinity``, trailing
    data after the value (whitespace aside), integers too long to convert, and nesting deep enough to
    exhaust the stack. ``error``
    is the caller's exception class (or any callable building one from a message); ``what`` names the
    document in the message (``"the token response"``). Messages never quote the document.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return _STRICT.decode(text)
    except _DuplicateMember:
        raise error(f"{what} has a duplicate member name") from None
    except _NotJsonConstant as exc:
        raise error(f"{what} holds {exc.args[0]}, which is not JSON") from None
    except UnicodeDecodeError:
        raise error(f"{what} is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            raise error(f"{what} has trailing data after the JSON value") from None
        raise error(f"{what} is not valid JSON (at offset {exc.pos})") from None
    except ValueError:  # e.g. an integer longer than the interpreter converts
        raise error(f"{what} is not valid JSON") from None
    except RecursionError:
        raise error(f"{what} is nested too deeply") from None


#: The C scanner alone, without the duplicate-member hook (see strict_json_loads_canonical).
_SCAN_CANONICAL: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder(
    parse_constant=_refuse_constant
).scan_once  # type: ignore[attr-defined]  # set in JSONDecoder.__init__, untyped in typeshed


def strict_json_loads_canonical(data: bytes, *, error: Callable[[str], BaseException], what: str) -> Any:
    """:func:`strict_json_loads` for a caller that then accepts the document **only if it re-encodes
    to exactly its own bytes** (the ledger's canonical lines), and for no one else.

    It skips the per-object duplicate-member hook (a Python call per object): a document with a
    repeated member name can never equal the re-encoding of what was parsed from it, which holds each
    member once, so that caller's comparison refuses it. Everything else is refused here as in
    :func:`strict_json_loads`: invalid UTF-8, ``NaN``/``Infinity``, leading or trailing data, integers
    too long to convert, nesting deep enough to exhaust the stack.
    """
    try:
        text = data.decode("utf-8")
        value, end = _SCAN_CANONICAL(text, 0)
    except _NotJsonConstant as exc:
        raise error(f"{what} holds {exc.args[0]}, which is not JSON") from None
    except UnicodeDecodeError:
        raise error(f"{what} is not valid UTF-8") from None
    except StopIteration as exc:  # the scanner's "no JSON value starts here"
        raise error(f"{what} is not valid JSON (at offset {exc.value})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON (at offset {exc.pos})") from None
    except ValueError:  # e.g. an integer longer than the interpreter converts
        raise error(f"{what} is not valid JSON") from None
    except RecursionError:
        raise error(f"{what} is nested too deeply") from None
    if end != len(text):
        raise error(f"{what} has trailing data after the JSON value")
    return value
