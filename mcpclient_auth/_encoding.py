"""Small encoding helpers shared by every pure module (no I/O)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

__all__ = ["b64url_decode", "b64url_encode", "compact_json", "sha256_b64url"]


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url decoding without padding; raises ``ValueError`` on anything else."""
    if not isinstance(text, str) or "=" in text:
        raise ValueError("not base64url without padding")
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("not base64url without padding") from None
    if len(raw) % 4 == 1:
        raise ValueError("not base64url without padding")
    try:
        decoded = base64.b64decode(raw + b"=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError):
        raise ValueError("not base64url without padding") from None
    # Reject non-canonical encodings (stray low bits), so one value has exactly one text form.
    if b64url_encode(decoded) != text:
        raise ValueError("not canonical base64url")
    return decoded


def sha256_b64url(data: bytes) -> str:
    """The hash format of ``inp_hash`` / ``out_hash``: base64url(SHA-256(data)), unpadded, no prefix."""
    return b64url_encode(hashlib.sha256(data).digest())


def compact_json(value: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces), the serialisation used for token payloads and ledger lines."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
