"""RFC 9530 ``Content-Digest``: create, parse and verify.

A ``Content-Digest`` field is a structured-field dictionary whose keys name a hash algorithm and whose
values are byte sequences: ``sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:``.

    content_digest(b'{"hello": "world"}')
    # 'sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:'
    verify_content_digest(request.headers.get("Content-Digest"), body)   # DigestError when it lies

Only ``sha-256`` and ``sha-512`` are active algorithms (``DIGEST_ALGORITHMS``). Members naming other
algorithms (deprecated ones such as ``md5``, or future ones) are ignored by verification as long as an
acceptable algorithm is present too; they never count as proof of the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Collection

from . import _structured_fields
from .errors import DigestError

__all__ = ["DIGEST_ALGORITHMS", "content_digest", "parse_digest_field", "verify_content_digest"]


#: The RFC 9530 "active" hash algorithms this SDK creates and checks, with their digest sizes.
DIGEST_ALGORITHMS: dict[str, tuple[Callable[[bytes], hashlib._Hash], int]] = {
    "sha-256": (hashlib.sha256, 32),
    "sha-512": (hashlib.sha512, 64),
}


def content_digest(body: bytes, algorithm: str = "sha-256") -> str:
    """The ``Content-Digest`` field value for ``body``: ``'<algorithm>=:<base64>:'``.

    ``algorithm`` is ``"sha-256"`` (default) or ``"sha-512"``; an empty body has a digest too.
    """
    try:
        hasher, _ = DIGEST_ALGORITHMS[algorithm]
    except (KeyError, TypeError):
        raise DigestError(
            f"unsupported digest algorithm {algorithm!r}; use one of {sorted(DIGEST_ALGORITHMS)}"
        ) from None
    return f"{algorithm}=:{base64.b64encode(hasher(body).digest()).decode('ascii')}:"


def parse_digest_field(value: str) -> dict[str, bytes]:
    """Parse a ``Content-Digest`` / ``Repr-Digest`` value into ``{algorithm: digest bytes}``.

    Strict: the value must be a structured-field dictionary of byte sequences without parameters,
    without repeated keys, and with at least one member; ``sha-256`` / ``sha-512`` values must have
    their digest's length. Members naming other algorithms are returned as they are.
    Raises :class:`DigestError` on anything else.

        parse_digest_field("sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:")
        # {'sha-256': b'\\xe3\\xb0\\xc4...'}
    """
    try:
        members = _structured_fields.parse_dictionary(value)
    except _structured_fields.StructuredFieldError as exc:
        raise DigestError(f"Content-Digest is not a structured-field dictionary: {exc}") from None
    if not members:
        raise DigestError("Content-Digest is empty")
    digests: dict[str, bytes] = {}
    for algorithm, member in members.items():
        bare, params = member
        if not isinstance(bare, bytes):
            raise DigestError(f"Content-Digest member {algorithm!r} is not a byte sequence")
        if params:
            # No digest parameter is defined; refusing them keeps one meaning per field value.
            raise DigestError(f"Content-Digest member {algorithm!r} carries unexpected parameters")
        known = DIGEST_ALGORITHMS.get(algorithm)
        if known is not None and len(bare) != known[1]:
            raise DigestError(f"Content-Digest {algorithm} value has the wrong length")
        digests[algorithm] = bare
    return digests


def verify_content_digest(
    value: str | None, body: bytes, *, required: Collection[str] = ("sha-256",)
) -> dict[str, bytes]:
    """Check a ``Content-Digest`` value against ``body``; raise :class:`DigestError` unless it holds.

    The field must carry at least one member whose algorithm is in ``required`` (the algorithms the
    verifier accepts as proof), and every member with a supported algorithm (``sha-256``, ``sha-512``)
    must match the body. Members with other algorithms are ignored.

        verify_content_digest(headers.get("Content-Digest"), body)
        verify_content_digest(value, body, required=("sha-256", "sha-512"))   # either is enough

    Returns the body's digests it computed (and found equal to the field's), by algorithm: a caller
    that needs the body's SHA-256 anyway (the server's ECT ``inp_hash`` check) need not hash it again.
    """
    if value is None:
        raise DigestError("Content-Digest is missing")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise DigestError("the body to check must be bytes")
    unknown = [name for name in required if name not in DIGEST_ALGORITHMS]
    if unknown or not required:
        raise DigestError(f"cannot require digest algorithms {sorted(unknown) or '(none)'}")
    digests = parse_digest_field(value)
    if not any(name in digests for name in required):
        raise DigestError(f"Content-Digest carries none of the accepted algorithms {sorted(required)}")
    data = bytes(body)
    computed: dict[str, bytes] = {}
    for algorithm, expected in digests.items():
        known = DIGEST_ALGORITHMS.get(algorithm)
        if known is None:
            continue
        actual = known[0](data).digest()
        if not hmac.compare_digest(actual, expected):
            raise DigestError(f"Content-Digest ({algorithm}) does not match the body")
        computed[algorithm] = actual
    return computed
