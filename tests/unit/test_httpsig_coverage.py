"""The ``mcp`` profile covers the headers a server acts on when they are present: SEP-2243's
``Mcp-Method`` / ``Mcp-Name`` / ``Mcp-Param-*``, SSE resumption's ``Last-Event-ID`` and RFC 9449's
``DPoP``; a verifier refuses any of them uncovered (``component_uncovered``)."""

from __future__ import annotations

import json

import httpx
import pytest

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import (
    ConfigurationError,
    SignatureComponentUncovered,
    SignatureInvalid,
    SignaturePolicyError,
)
from mcpclient_auth.httpsig import RequestSigner, RequestVerifier
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.server import IncomingHeaders, IncomingRequest, McpRequestVerifier, Rejection
from tests.support.trust import trust_for

URL = "https://mcp.example.com/mcp"
NOW = 1_800_000_000
BODY = json.dumps(
    {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "weather", "arguments": {}}}
).encode()
#: What a 2026-07-28 client sends on a tool call with x-mcp-header arguments, plus a DPoP proof.
PRESENT = {
    "Content-Type": "application/json",
    "Authorization": "DPoP user-access-token",
    "DPoP": "proof.jwt.sig",
    "Mcp-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "weather",
    "Mcp-Param-Region": "eu-west",
    "Mcp-Param-Tenant": "acme",
}
#: A resumed SSE stream: GET with Last-Event-ID.
RESUME = {"Accept": "text/event-stream", "Last-Event-ID": "stream-7:3", "Mcp-Session-Id": "s1"}


@pytest.fixture(params=["ES256", "EdDSA"])
def agent(request: pytest.FixtureRequest) -> Identity:
    return Identity.generate(request.param, name="agent")


def _post(**headers: str) -> httpx.Request:
    return httpx.Request("POST", URL, headers={**PRESENT, **headers}, content=BODY)


def _get(**headers: str) -> httpx.Request:
    return httpx.Request("GET", URL, headers={**RESUME, **headers})


def _verify(agent: Identity, request: httpx.Request) -> tuple[str, ...]:
    return RequestVerifier(TrustStore([agent])).verify(request, now=NOW + 1).covered


def test_every_present_header_is_covered_in_profile_order(agent: Identity) -> None:
    request = _post()
    result = RequestSigner(agent).sign(request, created=NOW)
    assert result.covered == (
        "@method",
        "@target-uri",
        "content-type",
        "content-digest",
        "authorization",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "dpop",
        "mcp-param-region",  # every Mcp-Param-* present, lower case, sorted by name
        "mcp-param-tenant",
    )
    assert _verify(agent, request) == result.covered
    resumed = _get()
    covered = RequestSigner(agent).sign(resumed, created=NOW).covered
    assert covered == ("@method", "@target-uri", "mcp-session-id", "last-event-id")
    assert _verify(agent, resumed) == covered


@pytest.mark.parametrize(
    ("make", "header"),
    [
        (_post, "Mcp-Param-Region"),
        (_post, "Mcp-Param-Tenant"),
        (_post, "DPoP"),
        (_post, "Mcp-Method"),
        (_post, "Mcp-Name"),
        (_get, "Last-Event-ID"),
    ],
)
def test_a_tampered_header_fails_verification(agent: Identity, make: object, header: str) -> None:
    request = make()  # type: ignore[operator]
    RequestSigner(agent).sign(request, created=NOW)
    _verify(agent, request)
    tampered = httpx.Request(
        request.method, URL, headers=request.headers.multi_items(), content=request.content
    )
    tampered.headers[header] = "us-east" if header != "Last-Event-ID" else "stream-7:0"
    with pytest.raises(SignatureInvalid):
        _verify(agent, tampered)


@pytest.mark.parametrize(
    ("make", "header"),
    [
        (_post, "Mcp-Param-Region"),
        (_post, "MCP-PARAM-Priority"),  # any case: field names are case-insensitive
        (_post, "DPoP"),
        (_get, "Last-Event-ID"),
    ],
)
def test_a_header_added_after_signing_is_refused_uncovered(
    agent: Identity, make: object, header: str
) -> None:
    request = make()  # type: ignore[operator]
    request.headers.pop(header, None)
    RequestSigner(agent).sign(request, created=NOW)
    _verify(agent, request)
    request.headers[header] = "added-later"
    with pytest.raises(SignatureComponentUncovered) as caught:
        _verify(agent, request)
    assert caught.value.code == "component_uncovered"
    assert isinstance(caught.value, SignaturePolicyError)  # callers catching the family still do
    assert "added-later" not in str(caught.value)


def test_repeated_param_lines_are_covered_as_one_combined_value(agent: Identity) -> None:
    request = httpx.Request(
        "POST", URL, headers=[("Mcp-Param-Region", "eu"), ("mcp-param-region", "us")], content=BODY
    )
    result = RequestSigner(agent).sign(request, created=NOW)
    assert result.covered.count("mcp-param-region") == 1
    assert b'\n"mcp-param-region": eu, us\n' in result.base
    _verify(agent, request)


def test_the_ect_header_cannot_be_a_param_header(agent: Identity) -> None:
    with pytest.raises(ConfigurationError):
        RequestSigner(agent, ect_header="Mcp-Param-Ect")


def test_the_server_verifier_refuses_an_uncovered_param_header_with_401() -> None:
    user, bot = Identity.generate("ES256", name="maria"), Identity.generate("EdDSA", name="bot")
    mandate = Mandate.issue(user, agent=bot, audience=URL, purpose="p", capabilities=["mcp.weather"])
    ect = ExecutionContextToken.mint(
        bot,
        audience=[URL],
        exec_act="mcp.weather",
        pred=[mandate.jti],
        wid=mandate.jti,
        inp_hash=sha256_b64url(BODY),
    )
    request = httpx.Request(
        "POST",
        URL,
        content=BODY,
        headers={
            "content-type": "application/json",
            "act-mandate": mandate.token,
            "execution-context": ect.token,
        },
    )
    RequestSigner(bot).sign(request)
    request.headers["Mcp-Param-Region"] = "eu-west"  # an intermediary adds a header the tool reads
    incoming = IncomingRequest("POST", URL, IncomingHeaders(request.headers.raw), BODY)
    outcome = McpRequestVerifier(trust_for(issuers=[user], agents=[bot]), audience=URL).check(incoming)
    assert isinstance(outcome, Rejection)
    assert (outcome.status, outcome.error.code) == (401, "component_uncovered")
