"""The pre-auth gate's parse of ``Signature-Input`` is handed to the signature check (one parse per
request), and is used only for the exact value it was made from: the verdict never changes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth import _structured_fields
from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth._rfc9421 import ParsedField, parse_signature_fields
from mcpclient_auth.act import Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import McpClientAuthError
from mcpclient_auth.httpsig import RequestSigner
from mcpclient_auth.keys import Identity
from mcpclient_auth.server import IncomingHeaders, IncomingRequest, McpAuthMiddleware, Rejection
from tests.support.trust import trust_for

URL = "https://hr.example/mcp"
USER = Identity.generate("ES256", name="maria")
AGENT = Identity.generate("ES256", name="hr-agent")
OTHER = Identity.generate("ES256", name="other-agent")
TRUST = trust_for(issuers=[USER], agents=[AGENT, OTHER])

_INPUTS = [
    'sig1=("@method" "@target-uri");created=1;expires=2;nonce="n";keyid="k"',
    ' sig1=("@method" "@target-uri");created=1;expires=2;nonce="n";keyid="k"',
    'sig1=("@method" "@target-uri");created=1;expires=2;nonce="n";keyid="k" ',
    'sig1=("@method"  "@target-uri");created=1;expires=2;nonce="n";keyid="k"',
    'sig1=("@method" "@target-uri");created=1;expires=2;nonce="n";keyid="other"',
    'sig1=("@method" "@target-uri");created=1;expires=2;nonce="n";keyid="k", sig2=("@method");keyid="k"',
    'sig1=("@method" "@method");created=1;keyid="k"',
    'sig1=("@method");created=1;created=2;keyid="k"',
    'sig1=("@method");keyid="k", sig1=("@path");keyid="k"',
    'sig1=("@METHOD");keyid="k"',
    'sig1=("@method";req);keyid="k"',
    'sig1=("@method");created=-1;keyid="k"',
    'sig1=("@method");keyid=k',
    'sig1=("@method");keyid="k";tag="mcpclient-auth/1"',
    "sig1=(((",
    "",
]
_SIGNATURES = ["sig1=:AAAA:", "sig1=:AAAA:, sig2=:AAAA:", "sig1=AAAA", "sig2=:AAAA:", ""]


def _outcome(signature_input: str, signature: str, parsed: ParsedField | None) -> Any:
    try:
        result = parse_signature_fields(signature_input, signature, parsed_input=parsed)
    except McpClientAuthError as exc:
        return type(exc), exc.code, exc.message
    return {label: (p.components, dict(p.params), p.signature, p.signature_params) for label, p in result.items()}


@settings(max_examples=400, deadline=None)
@given(
    value=st.one_of(st.sampled_from(_INPUTS), st.text(max_size=60)),
    handed=st.one_of(st.sampled_from(_INPUTS), st.text(max_size=60)),
    signature=st.sampled_from(_SIGNATURES),
    same=st.booleans(),
)
def test_a_handed_parse_gives_the_verdict_of_a_fresh_parse(value: str, handed: str, signature: str, same: bool) -> None:
    # The gate hands on the parse of the value *it* read; the verifier reads the canonical value.
    source = value if same else handed
    try:
        members = _structured_fields.parse_dictionary(source)
    except _structured_fields.StructuredFieldError:
        return  # the gate refuses it: nothing is handed on
    assert _outcome(value, signature, ParsedField(source, members)) == _outcome(value, signature, None)


def test_a_parse_of_another_value_is_never_used() -> None:
    honest = _INPUTS[0]
    # A (hypothetical) parse that does not belong to the value: the signature check must not see it.
    forged = ParsedField(honest.replace('"k"', '"other"'), _structured_fields.parse_dictionary(honest))
    real = ParsedField(honest, _structured_fields.parse_dictionary(honest.replace('"k"', '"other"')))
    assert parse_signature_fields(honest, "sig1=:AAAA:", parsed_input=forged)["sig1"].keyid == "k"
    # ... and used when it names the exact value (here deliberately wrong, to show it is the one used).
    assert parse_signature_fields(honest, "sig1=:AAAA:", parsed_input=real)["sig1"].keyid == "other"


# --- through the middleware ------------------------------------------------------------------------------


def _signed(agent: Identity = AGENT, *, nonce: str | None = None) -> httpx.Request:
    mandate = Mandate.issue(USER, agent=agent, audience=URL, purpose="p", capabilities=["mcp.search"])
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {}}}
    ).encode()
    ect = ExecutionContextToken.mint(
        agent, audience=[URL], exec_act="mcp.search", pred=[mandate.jti], wid=mandate.jti,
        inp_hash=sha256_b64url(body),
    )  # fmt: skip
    request = httpx.Request(
        "POST",
        URL,
        content=body,
        headers={"content-type": "application/json", "act-mandate": mandate.token, "execution-context": ect.token},
    )
    RequestSigner(agent).sign(request, nonce=nonce)
    return request


async def _through_middleware(raw: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, str | None]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guarded = McpAuthMiddleware(app, trust=TRUST, audience=URL, bind_sessions=False)
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/mcp", "raw_path": b"/mcp", "query_string": b"",
             "headers": [(k.lower(), v) for k, v in raw], "scheme": "https"}  # fmt: skip
    await guarded(scope, receive, send)
    status = sent[0]["status"]
    code = None if status == 200 else json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["code"]
    return status, code


def _verdict_without_handover(raw: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, str | None]:
    # The same request through the verifier alone, which parses Signature-Input itself.
    from mcpclient_auth.server import McpRequestVerifier

    verifier = McpRequestVerifier(TRUST, audience=URL)
    outcome = verifier.check(IncomingRequest("POST", URL, IncomingHeaders(raw), body))
    if isinstance(outcome, Rejection):
        return outcome.status, outcome.error.code
    return 200, None


def _tampered(raw: list[tuple[bytes, bytes]], change: str) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in raw:
        if name.lower() == b"signature-input":
            text = value.decode()
            if change == "space":
                text = "  " + text + " \t"
            elif change == "other-key":
                text = text.replace(AGENT.kid, OTHER.kid)
            elif change == "created":
                text = text.replace(";created=", ";created=1")
            elif change == "second-member":
                text = text + ', sig2=("@method");keyid="' + AGENT.kid + '"'
            elif change == "drop-component":
                text = text.replace('"@method" ', "")
            value = text.encode()
        out.append((name, value))
    return out


@pytest.mark.parametrize("change", ["none", "space", "other-key", "created", "second-member", "drop-component"])
async def test_the_middleware_verdict_equals_the_verifier_alone(change: str) -> None:
    request = _signed()
    raw = _tampered(list(request.headers.raw), change)
    expected = _verdict_without_handover(raw, request.content)
    assert await _through_middleware(raw, request.content) == expected
    if change in ("none", "space"):
        assert expected == (200, None)  # whitespace around the value is not part of it
    else:
        assert expected[0] == 401


@pytest.mark.parametrize(("change", "parses"), [("none", 1), ("space", 2)])
async def test_the_middleware_parses_signature_input_once(
    monkeypatch: pytest.MonkeyPatch, change: str, parses: int
) -> None:
    request = _signed()
    raw = _tampered(list(request.headers.raw), change)
    seen: list[str] = []
    real = _structured_fields.parse_dictionary

    def counting(value: Any) -> Any:
        if isinstance(value, str) and "keyid=" in value:
            seen.append(value)
        return real(value)

    monkeypatch.setattr(_structured_fields, "parse_dictionary", counting)
    assert await _through_middleware(raw, request.content) == (200, None)
    # Once by the gate, handed on; a value the verifier reads differently (trimmed) is parsed again.
    assert len(seen) == parses
