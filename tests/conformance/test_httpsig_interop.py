"""Cross-checks with an independent RFC 9421 implementation (pyauth ``http-message-signatures``).

Both directions, for ES256 (``ecdsa-p256-sha256``) and Ed25519: signatures made by our ``mcp``-profile
:class:`RequestSigner` verify with ``HTTPMessageVerifier``, and signatures made by
``HTTPMessageSigner`` verify with our :class:`RequestVerifier`. The last test sends signed requests
over a real socket to a uvicorn server that verifies with both implementations.

The library knows no ``wimse-aud`` parameter; two narrow subclasses teach it the parameter name
(verifier) and how to add it (signer), nothing else.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)

from mcpclient_auth.errors import (
    DigestError,
    SignatureComponentUncovered,
    SignatureInvalid,
    SignaturePolicyError,
)
from mcpclient_auth.httpsig import MCP_TAG, RequestSigner, RequestVerifier
from mcpclient_auth.keys import Identity, TrustStore
from tests.support.servers import serve

URL = "http://127.0.0.1:8000/mcp"
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search"}}).encode()
PYAUTH_ALGORITHMS = {"ES256": algorithms.ECDSA_P256_SHA256, "EdDSA": algorithms.ED25519}


class _Verifier(HTTPMessageVerifier):
    signature_metadata_parameters = HTTPMessageVerifier.signature_metadata_parameters | {"wimse-aud"}


class _Signer(HTTPMessageSigner):
    audience: str | None = None

    def _build_signature_base(
        self,
        message: Any,
        *,
        covered_component_ids: Any,
        signature_params: Any,
        component_resolver: Any = None,
    ) -> Any:
        if self.audience is not None:
            signature_params["wimse-aud"] = self.audience
        return super()._build_signature_base(
            message,
            covered_component_ids=covered_component_ids,
            signature_params=signature_params,
            component_resolver=component_resolver,
        )


@pytest.fixture(params=["ES256", "EdDSA"])
def agent(request: pytest.FixtureRequest) -> Identity:
    return Identity.generate(request.param, name=f"agent-{request.param}")


def _pyauth_verifier(agent: Identity) -> _Verifier:
    resolver = MappingKeyResolver(public_keys={agent.kid: agent.public.key}, private_keys={})
    return _Verifier(signature_algorithm=PYAUTH_ALGORITHMS[agent.alg], key_resolver=resolver)


def _pyauth_signer(agent: Identity, audience: str | None) -> _Signer:
    resolver = MappingKeyResolver(public_keys={}, private_keys={agent.kid: agent.private_key})
    signer = _Signer(signature_algorithm=PYAUTH_ALGORITHMS[agent.alg], key_resolver=resolver)
    signer.audience = audience
    return signer


def _mcp_request(**extra: str) -> httpx.Request:
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer user-access-token",
        "ACT-Mandate": "mandate.jwt.value",
        "Execution-Context": "ect.jwt.value",
        "Mcp-Session-Id": "session-1",
        "Mcp-Protocol-Version": "2025-11-25",
        **extra,
    }
    return httpx.Request("POST", URL, headers=headers, content=BODY)


# --- ours -> pyauth ------------------------------------------------------------------------------------


def test_our_mcp_signature_verifies_with_pyauth(agent: Identity) -> None:
    request = _mcp_request()
    result = RequestSigner(agent).sign(request)
    [verified] = _pyauth_verifier(agent).verify(
        request,
        expect_tag=MCP_TAG,
        require_components=(
            "@method",
            "@target-uri",
            "content-type",
            "content-digest",
            "authorization",
            "act-mandate",
            "execution-context",
            "mcp-session-id",
            "mcp-protocol-version",
        ),
        body=BODY,
    )
    assert verified.label == "sig1"
    assert verified.body == BODY  # pyauth checked our Content-Digest against the body
    assert verified.parameters["keyid"] == agent.kid
    assert verified.parameters["wimse-aud"] == URL
    assert verified.nonce == result.params["nonce"]
    # Same signature base, byte for byte, from two implementations.
    pyauth_base = "\n".join(f"{k}: {v}" for k, v in verified.covered_components.items()).encode()
    assert pyauth_base == result.base


#: Headers the mcp profile covers when present, beyond the base set: SEP-2243, RFC 9449, SEP-1699.
COVERED_WHEN_PRESENT = {
    "Mcp-Method": "tools/call",
    "Mcp-Name": "search",
    "Mcp-Param-Region": "eu-west",
    "Mcp-Param-Tenant": "acme",
    "DPoP": "proof.jwt.sig",
    "Last-Event-ID": "stream-1:4",
}


def test_pyauth_verifies_our_coverage_of_param_dpop_and_last_event_id(agent: Identity) -> None:
    request = _mcp_request(**COVERED_WHEN_PRESENT)
    result = RequestSigner(agent).sign(request)
    names = tuple(name.lower() for name in COVERED_WHEN_PRESENT)
    [verified] = _pyauth_verifier(agent).verify(
        request, expect_tag=MCP_TAG, require_components=("@method", "@target-uri", *names), body=BODY
    )
    assert set(names) <= set(result.covered)
    pyauth_base = "\n".join(f"{k}: {v}" for k, v in verified.covered_components.items()).encode()
    assert pyauth_base == result.base
    for name, value in COVERED_WHEN_PRESENT.items():
        tampered = _mcp_request(**COVERED_WHEN_PRESENT)
        RequestSigner(agent).sign(tampered)
        tampered.headers[name] = value + "x"
        with pytest.raises(InvalidSignature):
            _pyauth_verifier(agent).verify(tampered, expect_tag=MCP_TAG, body=BODY)


@pytest.mark.parametrize("left_out", ["mcp-param-region", "dpop", "last-event-id"])
def test_our_verifier_refuses_a_pyauth_signature_leaving_a_present_header_uncovered(
    agent: Identity, left_out: str
) -> None:
    covered = (*MCP_COVERED, *(name.lower() for name in COVERED_WHEN_PRESENT))
    complete = _mcp_request(**COVERED_WHEN_PRESENT)
    _pyauth_sign(agent, complete, covered)
    assert RequestVerifier(TrustStore([agent])).verify(complete, body=BODY).keyid == agent.kid
    partial = _mcp_request(**COVERED_WHEN_PRESENT)
    _pyauth_sign(agent, partial, tuple(name for name in covered if name != left_out))
    with pytest.raises(SignatureComponentUncovered) as caught:
        RequestVerifier(TrustStore([agent])).verify(partial, body=BODY)
    assert caught.value.code == "component_uncovered"


def test_pyauth_rejects_our_signature_after_tampering(agent: Identity) -> None:
    request = _mcp_request()
    RequestSigner(agent).sign(request)
    request.headers["Execution-Context"] = "another.ect.value"
    with pytest.raises(InvalidSignature):
        _pyauth_verifier(agent).verify(request, expect_tag=MCP_TAG, body=BODY)
    fresh = _mcp_request()
    RequestSigner(agent).sign(fresh)
    with pytest.raises(InvalidSignature):  # body changed: the signed Content-Digest no longer matches
        _pyauth_verifier(agent).verify(fresh, expect_tag=MCP_TAG, body=BODY + b" ")


# --- pyauth -> ours ------------------------------------------------------------------------------------


def _pyauth_sign(
    agent: Identity, request: httpx.Request, covered: tuple[str, ...], *, audience: str | None = URL
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    _pyauth_signer(agent, audience).sign(
        request,
        key_id=agent.kid,
        created=now,
        expires=now + datetime.timedelta(seconds=60),
        nonce="pyauth-nonce-0123456789abcdef",
        label="sig1",
        tag=MCP_TAG,
        include_alg=True,
        covered_component_ids=covered,
        body=BODY,
    )


MCP_COVERED = (
    "@method",
    "@target-uri",
    "content-type",
    "authorization",
    "act-mandate",
    "execution-context",
    "mcp-session-id",
    "mcp-protocol-version",
)


def test_pyauth_signature_verifies_with_ours(agent: Identity) -> None:
    request = _mcp_request()
    _pyauth_sign(agent, request, MCP_COVERED)
    verified = RequestVerifier(TrustStore([agent])).verify(request, body=BODY)
    assert verified.keyid == agent.kid
    assert verified.algorithm == agent.http_alg
    assert verified.params["alg"] == agent.http_alg  # pyauth sends alg; ours accepts a matching one
    assert set(verified.covered) == {*MCP_COVERED, "content-digest"}


def test_our_verifier_rejects_weaker_pyauth_signatures(agent: Identity) -> None:
    trust = TrustStore([agent])
    # Authorization present on the request but left uncovered: refused.
    uncovered = _mcp_request()
    _pyauth_sign(agent, uncovered, tuple(c for c in MCP_COVERED if c != "authorization"))
    with pytest.raises(SignaturePolicyError):
        RequestVerifier(trust).verify(uncovered, body=BODY)
    # No wimse-aud: refused by the mcp profile.
    no_audience = _mcp_request()
    _pyauth_sign(agent, no_audience, MCP_COVERED, audience=None)
    with pytest.raises(SignaturePolicyError):
        RequestVerifier(trust).verify(no_audience, body=BODY)
    # A valid signature over a body that was then swapped: the digest catches it.
    swapped = _mcp_request()
    _pyauth_sign(agent, swapped, MCP_COVERED)
    with pytest.raises(DigestError):
        RequestVerifier(trust).verify(swapped, body=BODY.replace(b"search", b"delete"))
    # A valid signature for another key id claimed by a different key: invalid.
    other = Identity.generate(agent.alg)
    forged = _mcp_request()
    now = datetime.datetime.now(datetime.UTC)
    resolver = MappingKeyResolver(public_keys={}, private_keys={agent.kid: other.private_key})
    signer = _Signer(signature_algorithm=PYAUTH_ALGORITHMS[agent.alg], key_resolver=resolver)
    signer.audience = URL
    signer.sign(
        forged,
        key_id=agent.kid,
        created=now,
        expires=now + datetime.timedelta(seconds=60),
        nonce="n" * 22,
        label="sig1",
        tag=MCP_TAG,
        covered_component_ids=MCP_COVERED,
        body=BODY,
    )
    with pytest.raises(SignatureInvalid):
        RequestVerifier(trust).verify(forged, body=BODY)


# --- over a real socket --------------------------------------------------------------------------------


class _Pairs:
    """Header lines for pyauth (it reads ``.items()``)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)


def _verifying_app(agents: list[Identity]) -> Any:
    trust = TrustStore(agents)
    ours = RequestVerifier(trust)
    theirs = {agent.kid: _pyauth_verifier(agent) for agent in agents}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        host = dict(headers)["host"]
        query = scope["query_string"].decode("latin-1")
        url = f"http://{host}{scope['raw_path'].decode('latin-1').split('?')[0]}" + (
            f"?{query}" if query else ""
        )
        request = SimpleNamespace(method=scope["method"], url=url, headers=_Pairs(headers), content=body)
        outcome: dict[str, Any] = {}
        try:
            verified = ours.verify(request, body=body)
            outcome["ours"] = verified.keyid
        except Exception as exc:
            outcome["ours"] = f"error:{getattr(exc, 'code', type(exc).__name__)}"
            verified = None
        try:
            kid = verified.keyid if verified else next(iter(theirs))
            [result] = theirs[kid].verify(request, expect_tag=MCP_TAG, body=body)
            outcome["theirs"] = result.parameters["keyid"]
        except Exception as exc:
            outcome["theirs"] = f"error:{type(exc).__name__}"
        payload = json.dumps(outcome).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


@pytest.fixture(scope="module")
def agents() -> list[Identity]:
    return [Identity.generate("ES256"), Identity.generate("EdDSA")]


@pytest.fixture(scope="module")
def server(agents: list[Identity]) -> Iterator[str]:
    with serve(_verifying_app(agents)) as base_url:
        yield base_url


def test_signed_requests_over_the_wire_verify_with_both_implementations(
    server: str, agents: list[Identity]
) -> None:
    for agent in agents:
        signer = RequestSigner(agent)

        def sign(request: httpx.Request, signer: RequestSigner = signer) -> None:
            signer.sign(request)

        with httpx.Client(event_hooks={"request": [sign]}) as client:
            response = client.post(
                f"{server}/mcp?session=1",
                content=BODY,
                headers={
                    "Content-Type": "application/json",
                    "Authorization": "Bearer t",
                    "ACT-Mandate": "a.b.c",
                },
            )
            assert response.json() == {"ours": agent.kid, "theirs": agent.kid}
            # GET without a body: no Content-Digest, still verifiable by both.
            assert client.get(f"{server}/mcp").json() == {"ours": agent.kid, "theirs": agent.kid}

        # A header added after signing (here by a hook that runs later) is caught by both.
        def add_header(request: httpx.Request) -> None:
            request.headers["Content-Type"] = "text/plain"

        with httpx.Client(event_hooks={"request": [sign, add_header]}) as client:
            outcome = client.post(
                f"{server}/mcp", content=BODY, headers={"Content-Type": "application/json"}
            ).json()
            assert outcome == {"ours": "error:signature_invalid", "theirs": "error:InvalidSignature"}
