"""RFC 9421 test vectors (tests/vectors/rfc9421_vectors.json) against the generic signature layer.

Every case: the signature base is reproduced byte for byte from the message and the RFC's signature
verifies over it. Deterministic algorithms (HMAC B.2.5, Ed25519 B.2.6 and B.4, RSA v1.5 in §4.3) also
reproduce the exact ``Signature`` field bytes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mcpclient_auth._encoding import b64url_decode
from mcpclient_auth._rfc9421 import (
    ComponentId,
    HttpMessage,
    component_value,
    create_signature,
    parse_signature_fields,
    parse_signatures,
    serialize_signature_params,
    verify_signature,
)
from mcpclient_auth.errors import ComponentError, SignatureInvalid, SignaturePolicyError

VECTORS_FILE = "rfc9421_vectors.json"


@pytest.fixture(scope="module")
def vectors(vectors_dir: Path) -> dict[str, Any]:
    return json.loads((vectors_dir / VECTORS_FILE).read_text("utf-8"))


def _load_cases() -> list[dict[str, Any]]:
    # Parametrisation happens at collection time, before fixtures exist: read the file directly.
    from tests.conftest import VECTORS

    return json.loads((VECTORS / VECTORS_FILE).read_text("utf-8"))["cases"]


CASES = _load_cases()
DETERMINISTIC = [case for case in CASES if case["deterministic"]]


def _int(value: str) -> int:
    return int.from_bytes(b64url_decode(value), "big")


def _keys(vectors: dict[str, Any], kid: str) -> tuple[Any, Any]:
    """(signing key, verification key) for one of the RFC's test keys."""
    entry = vectors["keys"][kid]
    if kid == "test-shared-secret":
        secret = base64.b64decode(entry["secret_base64"])
        assert len(secret) == 64
        return secret, secret
    jwk = entry["jwk"]
    if jwk["kty"] == "RSA":
        # The PSS key's PEM uses the id-RSASSA-PSS OID, which not every loader takes: use the JWK.
        public = rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"]))
        private = rsa.RSAPrivateNumbers(
            _int(jwk["p"]),
            _int(jwk["q"]),
            _int(jwk["d"]),
            _int(jwk["dp"]),
            _int(jwk["dq"]),
            _int(jwk["qi"]),
            public,
        ).private_key()
        return private, private.public_key()
    private_key = serialization.load_pem_private_key(entry["private_pem"].encode(), password=None)
    public_key = serialization.load_pem_public_key(entry["public_pem"].encode())
    return private_key, public_key


def _message(vectors: dict[str, Any], name: str, *, corrected: bool = True) -> HttpMessage:
    data = vectors["messages"][name]
    headers = data["headers_corrected"] if corrected and "headers_corrected" in data else data["headers"]
    pairs = [(h[0], h[1]) for h in headers]
    if "status" in data:
        return HttpMessage(headers=pairs, body=data["body"].encode(), status=data["status"])
    return HttpMessage(method=data["method"], url=data["url"], headers=pairs, body=data["body"].encode())


def _case_message(vectors: dict[str, Any], case: dict[str, Any]) -> HttpMessage:
    message = _message(vectors, case["message"])
    if "related_request" in case:
        message = replace(message, request=_message(vectors, case["related_request"]))
    return message


def _parsed(case: dict[str, Any]) -> Any:
    signatures = parse_signature_fields(case["signature_input_header"], case["signature_header"])
    assert list(signatures) == [case["label"]]
    return signatures[case["label"]]


# --- every case ----------------------------------------------------------------------------------------


def test_the_vector_file_has_the_cases_the_acceptance_names() -> None:
    ids = {case["id"] for case in CASES}
    assert {"B.2.1", "B.2.2", "B.2.3", "B.2.4", "B.2.5", "B.2.6", "B.3", "B.4"} <= ids
    assert len(CASES) == 14
    assert {"B.2.5", "B.2.6", "B.4"} <= {case["id"] for case in DETERMINISTIC}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_signature_base_is_reproduced_exactly(vectors: dict[str, Any], case: dict[str, Any]) -> None:
    parsed = _parsed(case)
    assert parsed.signature_params == case["signature_input_value"]
    _, public = _keys(vectors, case["keyid"])
    base = verify_signature(_case_message(vectors, case), parsed, public, case["algorithm"])
    assert base == case["signature_base"].encode("ascii")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_rfc_signature_verifies_and_a_flipped_bit_does_not(
    vectors: dict[str, Any], case: dict[str, Any]
) -> None:
    parsed = _parsed(case)
    _, public = _keys(vectors, case["keyid"])
    message = _case_message(vectors, case)
    verify_signature(message, parsed, public, case["algorithm"])
    tampered = bytearray(parsed.signature)
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(SignatureInvalid):
        verify_signature(message, replace(parsed, signature=bytes(tampered)), public, case["algorithm"])


@pytest.mark.parametrize("case", DETERMINISTIC, ids=[c["id"] for c in DETERMINISTIC])
def test_deterministic_signatures_reproduce_the_exact_field_bytes(
    vectors: dict[str, Any], case: dict[str, Any]
) -> None:
    parsed = _parsed(case)
    private, _ = _keys(vectors, case["keyid"])
    created = create_signature(
        _case_message(vectors, case),
        label=case["label"],
        components=[cid.text for cid in parsed.components],
        params=parsed.params,
        key=private,
        algorithm=case["algorithm"],
    )
    assert created.base == case["signature_base"].encode("ascii")
    assert created.headers == {
        "Signature-Input": case["signature_input_header"],
        "Signature": case["signature_header"],
    }
    assert base64.b64encode(created.signature).decode() == case["signature_b64"]


def test_a_covered_header_change_breaks_the_signature(vectors: dict[str, Any]) -> None:
    case = next(c for c in CASES if c["id"] == "B.2.6")
    message = _case_message(vectors, case)
    changed = replace(
        message,
        headers=[(n, "text/plain" if n.lower() == "content-type" else v) for n, v in message.headers],
    )
    _, public = _keys(vectors, case["keyid"])
    with pytest.raises(SignatureInvalid):
        verify_signature(changed, _parsed(case), public, case["algorithm"])


def test_a_signed_alg_parameter_must_match_the_algorithm(vectors: dict[str, Any]) -> None:
    case = next(c for c in CASES if c["id"] == "S4.3-proxy_sig")
    assert _parsed(case).alg == "rsa-v1_5-sha256"
    _, public = _keys(vectors, case["keyid"])
    with pytest.raises(SignaturePolicyError):
        verify_signature(_case_message(vectors, case), _parsed(case), public, "rsa-pss-sha512")


def test_b24_printed_content_digest_is_the_rfc_erratum(vectors: dict[str, Any]) -> None:
    # The RFC's test-response prints a Content-Digest that is not the body's; the signature is over
    # the corrected value, so the printed message must NOT verify.
    case = next(c for c in CASES if c["id"] == "B.2.4")
    _, public = _keys(vectors, case["keyid"])
    printed = _message(vectors, "test-response", corrected=False)
    with pytest.raises(SignatureInvalid):
        verify_signature(printed, _parsed(case), public, case["algorithm"])


# --- signatures carried in the messages' own headers ---------------------------------------------------


@pytest.mark.parametrize(
    ("message", "labels"),
    [
        ("section-4.3-client-request", {"sig1": ("test-key-ecc-p256", "ecdsa-p256-sha256", True)}),
        (
            # The client's sig1 covers @authority example.com; after the proxy rewrote the target only
            # the proxy's own signature holds (RFC 9421 §4.3).
            "section-4.3-proxy-request",
            {
                "sig1": ("test-key-ecc-p256", "ecdsa-p256-sha256", False),
                "proxy_sig": ("test-key-rsa", "rsa-v1_5-sha256", True),
            },
        ),
        ("section-2.4-signed-request", {"sig1": ("test-key-rsa-pss", "rsa-pss-sha512", True)}),
        ("B.3-proxy-request", {"ttrp": ("test-key-ecc-p256", "ecdsa-p256-sha256", True)}),
        ("B.4-original", {"transform": ("test-key-ed25519", "ed25519", True)}),
    ],
)
def test_signatures_in_message_headers_parse_and_verify(
    vectors: dict[str, Any], message: str, labels: dict[str, tuple[str, str, bool]]
) -> None:
    view = _message(vectors, message)
    signatures = parse_signatures(view)
    assert set(signatures) == set(labels)
    for label, (kid, algorithm, valid) in labels.items():
        assert signatures[label].keyid == kid
        _, public = _keys(vectors, kid)
        if valid:
            verify_signature(view, signatures[label], public, algorithm)
        else:
            with pytest.raises(SignatureInvalid):
                verify_signature(view, signatures[label], public, algorithm)


def test_b4_transformations_keep_or_break_the_signature_as_the_rfc_says(vectors: dict[str, Any]) -> None:
    case = next(c for c in CASES if c["id"] == "B.4")
    _, public = _keys(vectors, case["keyid"])
    parsed = _parsed(case)
    outcomes = {}
    for variant in case["transformed_variants"]:
        try:
            verify_signature(_message(vectors, variant["message"]), parsed, public, case["algorithm"])
            outcomes[variant["message"]] = True
        except SignatureInvalid:
            outcomes[variant["message"]] = False
    assert outcomes == {v["message"]: v["signature_still_valid"] for v in case["transformed_variants"]}
    assert set(outcomes.values()) == {True, False}


# --- component examples (RFC 9421 §2.1, §2.2) ----------------------------------------------------------


def _fields(fragment: str) -> list[tuple[str, str]]:
    """Header lines of an RFC example; an indented line is an obs-fold continuation (CRLF + space)."""
    pairs: list[tuple[str, str]] = []
    for line in fragment.split("\n"):
        if line[:1] in (" ", "\t"):
            name, value = pairs[-1]
            pairs[-1] = (name, value + "\r\n" + line)
            continue
        name, _, value = line.partition(":")
        pairs.append((name, value))
    return pairs


def _line(message: HttpMessage, identifier: str, **kw: Any) -> str:
    cid = ComponentId.parse(identifier)
    return f"{cid.text}: {component_value(message, cid, **kw)}"


def _request(text: str, scheme: str = "https") -> HttpMessage:
    request_line, _, rest = text.partition("\n")
    method, target, _ = request_line.split(" ")
    headers = _fields(rest) if rest else []
    host = next(v.strip() for n, v in headers if n.lower() == "host")
    return HttpMessage(method=method, url=f"{scheme}://{host}{target}", headers=headers)


def test_http_field_canonicalisation(vectors: dict[str, Any]) -> None:
    example = vectors["component_examples"]["http_fields"]
    message = HttpMessage(headers=_fields(example["message_fragment"]))
    expected = example["expected_lines"].split("\n")
    names = [line.split('"')[1] for line in expected]
    assert [_line(message, name) for name in names] == expected
    empty = HttpMessage(headers=_fields(example["empty_header"]["field"]))
    assert _line(empty, "x-empty-header") == example["empty_header"]["expected_line"]


def test_sf_key_and_bs_parameters(vectors: dict[str, Any]) -> None:
    examples = vectors["component_examples"]
    sf_message = HttpMessage(headers=_fields(examples["sf"]["field"]))
    assert _line(sf_message, "example-dict") == examples["sf"]["without_sf"]
    assert (
        _line(sf_message, '"example-dict";sf', structured_fields={"example-dict": "dictionary"})
        == examples["sf"]["with_sf"]
    )
    with pytest.raises(ComponentError):  # no known structured type: refuse rather than guess
        _line(sf_message, '"example-dict";sf')

    key_message = HttpMessage(headers=_fields(examples["key"]["field"]))
    for expected in examples["key"]["expected_lines"].split("\n"):
        identifier = expected.rsplit(": ", 1)[0]
        assert _line(key_message, identifier) == expected
    with pytest.raises(ComponentError):
        _line(key_message, '"example-dict";key="zz"')

    bs = examples["bs"]
    two = HttpMessage(headers=_fields(bs["two_lines"]))
    one = HttpMessage(headers=_fields(bs["one_line"]))
    assert _line(two, "example-header") == bs["without_bs"] == _line(one, "example-header")
    assert _line(two, '"example-header";bs') == bs["with_bs_two_lines"]
    assert _line(one, '"example-header";bs') == bs["with_bs_one_line"]


def test_query_and_query_param(vectors: dict[str, Any]) -> None:
    examples = vectors["component_examples"]
    qp = examples["query_param"]
    for request, expected_lines in (
        (qp["request"], qp["expected_lines"]),
        (qp["request2"], qp["expected_lines2"]),
    ):
        message = _request(request)
        for expected in expected_lines.split("\n"):
            assert _line(message, expected.rsplit(": ", 1)[0]) == expected
    with pytest.raises(ComponentError):
        _line(_request(qp["request"]), '"@query-param";name="absent"')
    with pytest.raises(ComponentError):  # RFC 9421 §2.2.8: a repeated name cannot be covered
        _line(HttpMessage(method="GET", url="https://e.example/p?a=1&a=2"), '"@query-param";name="a"')

    for example in examples["query"]:
        request_line = example["request_line"]
        if request_line == "(no query)":
            message = HttpMessage(method="GET", url="https://www.example.com/path")
        else:
            method, target, _ = request_line.split(" ")
            message = HttpMessage(method=method, url=f"https://www.example.com{target}")
        assert _line(message, "@query") == example["expected"]


def test_derived_components(vectors: dict[str, Any]) -> None:
    derived = vectors["component_examples"]["derived_examples"]
    https = _request(derived["request"], "https")
    http = _request(derived["request"], "http")
    assert _line(https, "@method") == derived["@method"]
    assert _line(https, "@target-uri") == derived["@target-uri (over https)"]
    assert _line(https, "@authority") == derived["@authority"]
    assert _line(http, "@scheme") == derived["@scheme (over plain http)"]
    assert _line(https, "@request-target") == derived["@request-target"]
    assert (
        _line(_request("GET /path?param=value HTTP/1.1\nHost: www.example.com"), "@path")
        == derived["@path (GET /path?param=value)"]
    )
    forms = derived["request-target other forms"]
    absolute = "https://www.example.com/path?param=value"
    absolute_form = HttpMessage(method="GET", url=absolute, request_target=absolute)
    assert (
        component_value(absolute_form, ComponentId.of("@request-target"))
        == forms["absolute-form GET https://www.example.com/path?param=value"]
    )
    connect = HttpMessage(method="CONNECT", url="http://www.example.com:80")
    assert component_value(connect, ComponentId.of("@request-target")) == forms["CONNECT www.example.com:80"]
    options = HttpMessage(method="OPTIONS", url="https://www.example.com", request_target="*")
    assert component_value(options, ComponentId.of("@request-target")) == forms["OPTIONS *"]
    # Default ports are dropped from @authority, others kept; the host is lower-cased.
    assert (
        component_value(
            HttpMessage(method="GET", url="https://EXAMPLE.com:443/"), ComponentId.of("@authority")
        )
        == "example.com"
    )
    assert (
        component_value(
            HttpMessage(method="GET", url="http://example.com:8080/"), ComponentId.of("@authority")
        )
        == "example.com:8080"
    )


def test_signature_params_serialisation(vectors: dict[str, Any]) -> None:
    expected = vectors["component_examples"]["signature_params_example"]
    components = [ComponentId.of(name) for name in ("@target-uri", "@authority", "date", "cache-control")]
    params = {
        "keyid": "test-key-rsa-pss",
        "alg": "rsa-pss-sha512",
        "created": 1618884475,
        "expires": 1618884775,
    }
    assert serialize_signature_params(components, params) == expected


def test_status_and_req_rules() -> None:
    request = HttpMessage(method="POST", url="https://example.com/foo")
    response = HttpMessage(status=200, headers=[("Content-Type", "application/json")], request=request)
    assert component_value(response, ComponentId.of("@status")) == "200"
    assert component_value(response, ComponentId.parse('"@method";req')) == "POST"
    with pytest.raises(ComponentError):  # derived request components need ;req in a response
        component_value(response, ComponentId.of("@method"))
    with pytest.raises(ComponentError):  # @status is not a request component
        component_value(request, ComponentId.of("@status"))
    with pytest.raises(ComponentError):  # ;req only in responses
        component_value(request, ComponentId.parse('"@method";req'))
