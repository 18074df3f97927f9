"""Ledger format v1: canonical encoding, strict parsing, hashes, and fuzzing of the line parser."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth._encoding import b64url_encode
from mcpclient_auth.errors import LedgerFormatError
from mcpclient_auth.ledger.format import (
    FIELDS,
    GENESIS_PREV,
    KINDS,
    MAX_LINE_BYTES,
    LedgerEntry,
    encode_line,
    format_ts,
    line_hash,
    parse_line,
    parse_ts,
)

PREV = b64url_encode(hashlib.sha256(b"previous line").digest())


def entry(**overrides: object) -> LedgerEntry:
    values: dict[str, object] = {
        "v": 1,
        "seq": 7,
        "ts": "2026-11-05T09:30:00.123456Z",
        "run": "6e74f774-5a88-4ad3-9c2f-80a45096a4be",
        "kind": "ect",
        "jti": "bd138fb2-0000-4000-8000-000000000001",
        "token": "eyJhbGciOiJFUzI1NiJ9.eyJqdGkiOiJ4In0.c2ln",
        "meta": {"method": "tools/call", "tool": "search", "id": 3, "duration_ms": 1.5, "note": "ünïcode ✓"},
        "prev": PREV,
    }
    values.update(overrides)
    return LedgerEntry(**values)  # type: ignore[arg-type]


def test_encode_is_compact_json_with_fixed_key_order() -> None:
    e = entry()
    line = encode_line(e)
    assert line == json.dumps(
        {name: getattr(e, name) for name in FIELDS}, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert list(json.loads(line)) == list(FIELDS)
    assert b"\n" not in line
    assert "ünïcode".encode() in line  # UTF-8, not \u escapes


def test_roundtrip_and_optional_fields() -> None:
    for e in (entry(), entry(jti=None, token=None, meta={}), entry(kind="seal", seq=1, prev=GENESIS_PREV)):
        assert parse_line(encode_line(e)) == e
    assert b'"jti":null,"token":null,"meta":{}' in encode_line(entry(jti=None, token=None, meta={}))


def test_every_kind_is_accepted() -> None:
    for kind in KINDS:
        assert parse_line(encode_line(entry(kind=kind))).kind == kind


def test_line_hash_is_b64url_sha256_of_the_bytes() -> None:
    line = encode_line(entry())
    assert line_hash(line) == b64url_encode(hashlib.sha256(line).digest())
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", line_hash(line))
    assert line_hash(line) != line_hash(line + b"\n")  # the newline is not part of the hashed line


def test_timestamps_are_rfc3339_utc_with_microseconds() -> None:
    now = time.time()
    text = format_ts(now)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text)
    assert abs(parse_ts(text) - now) < 1e-5
    assert format_ts(0) == "1970-01-01T00:00:00.000000Z"
    for bad in ("2026-11-05T09:30:00Z", "2026-11-05T09:30:00.123456+00:00", "2026-13-05T09:30:00.123456Z", 5):
        with pytest.raises(LedgerFormatError):
            parse_ts(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda line: line.replace(b'"seq":7', b'"seq": 7'),  # not compact
        lambda line: line.replace(b'{"v":1,"seq":7', b'{"seq":7,"v":1'),  # key order
        lambda line: line.replace(b'"seq":7', b'"seq":true'),
        lambda line: line.replace(b'"seq":7', b'"seq":0'),
        lambda line: line.replace(b'"seq":7', b'"seq":7.0'),
        lambda line: line.replace(b'"v":1', b'"v":2'),
        lambda line: line.replace(b'"kind":"ect"', b'"kind":"other"'),
        lambda line: line.replace(b'"kind":"ect"', b'"kind":["ect"]'),
        lambda line: line.replace(b'"meta":{', b'"meta":[{').replace(b',"prev"', b'],"prev"'),
        lambda line: line.replace(PREV.encode(), b"short"),
        lambda line: line.replace(b'"jti":"bd', b'"jti":"\\u0062d'),  # escapes that were not needed
        lambda line: line.replace(b'"duration_ms":1.5', b'"duration_ms":NaN'),
        lambda line: line.replace(b'"ts":"2026-11-05T09:30:00.123456Z"', b'"ts":"yesterday"'),
        lambda line: line[:-1] + b',"prev":"x"}',  # duplicate key
        lambda line: line.replace(b'"meta":{', b'"meta":{"method":"x",'),  # duplicate member in meta
        lambda line: line + b"\n",
        lambda line: line[:-5],
        lambda line: b"[" + line + b"]",
        lambda line: b"\xff" + line,
    ],
)
def test_parse_is_strict(mutate: object) -> None:
    line = encode_line(entry())
    bad = mutate(line)  # type: ignore[operator]
    assert bad != line
    with pytest.raises(LedgerFormatError):
        parse_line(bad)


def test_encode_refuses_what_cannot_be_a_line() -> None:
    with pytest.raises(LedgerFormatError):
        encode_line(entry(meta={"x": object()}))
    with pytest.raises(LedgerFormatError):
        encode_line(entry(meta={"x": float("nan")}))
    with pytest.raises(LedgerFormatError):
        encode_line(entry(seq=True))
    with pytest.raises(LedgerFormatError):
        encode_line(entry(run="\ud800"))  # a lone surrogate has no UTF-8 form


def test_oversize_and_deep_lines_are_format_errors() -> None:
    with pytest.raises(LedgerFormatError):
        parse_line(b"x" * (MAX_LINE_BYTES + 1))
    with pytest.raises(LedgerFormatError):
        parse_line(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(LedgerFormatError):
        parse_line(b'{"v":1,"seq":' + b"9" * 5000 + b"}")


def test_repr_does_not_show_the_token() -> None:
    e = entry()
    assert e.token is not None and e.token not in repr(e)


# --- fuzzing: only LedgerFormatError, whatever the bytes -----------------------------------------------


def _only_format_errors(data: bytes) -> None:
    try:
        parsed = parse_line(data)
    except LedgerFormatError:
        return
    assert encode_line(parsed) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    _only_format_errors(data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
# Values that are valid for a field, mixed with arbitrary JSON, so the checks past the first one run.
_field_values = {
    "v": st.just(1) | _json,
    "seq": st.integers(min_value=-2, max_value=10**20) | _json,
    "ts": st.just("2026-11-05T09:30:00.123456Z") | st.text(max_size=30),
    "run": st.text(max_size=10) | _json,
    "kind": st.sampled_from(KINDS) | _json,
    "jti": st.none() | st.text(max_size=10),
    "token": st.none() | st.text(max_size=10) | _json,
    "meta": st.dictionaries(st.text(max_size=6), _json, max_size=3) | _json,
    "prev": st.just(PREV) | st.just(GENESIS_PREV) | st.text(max_size=44),
}


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries(_field_values))
def test_fuzz_json_objects(obj: dict[str, object]) -> None:
    _only_format_errors(
        json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    )


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from([*FIELDS, "x"]), _json, max_size=10))
def test_fuzz_json_objects_any_keys(obj: dict[str, object]) -> None:
    _only_format_errors(
        json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    )


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=0, max_size=8), st.integers(0, 3))
def test_fuzz_mutated_valid_lines(position: int, patch: bytes, mode: int) -> None:
    line = encode_line(entry())
    position %= len(line)
    if mode == 0:
        data = line[:position] + patch + line[position:]
    elif mode == 1:
        data = line[:position] + patch + line[position + len(patch) :]
    elif mode == 2:
        data = line[:position]
    else:
        data = line[:position] + line[position + 1 :]
    _only_format_errors(data)


def test_parse_ts_remembers_only_the_last_valid_text() -> None:
    """Issue #16: the verifier reads each ts twice in a row; the second read reuses the first's
    value — and the memo never answers for another text or turns an invalid one valid."""
    first, second = "2026-11-05T09:30:00.000000Z", "2026-11-05T09:30:01.500000Z"
    value = parse_ts(first)
    assert parse_ts(first) == value
    assert parse_ts(second) == value + 1.5
    assert parse_ts(first) == value
    for bad in ("2026-11-05T09:30:00Z", "2026-13-05T09:30:00.000000Z", first + " "):
        with pytest.raises(LedgerFormatError):
            parse_ts(bad)
        assert parse_ts(first) == value
