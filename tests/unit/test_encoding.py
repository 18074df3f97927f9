"""_encoding: the one strict base64url decoder and the one strict JSON decoder, and every caller's
use of them (review §5: each security rule in one place, each caller keeping its own error type)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcpclient_auth import jose
from mcpclient_auth._encoding import (
    b64url_decode,
    b64url_encode,
    strict_json_loads,
    strict_json_loads_canonical,
)
from mcpclient_auth.authz._token_request import parse_token_response
from mcpclient_auth.errors import InvalidTokenResponse, JsonRpcError, LedgerFormatError, MalformedToken
from mcpclient_auth.jsonrpc import parse
from mcpclient_auth.ledger.format import parse_line


def _reference_b64url_decode(text: str) -> bytes | None:
    """The definition, written the slow obvious way: unpadded, url-safe alphabet only, canonical."""
    if "=" in text or any(c not in _ALPHABET for c in text) or len(text) % 4 == 1:
        return None
    decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return decoded if b64url_encode(decoded) == text else None


_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="AQgwBz09-_+/= \n\u00e9", max_size=12))
@example("")
@example("AB")  # stray low bits: not canonical
@example("AQ")
@example("A")  # 4n + 1
@example("AA==")
def test_b64url_decode_accepts_exactly_the_canonical_unpadded_encodings(text: str) -> None:
    expected = _reference_b64url_decode(text)
    if expected is None:
        with pytest.raises(ValueError):
            b64url_decode(text)
    else:
        assert b64url_decode(text) == expected


@given(st.binary(max_size=64))
def test_b64url_round_trip(data: bytes) -> None:
    assert b64url_decode(b64url_encode(data)) == data


@pytest.mark.parametrize("value", [None, b"AAAA", 5])
def test_b64url_decode_refuses_non_text(value: Any) -> None:
    with pytest.raises(ValueError):
        b64url_decode(value)


# --- strict JSON -------------------------------------------------------------------------------------

#: Documents every strict caller refuses, with a fragment of the message.
REFUSED = [
    (b'{"a":1,"a":2}', "duplicate member"),
    (b'{"o":{"b":1,"b":1}}', "duplicate member"),  # nested objects too
    (b'{"a":NaN}', "NaN"),
    (b'{"a":Infinity}', "Infinity"),
    (b'{"a":-Infinity}', "-Infinity"),
    (b'{"a":1} {}', "trailing data"),
    (b"\xff{}", "UTF-8"),
    (b'{"a":', "not valid JSON"),
    (b'{"a":' + b"1" * 5000 + b"}", "not valid JSON"),  # int() refuses it with a bare ValueError
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize(("document", "fragment"), REFUSED)
def test_strict_json_loads_refuses_with_the_callers_error(document: bytes, fragment: str) -> None:
    class Refused(Exception):
        pass

    with pytest.raises(Refused, match="the thing") as info:
        strict_json_loads(document, error=Refused, what="the thing")
    assert fragment in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_strict_json_loads_accepts_ordinary_json_and_whitespace() -> None:
    assert strict_json_loads(' \n{"a": [1, 2.5, "x", null, true]}\t', error=ValueError) == {
        "a": [1, 2.5, "x", None, True]
    }


def _jsonrpc(document: bytes) -> object:
    return parse(document, content_type="application/json")


def _jws_payload(document: bytes) -> object:
    header = b64url_encode(json.dumps({"alg": "ES256", "typ": "x"}).encode())
    return jose.decode(f"{header}.{b64url_encode(document)}.{b64url_encode(b'x' * 64)}")


def _token_response(document: bytes) -> object:
    return parse_token_response(document, now=0.0)


#: Every strict-JSON caller and the error type it keeps.
CALLERS: list[tuple[Callable[[bytes], object], type[Exception]]] = [
    (_jsonrpc, JsonRpcError),
    (_jws_payload, MalformedToken),
    (_token_response, InvalidTokenResponse),
    (parse_line, LedgerFormatError),
]


@pytest.mark.parametrize(("caller", "error"), CALLERS, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize(("document", "fragment"), REFUSED[:-1])
def test_every_caller_refuses_the_same_documents_with_its_own_error(
    caller: Callable[[bytes], object], error: type[Exception], document: bytes, fragment: str
) -> None:
    # jsonrpc.parse let int()'s bare ValueError through for a 5000-digit number (the other callers
    # caught ValueError) and accepted NaN; one decoder gives one policy.
    with pytest.raises(error):
        caller(document)


@pytest.mark.parametrize(
    "document",
    [b" {}", b"{} ", b'{"a":NaN}', b'{"a":-Infinity}', b"\xff{}", b"[" * 100_000, b'{"a":' + b"9" * 5000 + b"}",
     b"", b'{"a":1}x', b"{'a':1}"],
)  # fmt: skip
def test_the_canonical_loader_refuses_what_strict_json_loads_refuses(document: bytes) -> None:
    # (Duplicate member names are left to its caller's canonical re-encoding: see test_ledger_format.)
    with pytest.raises(ValueError):
        strict_json_loads_canonical(document, error=ValueError, what="the line")
    assert strict_json_loads_canonical(b'{"a":[1,{"b":null}]}', error=ValueError, what="x") == {
        "a": [1, {"b": None}]
    }
