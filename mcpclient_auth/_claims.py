"""Claim checks shared by the token classes (mandate, execution record, ECT). Pure, no I/O.

Each helper either returns the validated value or raises a typed error naming the claim, never the
token. Times are integer epoch seconds; ``now`` is a float (``time.time()``) or ``None`` for "now".
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Collection, Mapping
from typing import Any

from .errors import AudienceMismatch, ClaimsInvalid, TokenExpired, TokenNotYetValid

__all__ = [
    "ACTION_PATTERN",
    "HASH_PATTERN",
    "UUID_PATTERN",
    "audience_list",
    "check_action",
    "check_audience",
    "check_hash",
    "check_preds",
    "check_times",
    "check_uuid",
    "new_uuid4",
    "now_seconds",
    "optional_str",
    "require_int",
    "require_object",
    "require_str",
]

#: Action names: dot-separated components, each ``[A-Za-z][A-Za-z0-9_-]*`` (e.g. ``mcp.search``).
ACTION_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z][A-Za-z0-9_-]*)*")
#: base64url of 32 raw bytes, unpadded: 43 characters, the last one carrying 4 data bits and 2 zero
#: bits (so only 16 letters can end a canonical encoding).
HASH_PATTERN = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")
#: The canonical textual UUID form (8-4-4-4-12 hex digits).
UUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

#: Larger "integer seconds" are not times (and do not survive a round trip through a double).
_MAX_TIME = 2**53


def new_uuid4() -> str:
    """A random (version 4) UUID in canonical text form, as ``str(uuid.uuid4())`` but cheaper: an ECT
    is minted per MCP call and ``uuid.UUID.__init__`` costs a few µs of argument checking."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now_seconds(now: float | None) -> float:
    return time.time() if now is None else float(now)


def require_str(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise ClaimsInvalid(f"claim {name!r} must be a non-empty string", claim=name)
    return value


def optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    if name not in claims:
        return None
    return require_str(claims, name)


def require_int(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    # bool is an int subclass; JSON true is not a time.
    if type(value) is not int or not 0 <= value < _MAX_TIME:
        raise ClaimsInvalid(f"claim {name!r} must be an integer number of seconds", claim=name)
    return value


def require_object(claims: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = claims.get(name)
    if not isinstance(value, dict):
        raise ClaimsInvalid(f"claim {name!r} must be a JSON object", claim=name)
    return value


def check_uuid(value: Any, name: str = "jti") -> str:
    if not isinstance(value, str) or not UUID_PATTERN.fullmatch(value):
        raise ClaimsInvalid(f"claim {name!r} must be a UUID", claim=name)
    return value


def check_action(value: Any, name: str = "exec_act") -> str:
    """An action name such as ``mcp.search``; :class:`ClaimsInvalid` otherwise (never rewritten)."""
    if not isinstance(value, str) or not ACTION_PATTERN.fullmatch(value):
        raise ClaimsInvalid(
            f"{name!r} must be dot-separated components of [A-Za-z][A-Za-z0-9_-]*", claim=name
        )
    return value


def check_hash(value: Any, name: str) -> str:
    """``inp_hash`` / ``out_hash``: base64url of 32 raw bytes, unpadded, no ``sha-256:`` prefix."""
    if not isinstance(value, str) or not HASH_PATTERN.fullmatch(value):
        raise ClaimsInvalid(f"claim {name!r} must be base64url (unpadded) of a SHA-256 digest", claim=name)
    return value


def check_preds(value: Any, *, name: str = "pred", max_preds: int = 100) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ClaimsInvalid(f"claim {name!r} must be a list of token ids", claim=name)
    if len(value) > max_preds:
        raise ClaimsInvalid(f"claim {name!r} lists more than {max_preds} predecessors", claim=name)
    if len(set(value)) != len(value):
        raise ClaimsInvalid(f"claim {name!r} lists a predecessor twice", claim=name)
    return value


def audience_list(value: Any) -> list[str]:
    """``aud`` as a list: a non-empty string or a non-empty list of non-empty strings (RFC 7519)."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(a, str) and a for a in value):
        return list(value)
    raise ClaimsInvalid("claim 'aud' must be a non-empty string or list of strings", claim="aud")


def check_audience(aud: Collection[str], expected: str | Collection[str] | None) -> None:
    """:class:`AudienceMismatch` unless one of ``expected`` is in ``aud`` (``None``: no check)."""
    if expected is None:
        return
    wanted = [expected] if isinstance(expected, str) else list(expected)
    if not any(a in aud for a in wanted):
        raise AudienceMismatch("the token is not addressed to this audience", expected=wanted)


def check_times(
    iat: int,
    exp: int,
    *,
    now: float | None,
    skew: float,
    max_age: float | None = None,
    check_exp: bool = True,
) -> None:
    """``exp`` after ``iat``; then, against the clock: not expired, not issued in the future, not older
    than ``max_age`` (each with ``skew`` seconds of tolerance)."""
    if exp <= iat:
        raise ClaimsInvalid("claim 'exp' must be later than 'iat'", claim="exp")
    current = now_seconds(now)
    if check_exp and current >= exp + skew:
        raise TokenExpired("the token has expired", exp=exp)
    if iat > current + skew:
        raise TokenNotYetValid("the token was issued in the future ('iat' beyond the clock skew)", iat=iat)
    if max_age is not None and current - iat > max_age + skew:
        raise TokenNotYetValid(f"the token was issued more than {max_age:g} s ago", iat=iat)
