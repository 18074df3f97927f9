"""The server hashes a request body once: the ECT's ``inp_hash`` is checked against the SHA-256 the
Content-Digest check computed of the same body — and a body that does not match is still refused."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx
import pytest

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.httpsig import RequestSigner, RequestVerifier
from mcpclient_auth.keys import Identity
from mcpclient_auth.server import IncomingHeaders, IncomingRequest, McpRequestVerifier, Rejection
from mcpclient_auth.server import verify as server_verify
from tests.support.trust import trust_for

URL = "https://hr.example/mcp"
USER = Identity.generate("ES256", name="maria")
AGENT = Identity.generate("ES256", name="hr-agent")
TRUST = trust_for(issuers=[USER], agents=[AGENT])
BODY = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {"q": "x"}}}
).encode()


def signed(*, ect_body: bytes = BODY, digest: str | None = None) -> IncomingRequest:
    mandate = Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=["mcp.search"])
    ect = ExecutionContextToken.mint(
        AGENT, audience=[URL], exec_act="mcp.search", pred=[mandate.jti], wid=mandate.jti,
        inp_hash=sha256_b64url(ect_body),
    )  # fmt: skip
    headers = {"content-type": "application/json", "act-mandate": mandate.token, "execution-context": ect.token}
    request = httpx.Request("POST", URL, content=BODY, headers=headers)
    RequestSigner(AGENT).sign(request)
    if digest is not None:  # a field the signer did not write: re-signed over it below
        request.headers["content-digest"] = digest
        RequestSigner(AGENT).sign(request)
    return IncomingRequest("POST", URL, IncomingHeaders(request.headers.raw), request.content)


def test_the_signature_check_reports_the_sha256_it_verified() -> None:
    request = signed()
    verified = RequestVerifier(TRUST, audience=URL).verify(request.headers.http_message("POST", URL, BODY))
    assert verified.body_sha256 == hashlib.sha256(BODY).digest()


def test_the_body_is_hashed_once_and_a_valid_call_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[Any] = []
    real = server_verify.sha256_b64url
    monkeypatch.setattr(server_verify, "sha256_b64url", lambda data: hashed.append(data) or real(data))
    outcome = McpRequestVerifier(TRUST, audience=URL).check(signed())
    assert not isinstance(outcome, Rejection) and outcome.ect is not None
    assert hashed == []  # the digest check's SHA-256 was used for inp_hash


def test_an_ect_for_another_body_is_still_refused() -> None:
    outcome = McpRequestVerifier(TRUST, audience=URL).check(signed(ect_body=BODY + b" "))
    assert isinstance(outcome, Rejection) and outcome.error.code == "inp_hash_mismatch"


def test_a_digest_field_with_more_algorithms_still_binds_the_body() -> None:
    both = (
        f"sha-512=:{base64.b64encode(hashlib.sha512(BODY).digest()).decode()}:, "
        f"sha-256=:{base64.b64encode(hashlib.sha256(BODY).digest()).decode()}:"
    )
    outcome = McpRequestVerifier(TRUST, audience=URL).check(signed(digest=both))
    assert not isinstance(outcome, Rejection)
    refused = McpRequestVerifier(TRUST, audience=URL).check(signed(digest=both, ect_body=b"{}"))
    assert isinstance(refused, Rejection) and refused.error.code == "inp_hash_mismatch"
