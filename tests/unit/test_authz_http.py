"""The token-request helper: strict response parsing, retry classification, client/endpoint checks.

Transport faults that a real server cannot produce on demand (a connection reset mid-read, a broken
protocol) are injected with ``httpx.MockTransport``; everything else is tested against a real
endpoint in tests/e2e/test_token_endpoint.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from mcpclient_auth.authz import SIGNING_HOOK_MARKER, AccessToken, ClientSecretPost, TokenExchange
from mcpclient_auth.authz._token_request import (
    MAX_RESPONSE_BYTES,
    check_endpoint,
    check_idp_client,
    parse_token_response,
    request_token,
)
from mcpclient_auth.errors import (
    ConfigurationError,
    InvalidTokenResponse,
    TokenExchangeRejected,
    TokenExchangeUnavailable,
)

SECRET = "SECRET-SENTINEL-42"
SUBJECT = "SUBJ-SENTINEL-17"
GOOD = {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "scope": "b a"}


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# --- parsing ---------------------------------------------------------------------------------------


def test_parse_a_good_response() -> None:
    token = parse_token_response(body(GOOD), now=100.0, requested_scopes=("x",))
    assert token == AccessToken("at-1", "Bearer", 3700.0, frozenset({"a", "b"}), None)


def test_token_type_is_case_insensitive_and_n_a_is_allowed() -> None:
    assert parse_token_response(body({**GOOD, "token_type": "bearer"}), now=0).token_type == "Bearer"
    assert parse_token_response(body({**GOOD, "token_type": "N_A"}), now=0).token_type == "N_A"


def test_absent_optional_members() -> None:
    token = parse_token_response(body({"access_token": "a", "token_type": "Bearer"}), now=0, requested_scopes=("r",))
    assert token.expires_at is None
    assert token.scopes == frozenset({"r"})  # RFC 6749 §5.1: absent scope = the requested scope
    assert token.issued_token_type is None


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({**GOOD, "access_token": ""}, "access_token"),
        ({**GOOD, "access_token": 5}, "access_token"),
        ({**GOOD, "access_token": "a\r\nInjected: 1"}, "access_token"),
        ({**GOOD, "token_type": None}, "token_type"),
        ({**GOOD, "token_type": "MAC"}, "token_type"),
        ({**GOOD, "expires_in": True}, "expires_in"),
        ({**GOOD, "expires_in": 3600.5}, "expires_in"),
        ({**GOOD, "expires_in": "3600"}, "expires_in"),
        ({**GOOD, "scope": 'a "b"'}, "scope"),
        ({**GOOD, "issued_token_type": 7}, "issued_token_type"),
    ],
)
def test_strict_member_checks(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidTokenResponse) as caught:
        parse_token_response(body(doc), now=0)
    assert caught.value.details["field"] == field


def test_issued_token_type_rules() -> None:
    with pytest.raises(InvalidTokenResponse):
        parse_token_response(body(GOOD), now=0, require_issued_token_type=True)
    with pytest.raises(InvalidTokenResponse):
        parse_token_response(body({**GOOD, "issued_token_type": "urn:x:a"}), now=0, expected_issued_token_type="urn:x:b")
    token = parse_token_response(body({**GOOD, "issued_token_type": "urn:x:b"}), now=0, expected_issued_token_type="urn:x:b")
    assert token.issued_token_type == "urn:x:b"


@pytest.mark.parametrize(
    "raw", [b"", b"null", b"[]", b'"at"', b"{", b'{"access_token":"a","access_token":"b","token_type":"Bearer"}', b"[" * 100_000]
)
def test_not_a_token_object(raw: bytes) -> None:
    with pytest.raises(InvalidTokenResponse):
        parse_token_response(raw, now=0)


def test_the_body_never_reaches_the_message() -> None:
    raw = body({"access_token": f"bad token {SUBJECT}", "token_type": SECRET})
    with pytest.raises(InvalidTokenResponse) as caught:
        parse_token_response(raw, now=0)
    text = str(caught.value) + repr(caught.value.to_dict())
    assert SUBJECT not in text and SECRET not in text


# --- retry classification with injected transport faults --------------------------------------------


class Script:
    """A MockTransport handler that plays a list of outcomes (exceptions or responses) in order."""

    def __init__(self, *outcomes: Exception | httpx.Response) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def run(script: Script) -> AccessToken:
    async with httpx.AsyncClient(transport=httpx.MockTransport(script)) as client:
        return await request_token(
            client,
            "https://idp.example/token",
            {"grant_type": "g", "subject_token": SUBJECT},
            ClientSecretPost("agent", SECRET),
            now=lambda: 0.0,
            retry_backoff=0.0,
        )


@pytest.mark.parametrize(
    "fault",
    [
        httpx.ReadError("connection reset"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.WriteError("broken pipe"),
        httpx.ReadTimeout("slow"),
        httpx.ConnectTimeout("slow"),
    ],
)
async def test_transport_faults_are_retried_once(fault: Exception) -> None:
    script = Script(fault, httpx.Response(200, json=GOOD))
    assert (await run(script)).token == "at-1"
    assert len(script.requests) == 2


async def test_transport_faults_twice_are_unavailable() -> None:
    script = Script(httpx.ReadError(f"reset while sending {SUBJECT}"), httpx.ReadError("reset"))
    with pytest.raises(TokenExchangeUnavailable) as caught:
        await run(script)
    assert caught.value.retryable is True and caught.value.details["cause"] == "ReadError"
    assert SUBJECT not in str(caught.value) and caught.value.__cause__ is None


async def test_a_non_transient_transport_error_fails_at_once() -> None:
    script = Script(httpx.UnsupportedProtocol("nope"), httpx.Response(200, json=GOOD))
    with pytest.raises(TokenExchangeUnavailable) as caught:
        await run(script)
    assert caught.value.retryable is False
    assert len(script.requests) == 1


async def test_each_attempt_reauthenticates() -> None:
    script = Script(httpx.Response(503), httpx.Response(200, json=GOOD))
    await run(script)
    assert [r.content for r in script.requests] == [script.requests[0].content] * 2
    assert b"client_secret=" in script.requests[0].content


async def test_a_403_is_rejected_not_retried() -> None:
    script = Script(httpx.Response(403, json={"error": "access_denied", "error_description": SUBJECT}))
    with pytest.raises(TokenExchangeRejected) as caught:
        await run(script)
    assert caught.value.details["error"] == "access_denied"
    assert SUBJECT not in str(caught.value)


async def test_an_oversized_response_is_refused() -> None:
    script = Script(httpx.Response(200, content=b" " * (MAX_RESPONSE_BYTES + 1)))
    with pytest.raises(InvalidTokenResponse):
        await run(script)


# --- configuration checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example.com/token",
        "ftp://idp.example.com/token",
        "https://user:pw@idp.example.com/token",
        "https://idp.example.com/token#frag",
        "/token",
        "",
        "https://[::1/token",
    ],
)
def test_unsafe_endpoints_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        check_endpoint(url)


def test_loopback_http_is_allowed() -> None:
    for url in ("http://127.0.0.1:8080/token", "http://localhost/token", "http://[::1]:9/token"):
        assert check_endpoint(url) == url


async def test_a_client_with_our_signing_hooks_is_refused() -> None:
    async def sign(request: httpx.Request) -> None:
        return None

    setattr(sign, SIGNING_HOOK_MARKER, True)
    async with httpx.AsyncClient(event_hooks={"request": [sign]}) as client:
        with pytest.raises(ConfigurationError):
            check_idp_client(client)
        with pytest.raises(ConfigurationError):
            TokenExchange("https://idp.example/token", client_id="c", client_secret="s", http_client=client)
    async with httpx.AsyncClient() as plain:
        assert check_idp_client(plain) is plain
