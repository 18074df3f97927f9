"""RFC 9530 digest values (tests/vectors/rfc9530_vectors.json) against mcpclient_auth.digest."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from mcpclient_auth.digest import content_digest, parse_digest_field, verify_content_digest
from mcpclient_auth.errors import DigestError

VECTORS_FILE = "rfc9530_vectors.json"


def _load_vectors() -> list[dict[str, Any]]:
    from tests.conftest import VECTORS

    return json.loads((VECTORS / VECTORS_FILE).read_text("utf-8"))["vectors"]


VECTORS = _load_vectors()


@pytest.fixture(scope="module")
def document(vectors_dir: Path) -> dict[str, Any]:
    return json.loads((vectors_dir / VECTORS_FILE).read_text("utf-8"))


def _input(vector: dict[str, Any]) -> bytes:
    data = bytes.fromhex(vector["input_hex"])
    assert len(data) == vector["input_len"]
    return data


def test_the_vector_file_is_the_expected_one(document: dict[str, Any]) -> None:
    assert document["source"]["active_algorithms"] == ["sha-256", "sha-512"]
    assert len(document["vectors"]) == len(VECTORS) >= 10
    assert all(entry["recomputed_match"] for entry in document["verification"])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_digest_values_reproduce(vector: dict[str, Any]) -> None:
    body = _input(vector)
    assert content_digest(body) == f"sha-256=:{vector['sha-256']}:"
    assert content_digest(body, "sha-512") == f"sha-512=:{vector['sha-512']}:"
    both = f"sha-256=:{vector['sha-256']}:, sha-512=:{vector['sha-512']}:"
    assert parse_digest_field(both) == {
        "sha-256": base64.b64decode(vector["sha-256"]),
        "sha-512": base64.b64decode(vector["sha-512"]),
    }
    verify_content_digest(both, body)
    verify_content_digest(f"sha-512=:{vector['sha-512']}:", body, required=("sha-512",))
    with pytest.raises(DigestError):
        verify_content_digest(both, body + b" ")


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if "content_digest_header_sha256" in v], ids=lambda v: v["name"]
)
def test_printed_content_digest_fields_verify(vector: dict[str, Any]) -> None:
    body = _input(vector)
    for key in ("content_digest_header_sha256", "content_digest_header_sha512"):
        value = vector[key].split(": ", 1)[1]
        verify_content_digest(value, body, required=("sha-256", "sha-512"))


def test_deprecated_algorithms_are_ignored_but_never_enough() -> None:
    vector = next(v for v in VECTORS if "all_algorithms" in v)
    body = _input(vector)
    members = ", ".join(f"{alg}=:{value}:" for alg, value in vector["all_algorithms"].items())
    verify_content_digest(members, body)  # md5, sha, crc32c ... are ignored beside sha-256
    deprecated_only = ", ".join(
        f"{alg}=:{value}:"
        for alg, value in vector["all_algorithms"].items()
        if alg not in ("sha-256", "sha-512")
    )
    with pytest.raises(DigestError):
        verify_content_digest(deprecated_only, body)
    # sha-512 alone is checked but is not the algorithm this verifier requires.
    with pytest.raises(DigestError):
        verify_content_digest(f"sha-512=:{vector['sha-512']}:", body)


def test_section2_pair_of_digests_of_different_bytes_is_refused() -> None:
    # RFC 9530 §2 prints sha-256 of the brotli bytes beside sha-512 of the plain JSON: not one body.
    plain = next(v for v in VECTORS if v["name"] == "hello-world-with-lf")
    brotli = next(v for v in VECTORS if v["name"] == "brotli-hello-world")
    mixed = f"sha-256=:{brotli['sha-256']}:, sha-512=:{plain['sha-512']}:"
    with pytest.raises(DigestError):
        verify_content_digest(mixed, _input(plain))
    with pytest.raises(DigestError):
        verify_content_digest(mixed, _input(brotli))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha-256",  # a bare key is boolean true, not bytes
        "sha-256=abc",
        'sha-256="X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="',
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:;p=1",
        "sha-256=:AAAA:",  # wrong length for sha-256
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
        "SHA-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:,",
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=: trailing",
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:\u00e9",
    ],
)
def test_garbage_is_a_digest_error(value: str) -> None:
    with pytest.raises(DigestError):
        verify_content_digest(value, b'{"hello": "world"}')


def test_missing_field_and_bad_algorithm_names() -> None:
    with pytest.raises(DigestError):
        verify_content_digest(None, b"")
    with pytest.raises(DigestError):
        content_digest(b"", "md5")
    with pytest.raises(DigestError):
        verify_content_digest(content_digest(b""), b"", required=("md5",))
