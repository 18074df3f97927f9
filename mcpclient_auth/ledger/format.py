"""Ledger format v1: one JSON object per line, a hash chain over the raw line bytes. Pure, no I/O.

Every line is compact UTF-8 JSON with the keys in this fixed order (DESIGN §5)::

    {"v":1,"seq":7,"ts":"2026-11-05T09:30:00.123456Z","run":"<mandate jti>","kind":"ect",
     "jti":"<token id>","token":"<compact JWS>","meta":{...},"prev":"<line_hash of line 6>"}

- ``seq`` counts lines from **1** and has no gaps.
- ``ts`` is RFC 3339, UTC, always with microseconds and a ``Z``.
- ``kind`` is one of :data:`KINDS`; ``jti`` and ``token`` are ``null`` when the kind has none;
  ``meta`` is always an object (``{}`` when empty).
- ``prev`` is :func:`line_hash` of the previous line's bytes (without its newline). The first line of
  a file has no predecessor; its ``prev`` is :data:`GENESIS_PREV`, the **empty string** — it can never
  be confused with a real hash, which is always 43 base64url characters.
- ``run`` is the run's mandate ``jti``; ledger-level entries that belong to no run (the crash recovery
  record, a ``checkpoint``) use :data:`NO_RUN`, the empty string.
- ``checkpoint`` (added 2026-12-01, additive: a verifier of v1 before it refuses the unknown kind as
  ``line_malformed``, it never accepts one unchecked) is a ledger-level JWS (typ
  :data:`CHECKPOINT_TYP`) by a server key over ``{"seq", "ts", "last", "iat"}``: the line's own
  ``seq`` and ``ts`` and its ``prev``. Servers write one every N entries and on shutdown.
- The recovery record (kind ``error``, meta ``{"code": "ledger_recovered", "torn_bytes", "torn_hash"}``)
  carries, when its writer has a key, a JWS (typ :data:`RECOVERY_TYP`) over ``{"seq", "ts",
  "torn_bytes", "torn_hash", "before", "iat"}`` (``before``: the hash of the line before the torn one).

Lines are *canonical*: :func:`parse_line` accepts exactly the bytes :func:`encode_line` produces for
the entry it returns, so one entry has one byte form and one hash.

    line = encode_line(entry)              # bytes, no newline
    parse_line(line) == entry              # True
    line_hash(line)                        # 'q1Vb…' (43 characters) — the next line's prev
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._encoding import strict_json_loads_canonical
from ..errors import LedgerFormatError

__all__ = [
    "CHECKPOINT_TYP",
    "FIELDS",
    "GENESIS_PREV",
    "KINDS",
    "LEDGER_VERSION",
    "LEGACY_RECOVERY_MESSAGE",
    "MAX_LINE_BYTES",
    "NO_RUN",
    "RECOVERY_CODE",
    "RECOVERY_TYP",
    "LedgerEntry",
    "encode_fields",
    "encode_line",
    "format_ts",
    "line_hash",
    "parse_line",
    "parse_ts",
]

LEDGER_VERSION = 1
KINDS: tuple[str, ...] = ("mandate", "ect", "response", "record", "denial", "error", "seal", "checkpoint")
FIELDS: tuple[str, ...] = ("v", "seq", "ts", "run", "kind", "jti", "token", "meta", "prev")
#: ``prev`` of the first line of a file.
GENESIS_PREV = ""
#: ``run`` of entries that belong to no run (crash recovery records).
NO_RUN = ""
#: ``meta.code`` of the ``error`` entry a writer appends after finding a torn last line.
RECOVERY_CODE = "ledger_recovered"
#: The ``message`` recovery records carried before 2026-12-01 (still accepted, exactly this text).
LEGACY_RECOVERY_MESSAGE = "the ledger's last line was torn or unreadable; it was closed and skipped"
#: JWS ``typ`` of a recovery record's token (signed by the writer that found the torn line).
RECOVERY_TYP = "ledger-recovery+jwt"
#: JWS ``typ`` of a ``checkpoint`` entry's token (signed by a server key).
CHECKPOINT_TYP = "ledger-checkpoint+jwt"
#: Longest line accepted (bytes, without the newline). Our lines are a few KiB; the bound keeps a
#: hostile file from costing unbounded memory in a reader.
MAX_LINE_BYTES = 1024 * 1024

_KIND_SET = frozenset(KINDS)
_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_HASH = re.compile(r"[A-Za-z0-9_-]{43}")
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger line, decoded.

        LedgerEntry(v=1, seq=1, ts=format_ts(time.time()), run=mandate.jti, kind="mandate",
                    jti=mandate.jti, token=mandate.token, meta={}, prev=GENESIS_PREV)
    """

    v: int
    seq: int
    ts: str
    run: str
    kind: str
    jti: str | None
    token: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    prev: str = GENESIS_PREV

    @property
    def time(self) -> float:
        """``ts`` as epoch seconds."""
        return parse_ts(self.ts)

    @property
    def is_recovery(self) -> bool:
        """True for the ``error`` entry a writer appends after a torn last line."""
        return self.kind == "error" and self.meta.get("code") == RECOVERY_CODE

    def __repr__(self) -> str:
        # The token is verifiable evidence, not a credential, but it is long: show its presence only.
        token = "…" if self.token else None
        return (
            f"LedgerEntry(seq={self.seq}, ts={self.ts!r}, run={self.run!r}, kind={self.kind!r}, "
            f"jti={self.jti!r}, token={token!r})"
        )


def format_ts(epoch: float) -> str:
    """RFC 3339 UTC with microseconds: ``format_ts(0) == '1970-01-01T00:00:00.000000Z'``."""
    return datetime.fromtimestamp(epoch, UTC).strftime(_TS_FORMAT)


def parse_ts(text: str) -> float:
    """The inverse of :func:`format_ts`; :class:`LedgerFormatError` on any other form."""
    last = _last_ts
    if type(text) is str and text == last[0]:
        # A verifier reads each ts twice in a row (the line's format check, then the run's time
        # checks): the second read is the first one's result. Only valid texts are remembered.
        return last[1]
    if not isinstance(text, str) or not _TS.fullmatch(text):
        raise LedgerFormatError("'ts' must be RFC 3339 UTC with microseconds (2026-11-05T09:30:00.000000Z)")
    try:
        value = datetime.fromisoformat(text).timestamp()  # 3.11 reads the "Z"; the regex fixed the form
    except ValueError:
        raise LedgerFormatError("'ts' is not a valid date and time") from None
    _remember_ts(text, value)
    return value


#: The last valid ``ts`` parsed and its value (one tuple, replaced whole: safe across threads).
_last_ts: tuple[str, float] = ("", 0.0)


def _remember_ts(text: str, value: float) -> None:
    global _last_ts
    _last_ts = (text, value)


def line_hash(line: bytes) -> str:
    """base64url(SHA-256(line)), unpadded. Pass the line **without** its newline."""
    # b64url_encode, unrolled for 32 bytes: this runs for every line written and read.
    encoded = binascii.b2a_base64(hashlib.sha256(line).digest(), newline=False)
    return encoded[:43].translate(_URLSAFE).decode("ascii")


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def encode_line(entry: LedgerEntry) -> bytes:
    """The canonical bytes of ``entry``: compact UTF-8 JSON, keys in :data:`FIELDS` order, no newline.

    :class:`LedgerFormatError` when a field has the wrong type or ``meta`` is not JSON-serialisable.
    """
    return encode_fields(
        entry.v, entry.seq, entry.ts, entry.run, entry.kind, entry.jti, entry.token, entry.meta, entry.prev
    )


def encode_fields(
    v: int,
    seq: int,
    ts: str,
    run: str,
    kind: str,
    jti: str | None,
    token: str | None,
    meta: dict[str, Any],
    prev: str,
) -> bytes:
    """:func:`encode_line` from the field values (the writer's hot path skips building an entry)."""
    # Assembled by hand around the C string encoder: this runs once per ledger line on the request
    # path, and is byte-for-byte what json.dumps(..., separators=(",", ":"), ensure_ascii=False)
    # gives for the same dict (a test holds it to that).
    try:
        if type(v) is not int or type(seq) is not int or not isinstance(meta, dict):
            raise TypeError("v and seq are integers, meta an object")
        text = (
            f'{{"v":{v},"seq":{seq},"ts":{_string(ts)},"run":{_string(run)},"kind":{_string(kind)},'
            f'"jti":{"null" if jti is None else _string(jti)},'
            f'"token":{"null" if token is None else _string(token)},'
            f'"meta":{_encode_meta(meta) if meta else "{}"},"prev":{_string(prev)}}}'
        )
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError: lone surrogates
        raise LedgerFormatError(f"the entry is not JSON-serialisable ({type(exc).__name__})") from None


_string: Callable[[str], str] = json.encoder.encode_basestring


def _make_meta_encoder() -> Callable[[dict[str, Any]], str]:
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - CPython always has the C encoder
        return encoder.encode
    # The C encoder without the json.dumps wrappers; recursion is bounded by RecursionError.
    iterencode = c_make_encoder(None, encoder.default, _string, None, ":", ",", False, False, False)
    return lambda value: "".join(iterencode(value, 0))


_encode_meta = _make_meta_encoder()


def parse_line(line: bytes) -> LedgerEntry:
    """Decode one line (without its newline). Strict: anything but a canonical v1 entry raises
    :class:`LedgerFormatError` — and nothing else, whatever the bytes.

        entry = parse_line(b'{"v":1,"seq":1,...}')
    """
    if type(line) is not bytes:
        if not isinstance(line, bytes | bytearray | memoryview):
            raise LedgerFormatError("a ledger line must be bytes")
        line = bytes(line)
    if len(line) > MAX_LINE_BYTES:
        raise LedgerFormatError(f"the line is longer than {MAX_LINE_BYTES} bytes")
    if b"\n" in line:
        raise LedgerFormatError("a ledger line holds no newline")
    # Duplicate member names are refused by the canonical comparison below (see the decoder's doc).
    obj = strict_json_loads_canonical(line, error=LedgerFormatError, what="the line")
    if not isinstance(obj, dict):
        raise LedgerFormatError("the line is not a JSON object")
    if tuple(obj) != FIELDS:
        raise LedgerFormatError(f"the line's keys must be exactly {', '.join(FIELDS)}, in that order")
    _check(obj)
    entry = LedgerEntry(*obj.values())  # the keys are FIELDS, in order
    # Canonical form: one entry, one byte string (also rejects duplicate keys and stray whitespace).
    if encode_line(entry) != line:
        raise LedgerFormatError("the line is not in canonical form (compact JSON, no escapes added)")
    return entry


def _check(obj: Mapping[str, Any]) -> None:
    v, seq = obj["v"], obj["seq"]
    if type(v) is not int or v != LEDGER_VERSION:
        raise LedgerFormatError(f"unsupported ledger version (this reader knows v{LEDGER_VERSION})")
    if type(seq) is not int or seq < 1:
        raise LedgerFormatError("'seq' must be a positive integer")
    parse_ts(obj["ts"])
    run = obj["run"]
    if not isinstance(run, str):
        raise LedgerFormatError("'run' must be a string")
    if not isinstance(obj["kind"], str) or obj["kind"] not in _KIND_SET:
        raise LedgerFormatError(f"'kind' must be one of {', '.join(KINDS)}")
    for name in ("jti", "token"):
        value = obj[name]
        if value is not None and (not isinstance(value, str) or not value):
            raise LedgerFormatError(f"{name!r} must be a non-empty string or null")
    if not isinstance(obj["meta"], dict):
        raise LedgerFormatError("'meta' must be a JSON object")
    prev = obj["prev"]
    if not isinstance(prev, str) or (prev != GENESIS_PREV and not _HASH.fullmatch(prev)):
        raise LedgerFormatError("'prev' must be a line hash (43 base64url characters) or empty")
