"""Regressions for the third-round review of DPoP, telemetry and the IdP client (each fails without its fix)."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from mcpclient_auth import _telemetry
from mcpclient_auth._encoding import b64url_encode
from mcpclient_auth.authz._token_request import check_idp_client
from mcpclient_auth.authz.dpop import DPoP, verify_proof
from mcpclient_auth.errors import ConfigurationError, DPoPProofInvalid, ReplayDetected
from mcpclient_auth.replay import MemoryReplayStore

URL = "https://mcp.example.com/mcp"
TOKEN = "tok-123"
NESTED = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.fixture
def tracing() -> object:
    provider = TracerProvider()
    _telemetry.use_providers(provider, None)
    try:
        yield provider
    finally:
        _telemetry.use_providers(None, None)
        provider.shutdown()


def test_an_unverified_deeply_nested_body_opens_a_server_span_without_raising(tracing: object) -> None:
    # Was: json.loads raised RecursionError inside the middleware, so an unsigned request got a 500.
    with _telemetry.server_span("POST", NESTED, {}):
        pass


def test_the_server_span_carrier_ignores_a_body_that_is_not_strict_json() -> None:
    assert _telemetry._carrier(NESTED, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) == {
        "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    }
    assert _telemetry._carrier(b'{"params":{"_meta":{"traceparent":NaN}}}', {}) == {}


@pytest.mark.parametrize(
    "arguments",
    [b'{"x":1e400}', b'{"x":"\\ud800"}'],
    ids=["overflowing float", "lone surrogate"],
)
def test_trace_context_injection_leaves_a_body_it_cannot_round_trip_unchanged(
    tracing: TracerProvider, arguments: bytes
) -> None:
    # Was: 1e400 went out as Infinity (not JSON, refused by the server) and a lone surrogate raised
    # UnicodeEncodeError out of the request hook.
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s","arguments":' + arguments + b"}}"
    )
    request = httpx.Request("POST", URL, content=body)
    span = tracing.get_tracer("t").start_span("x")
    try:
        assert _telemetry._inject(span, request, body) == body
    finally:
        span.end()


def test_trace_context_injection_still_stamps_a_plain_body(tracing: TracerProvider) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"s","arguments":{"x":1}}}'
    request = httpx.Request("POST", URL, content=body)
    span = tracing.get_tracer("t").start_span("x")
    try:
        sent = _telemetry._inject(span, request, body)
    finally:
        span.end()
    assert json.loads(sent)["params"]["_meta"]["traceparent"].startswith("00-")


def test_a_non_ascii_access_token_is_a_typed_refusal() -> None:
    dpop = DPoP()
    proof = dpop.proof("POST", URL, access_token=TOKEN).token
    with pytest.raises(DPoPProofInvalid):
        verify_proof(proof, method="POST", url=URL, access_token="t\xf6k", jkt=dpop.thumbprint)


def test_a_non_ascii_ath_is_a_typed_refusal() -> None:
    dpop = DPoP()
    claims = {
        "jti": secrets.token_urlsafe(16),
        "htm": "POST",
        "htu": URL,
        "iat": int(time.time()),
        "ath": "\u00e9",
    }
    signing_input = dpop._header + b64url_encode(json.dumps(claims).encode()).encode()
    proof = (signing_input + b"." + b64url_encode(dpop.key.sign(signing_input)).encode()).decode()
    with pytest.raises(DPoPProofInvalid):
        verify_proof(proof, method="POST", url=URL, access_token=TOKEN, jkt=dpop.thumbprint)


def test_a_proof_accepted_at_the_very_end_of_its_window_is_remembered() -> None:
    dpop, store, iat = DPoP(), MemoryReplayStore(), 1_900_000_000
    proof = dpop.proof("POST", URL, access_token=TOKEN, now=iat).token
    kw = {"method": "POST", "url": URL, "access_token": TOKEN, "jkt": dpop.thumbprint, "replay": store}
    verify_proof(proof, now=float(iat + 60), **kw)
    with pytest.raises(ReplayDetected):
        verify_proof(proof, now=float(iat + 60), **kw)


async def test_an_idp_client_that_follows_redirects_is_refused() -> None:
    async with httpx.AsyncClient(follow_redirects=True) as client:
        with pytest.raises(ConfigurationError, match="follows redirects"):
            check_idp_client(client)
    async with httpx.AsyncClient() as client:
        assert check_idp_client(client) is client


async def test_a_signed_single_value_field_split_over_two_lines_is_refused(tmp_path: Path) -> None:
    # RFC 9421 signs repeated lines joined with ", ": a split Mcp-Param-Region keeps the signature valid
    # while an application reading one line sees only the first part. The verifier refuses the shape.
    from mcpclient_auth._calls import Refusal, admit, authorization, prepare
    from mcpclient_auth.errors import SignaturePolicyError
    from mcpclient_auth.server.verify import IncomingHeaders, IncomingRequest
    from tests.support.calls_pipeline import URL as MCP_URL
    from tests.support.calls_pipeline import make_run, tool_call, verifier

    run = make_run(tmp_path)
    body = tool_call(1)
    request = httpx.Request(
        "POST",
        MCP_URL,
        content=body,
        headers={"content-type": "application/json", "mcp-param-region": "eu-west, us-east"},
    )
    endpoint = run.endpoint_set.endpoints[0]
    admitted = admit(run, "POST", body, "application/json")
    assert not isinstance(admitted, Refusal)
    header = await authorization(run, admitted.call, endpoint, None)
    assert not isinstance(header, Refusal)
    prepare(run, request, body, endpoint, admitted, header)
    assert "mcp-param-region" in request.headers["signature-input"]
    pairs = [(k, v) for k, v in request.headers.items() if k != "mcp-param-region"]
    server = verifier()

    def view(*region: tuple[str, str]) -> IncomingRequest:
        return IncomingRequest("POST", MCP_URL, IncomingHeaders([*pairs, *region]), body)

    server.verify(view(("mcp-param-region", "eu-west, us-east")))  # one line, as signed: accepted
    split = view(("mcp-param-region", "eu-west"), ("mcp-param-region", "us-east"))
    with pytest.raises(SignaturePolicyError) as caught:
        server.verify(split)
    assert caught.value.code == "field_repeated"
    run.close()
