"""Generic HTTP Message Signatures (RFC 9421), private; :mod:`mcpclient_auth.httpsig` is the public face.

Laid out like joserfc's ``_rfc7515/`` package, one module a part of the RFC:

- :mod:`.components` (§2): :class:`HttpMessage`, :class:`ComponentId`, component values and the
  signature base;
- :mod:`.algorithms` (§3.3): the algorithm registry (``ecdsa-p256-sha256`` and ``ed25519`` delegate to
  :mod:`mcpclient_auth.keys`);
- :mod:`.signatures` (§3, §4): ``Signature-Input`` / ``Signature`` parsing, create and verify.

The names below are re-exported for the RFC's conformance tests and the profiles in ``httpsig``.
"""

from __future__ import annotations

from .algorithms import HTTP_SIGNATURE_ALGORITHMS, HttpSignatureAlgorithm, http_signature_algorithm
from .components import (
    DERIVED_COMPONENTS,
    STRUCTURED_FIELDS,
    ComponentId,
    HttpMessage,
    component_value,
    signature_base,
    target_uri,
)
from .signatures import (
    CreatedSignature,
    ParsedField,
    ParsedSignature,
    create_signature,
    parse_signature_fields,
    parse_signatures,
    serialize_signature_params,
    verify_signature,
)

__all__ = [
    "DERIVED_COMPONENTS",
    "HTTP_SIGNATURE_ALGORITHMS",
    "STRUCTURED_FIELDS",
    "ComponentId",
    "CreatedSignature",
    "HttpMessage",
    "HttpSignatureAlgorithm",
    "ParsedField",
    "ParsedSignature",
    "component_value",
    "create_signature",
    "http_signature_algorithm",
    "parse_signature_fields",
    "parse_signatures",
    "serialize_signature_params",
    "signature_base",
    "target_uri",
    "verify_signature",
]
