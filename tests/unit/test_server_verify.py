"""McpRequestVerifier and friends without a network: status mapping, headers, rejections."""

from __future__ import annotations

import json

import httpx
import pytest

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import (
    ActionMappingError,
    AudienceMismatch,
    CapabilityNotGranted,
    JsonRpcError,
    ReplayDetected,
    SignatureMissing,
    TokenExpired,
)
from mcpclient_auth.httpsig import RequestSigner
from mcpclient_auth.keys import Identity
from mcpclient_auth.server import (
    IncomingHeaders,
    IncomingRequest,
    McpRequestVerifier,
    Rejection,
    VerifiedRequest,
    http_status_for,
    verified_request,
)
from tests.support.trust import trust_for

URL = "https://hr.example/mcp"
USER = Identity.generate("ES256", name="maria")
AGENT = Identity.generate("EdDSA", name="hr-agent")
TRUST = trust_for(issuers=[USER], agents=[AGENT])


def incoming(request: httpx.Request) -> IncomingRequest:
    return IncomingRequest(
        request.method, str(request.url), IncomingHeaders(request.headers.raw), request.content
    )


def signed_call(tool: str, caps: list[str], *, session_call: bool = False) -> tuple[IncomingRequest, Mandate]:
    mandate = Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=caps)
    if session_call:
        message: dict[str, object] = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        action = "mcp.rpc.tools.list"
    else:
        message = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": tool, "arguments": {}},
        }
        action = f"mcp.{tool}"
    body = json.dumps(message).encode()
    ect = ExecutionContextToken.mint(
        AGENT,
        audience=[URL],
        exec_act=action,
        pred=[mandate.jti],
        wid=mandate.jti,
        inp_hash=sha256_b64url(body),
    )
    request = httpx.Request(
        "POST",
        URL,
        content=body,
        headers={
            "content-type": "application/json",
            "act-mandate": mandate.token,
            "execution-context": ect.token,
        },
    )
    RequestSigner(AGENT).sign(request)
    return incoming(request), mandate


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (SignatureMissing("x"), 401),
        (TokenExpired("x"), 401),
        (AudienceMismatch("x"), 401),
        (ReplayDetected("x"), 401),
        (CapabilityNotGranted("x"), 403),
        (ActionMappingError("x"), 403),
        (JsonRpcError("x"), 400),
    ],
)
def test_status_for_each_failure_kind(error: Exception, status: int) -> None:
    assert http_status_for(error) == status  # type: ignore[arg-type]


def test_verified_request_exposes_principal_agent_and_call() -> None:
    request, mandate = signed_call("search", ["mcp.search"])
    verified = McpRequestVerifier(TRUST, audience=URL).verify(request)
    assert isinstance(verified, VerifiedRequest)
    assert (verified.principal, verified.agent, verified.action) == ("maria", "hr-agent", "mcp.search")
    assert verified.mandate is not None and verified.mandate.jti == mandate.jti
    assert verified.ect is not None and verified.ect.exec_act == "mcp.search"
    assert verified.call is not None and verified.call.tool == "search"


def test_check_returns_a_rejection_that_remembers_the_verified_mandate() -> None:
    request, mandate = signed_call("get_employee_salary", ["mcp.search"])
    outcome = McpRequestVerifier(TRUST, audience=URL).check(request)
    assert isinstance(outcome, Rejection)
    assert isinstance(outcome.error, CapabilityNotGranted)
    assert outcome.status == 403
    assert outcome.mandate is not None and outcome.mandate.jti == mandate.jti
    assert outcome.action == "mcp.get_employee_salary"


def test_a_rejection_before_the_mandate_carries_no_mandate() -> None:
    request, _ = signed_call("search", ["mcp.search"])
    unsigned = IncomingRequest(
        request.method,
        request.url,
        IncomingHeaders(
            [(k, v) for k, v in request.headers.items() if k not in ("signature", "signature-input")]
        ),
        request.content,
    )
    outcome = McpRequestVerifier(TRUST, audience=URL).check(unsigned)
    assert isinstance(outcome, Rejection) and outcome.status == 401 and outcome.mandate is None


def test_strict_policy_needs_a_cap_for_session_calls_too() -> None:
    from mcpclient_auth.policy import McpActionPolicy

    request, _ = signed_call("", ["mcp.search"], session_call=True)
    assert McpRequestVerifier(TRUST, audience=URL).check(request).__class__ is VerifiedRequest
    request, _ = signed_call("", ["mcp.search"], session_call=True)
    strict = McpRequestVerifier(TRUST, audience=URL, policy=McpActionPolicy(strict=True))
    with pytest.raises(CapabilityNotGranted):
        strict.verify(request)


def test_incoming_headers_are_case_insensitive_joined_and_never_shown() -> None:
    headers = IncomingHeaders([(b"Accept", b"a"), (b"accept", b"b"), ("ACT-Mandate", "secret.token.value")])
    assert headers["ACCEPT"] == "a, b"
    assert "act-mandate" in headers and "Act-Mandate" in headers and 1 not in headers
    assert len(headers) == 2 and sorted(headers) == ["accept", "act-mandate"]
    assert "secret" not in repr(headers)


def test_verified_request_is_none_without_verification() -> None:
    assert verified_request({"type": "http"}) is None
    assert verified_request({"state": {"mcpclient_auth": "not a VerifiedRequest"}}) is None


def test_a_signed_post_that_is_not_json_rpc_is_400() -> None:
    mandate = Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=["mcp.search"])
    request = httpx.Request(
        "POST", URL, content=b"hello", headers={"content-type": "text/plain", "act-mandate": mandate.token}
    )
    RequestSigner(AGENT).sign(request)
    outcome = McpRequestVerifier(TRUST, audience=URL).check(incoming(request))
    assert (
        isinstance(outcome, Rejection) and isinstance(outcome.error, JsonRpcError) and outcome.status == 400
    )


def test_the_one_pass_message_reads_the_headers_exactly_as_the_generic_adapter() -> None:
    """Issue #16: the verifier builds its RFC 9421 view from IncomingHeaders' single pass; it must
    see what HttpMessage.of sees (repeated lines joined, names case-insensitive, wire order)."""
    from mcpclient_auth._rfc9421 import HttpMessage

    pairs = [
        (b"Content-Type", b"application/json"),
        (b"X-Repeat", b"a"),
        (b"ACT-Mandate", b"m.n.o"),
        (b"x-repeat", b" b "),
        (b"Signature-Input", b'sig=("@method");created=1'),
    ]
    headers = IncomingHeaders(pairs)
    request = IncomingRequest("POST", URL, headers, b"{}")
    fast = headers.http_message("POST", URL, b"{}")
    generic = HttpMessage.of(request, body=b"{}")
    assert fast.field_names() == generic.field_names()
    for name in [*generic.field_names(), "Content-Type", "absent"]:
        assert fast.field_lines(name) == generic.field_lines(name)
        assert fast.header(name) == generic.header(name)
    assert (fast.method, fast.url, fast.body) == (generic.method, generic.url, generic.body)
    # and a signed request verifies the same through both
    signed, _ = signed_call("search", ["mcp.search"])
    verifier = McpRequestVerifier(TRUST, audience=URL)
    assert not isinstance(verifier.check(signed), Rejection)
