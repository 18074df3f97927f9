"""RequestSigner / RequestVerifier: the ``mcp`` and ``wimse`` profiles (DESIGN §3, acceptance 6)."""

from __future__ import annotations

import contextlib
import json
import re
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth._rfc9421 import parse_signature_fields
from mcpclient_auth.digest import parse_digest_field, verify_content_digest
from mcpclient_auth.errors import (
    ComponentError,
    ConfigurationError,
    DigestError,
    McpClientAuthError,
    SignatureError,
    SignatureExpired,
    SignatureInvalid,
    SignatureMalformed,
    SignatureMissing,
    SignaturePolicyError,
    SignatureReplay,
    UnknownKey,
)
from mcpclient_auth.httpsig import (
    MCP_TAG,
    WIMSE_TAG,
    RequestSigner,
    RequestVerifier,
)
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.replay import ReplayCache
from mcpclient_auth.wit import WorkloadIdentityToken

URL = "https://mcp.example.com/mcp?tenant=7"
AUDIENCE = "https://mcp.example.com/mcp"
BODY = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "search"}}).encode()
NOW = 1_800_000_000
MCP_ORDER = [
    "@method",
    "@target-uri",
    "content-type",
    "content-digest",
    "authorization",
    "act-mandate",
    "execution-context",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
]
HEADERS = {
    "Content-Type": "application/json",
    "Authorization": "Bearer secret-user-token",
    "ACT-Mandate": "mandate.jwt.sig",
    "Execution-Context": "ect.jwt.sig",
    "Mcp-Session-Id": "sess-1",
}


@pytest.fixture(params=["ES256", "EdDSA"])
def agent(request: pytest.FixtureRequest) -> Identity:
    return Identity.generate(request.param, name="agent")


@pytest.fixture
def es256() -> Identity:
    return Identity.generate("ES256", name="agent")


def _request(method: str = "POST", url: str = URL, body: bytes = BODY, **headers: str) -> httpx.Request:
    merged = dict(HEADERS)
    merged.update({k.replace("_", "-"): v for k, v in headers.items()})
    return httpx.Request(method, url, headers=merged, content=body)


def _copy(
    request: httpx.Request, *, method: str | None = None, url: str | None = None, body: bytes | None = None
) -> httpx.Request:
    return httpx.Request(
        method or request.method,
        url or str(request.url),
        headers=request.headers.multi_items(),
        content=request.content if body is None else body,
    )


def _signed(identity: Identity, request: httpx.Request | None = None, **kw: Any) -> httpx.Request:
    request = request or _request()
    RequestSigner(identity).sign(request, created=NOW, **kw)
    return request


def _verify(identity: Identity, request: Any, now: float = NOW + 1, **kw: Any) -> Any:
    return RequestVerifier(TrustStore([identity]), **kw).verify(request, now=now)


# --- the mcp profile: what is signed ---------------------------------------------------------------------


def test_mcp_round_trip_and_exact_parameters(agent: Identity) -> None:
    request = _request(Mcp_Protocol_Version="2025-11-25", Mcp_Method="tools/call", Mcp_Name="search")
    result = RequestSigner(agent).sign(request, created=NOW)

    assert result.label == "sig1"
    assert list(result.covered) == MCP_ORDER
    assert list(result.params) == ["created", "expires", "nonce", "keyid", "tag", "wimse-aud"]
    assert result.params["expires"] == NOW + 60
    assert result.params["tag"] == MCP_TAG
    assert result.params["keyid"] == agent.kid
    assert result.params["wimse-aud"] == AUDIENCE  # target URI without the query
    assert len(result.params["nonce"]) >= 22  # 16 random bytes, base64url
    inner = "(" + " ".join(f'"{c}"' for c in MCP_ORDER) + ")"
    assert request.headers["Signature-Input"] == (
        f'sig1={inner};created={NOW};expires={NOW + 60};nonce="{result.params["nonce"]}";'
        f'keyid="{agent.kid}";tag="mcpclient-auth/1";wimse-aud="{AUDIENCE}"'
    )
    assert request.headers["Content-Digest"] == result.content_digest
    assert result.base.split(b"\n")[1] == f'"@target-uri": {URL}'.encode()

    verified = _verify(agent, request)
    assert verified.keyid == agent.kid and verified.key == agent.public
    assert list(verified.covered) == MCP_ORDER
    assert verified.nonce == result.params["nonce"]
    assert (verified.created, verified.expires) == (NOW, NOW + 60)
    assert verified.algorithm == agent.http_alg
    assert verified.base == result.base


def test_only_present_headers_are_covered_and_get_has_no_digest(es256: Identity) -> None:
    request = httpx.Request("GET", "https://mcp.example.com/mcp", headers={"Accept": "text/event-stream"})
    result = RequestSigner(es256).sign(request, created=NOW)
    assert result.covered == ("@method", "@target-uri")
    assert "content-digest" not in request.headers
    _verify(es256, request)


def test_post_with_empty_body_gets_a_digest(es256: Identity) -> None:
    request = httpx.Request("POST", "https://mcp.example.com/mcp")
    result = RequestSigner(es256).sign(request, created=NOW)
    assert request.headers["Content-Digest"] == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
    assert "content-digest" in result.covered
    _verify(es256, request)


def test_fixed_parameters_give_reproducible_output() -> None:
    agent = Identity.generate("EdDSA")
    first, second = _request(), _request()
    a = RequestSigner(agent).sign(first, created=NOW, expires=NOW + 30, nonce="fixed-nonce-0123456789")
    b = RequestSigner(agent).sign(second, created=NOW, expires=NOW + 30, nonce="fixed-nonce-0123456789")
    assert a.base == b.base and a.signature == b.signature  # Ed25519 is deterministic
    assert first.headers["Signature"] == second.headers["Signature"]


def test_configured_ect_header_and_audience(es256: Identity) -> None:
    request = _request(Wimse_ECT="ect.in.other.header")
    del request.headers["Execution-Context"]
    signer = RequestSigner(es256, ect_header="Wimse-ECT", audience="urn:mcp:hr")
    result = signer.sign(request, created=NOW)
    assert "wimse-ect" in result.covered and "execution-context" not in result.covered
    assert result.params["wimse-aud"] == "urn:mcp:hr"
    _verify(es256, request, ect_header="Wimse-ECT", audience="urn:mcp:hr")
    with pytest.raises(SignaturePolicyError):  # default audience is the URL
        _verify(es256, request, ect_header="Wimse-ECT")


def test_signing_twice_overwrites_every_header(es256: Identity) -> None:
    request = _request()
    signer = RequestSigner(es256)
    signer.sign(request, created=NOW)
    second = signer.sign(request, created=NOW + 5)
    for name in ("signature", "signature-input", "content-digest"):
        assert len(request.headers.get_list(name)) == 1
    assert request.headers["Signature-Input"].startswith("sig1=") and "," not in request.headers["Signature"]
    verified = _verify(es256, request, now=NOW + 6)
    assert verified.nonce == second.params["nonce"]


def test_overwrite_on_duck_typed_requests_with_plain_headers(es256: Identity) -> None:
    headers: dict[str, str] = {
        "content-type": "application/json",
        "signature": "old=:AAAA:",
        "SIGNATURE-INPUT": "old=()",
    }
    request = SimpleNamespace(method="POST", url="https://mcp.example.com/mcp", headers=headers, content=BODY)
    RequestSigner(es256).sign(request, created=NOW)
    assert sorted(k.lower() for k in headers) == [
        "content-digest",
        "content-type",
        "signature",
        "signature-input",
    ]
    _verify(es256, request)
    pairs = [("Content-Type", "application/json"), ("Signature", "old=:AAAA:")]
    listed = SimpleNamespace(method="POST", url="https://mcp.example.com/mcp", headers=pairs, content=BODY)
    RequestSigner(es256).sign(listed, created=NOW)
    assert [name for name, _ in pairs].count("Signature") == 1
    _verify(es256, listed)


# --- acceptance 6: every change is caught ---------------------------------------------------------------


def test_changed_body_fails(es256: Identity) -> None:
    request = _signed(es256)
    with pytest.raises(DigestError):
        _verify(es256, _copy(request, body=BODY.replace(b"search", b"delete")))


def test_changed_method_fails(es256: Identity) -> None:
    request = _signed(es256)
    with pytest.raises(SignatureInvalid):
        _verify(es256, _copy(request, method="PUT"))


@pytest.mark.parametrize(
    "url",
    [
        "https://mcp.example.com/mcp?tenant=8",  # query only: same audience, other target URI
        "https://evil.example.com/mcp?tenant=7",
        "http://mcp.example.com/mcp?tenant=7",
        "https://mcp.example.com/admin?tenant=7",
    ],
)
def test_changed_url_fails(es256: Identity, url: str) -> None:
    request = _signed(es256)
    with pytest.raises(SignatureInvalid):
        _verify(es256, _copy(request, url=url), audience=AUDIENCE)
    with pytest.raises((SignatureInvalid, SignaturePolicyError)):
        _verify(es256, _copy(request, url=url))


@pytest.mark.parametrize(
    "header",
    ["Content-Type", "Content-Digest", "Authorization", "ACT-Mandate", "Execution-Context", "Mcp-Session-Id"],
)
def test_each_covered_header_change_fails(es256: Identity, header: str) -> None:
    request = _signed(es256)
    changed = _copy(request)
    changed.headers[header] = request.headers[header][:-2] + "xx"
    with pytest.raises(SignatureInvalid):
        _verify(es256, changed)


def test_expiry_age_and_future(es256: Identity) -> None:
    request = _signed(es256)  # created NOW, expires NOW + 60
    _verify(es256, _copy(request), now=NOW + 60 + 60)  # within skew
    with pytest.raises(SignatureExpired):
        _verify(es256, _copy(request), now=NOW + 60 + 61)
    with pytest.raises(SignatureExpired):
        _verify(es256, _copy(request), now=NOW - 61)  # created in the future
    long_lived = _signed(es256, expires=NOW + 3600)
    with pytest.raises(SignatureExpired):
        _verify(es256, long_lived, now=NOW + 300 + 61)  # older than max_age + skew
    with pytest.raises(SignaturePolicyError):
        _verify(es256, _signed(es256, expires=NOW - 1), now=NOW)


@pytest.mark.parametrize("header", ["Authorization", "ACT-Mandate", "Execution-Context", "Mcp-Session-Id"])
def test_adding_an_uncovered_credential_header_is_refused(es256: Identity, header: str) -> None:
    request = _request()
    del request.headers[header]
    RequestSigner(es256).sign(request, created=NOW)
    _verify(es256, _copy(request))
    request.headers[header] = "Bearer attacker-token"
    with pytest.raises(SignaturePolicyError):
        _verify(es256, request)


def test_uncovered_content_digest_is_refused(es256: Identity) -> None:
    request = _signed(es256)
    value = request.headers["Signature-Input"].replace(' "content-digest"', "")
    request.headers["Signature-Input"] = value
    with pytest.raises(SignaturePolicyError):
        _verify(es256, request)


def test_replayed_nonce_is_refused(es256: Identity) -> None:
    request = _signed(es256)
    verifier = RequestVerifier(TrustStore([es256]))
    verifier.verify(request, now=NOW + 1)
    with pytest.raises(SignatureReplay):
        verifier.verify(_copy(request), now=NOW + 2)
    # Two verifiers sharing one cache (e.g. two workers of one server) also see it.
    shared = ReplayCache()
    RequestVerifier(TrustStore([es256]), nonce_cache=shared).verify(_copy(request), now=NOW + 1)
    with pytest.raises(SignatureReplay):
        RequestVerifier(TrustStore([es256]), nonce_cache=shared).verify(_copy(request), now=NOW + 1)


def test_forged_signatures_do_not_burn_nonces(es256: Identity) -> None:
    request = _signed(es256)
    forged = _copy(request)
    forged.headers["Signature"] = "sig1=:" + "A" * 86 + "==:"
    verifier = RequestVerifier(TrustStore([es256]))
    with pytest.raises(SignatureInvalid):
        verifier.verify(forged, now=NOW + 1)
    verifier.verify(request, now=NOW + 1)  # the genuine request still passes


def test_wrong_tag_is_refused(es256: Identity) -> None:
    request = _signed(es256)
    with pytest.raises(SignaturePolicyError):
        _verify(es256, _copy(request), expect_tag="another-app/1")
    tampered = _copy(request)
    tampered.headers["Signature-Input"] = request.headers["Signature-Input"].replace(MCP_TAG, "other")
    with pytest.raises(SignaturePolicyError):
        _verify(es256, tampered)


def test_unknown_keyid_is_refused(es256: Identity) -> None:
    request = _signed(es256)
    with pytest.raises(UnknownKey):
        RequestVerifier(TrustStore([Identity.generate()])).verify(request, now=NOW + 1)


def test_missing_and_malformed_signatures(es256: Identity) -> None:
    with pytest.raises(SignatureMissing):
        _verify(es256, _request())
    request = _signed(es256)
    relabelled = _copy(request)
    relabelled.headers["Signature-Input"] = request.headers["Signature-Input"].replace("sig1=", "other=", 1)
    relabelled.headers["Signature"] = request.headers["Signature"].replace("sig1=", "other=", 1)
    with pytest.raises(SignatureMissing):
        _verify(es256, relabelled)
    mismatched = _copy(request)
    mismatched.headers["Signature"] = request.headers["Signature"].replace("sig1=", "sig2=", 1)
    with pytest.raises(SignatureMalformed):
        _verify(es256, mismatched)


def test_a_mismatching_alg_parameter_is_refused(es256: Identity) -> None:
    request = _signed(es256)
    tampered = _copy(request)
    tampered.headers["Signature-Input"] = request.headers["Signature-Input"] + ';alg="ed25519"'
    with pytest.raises(SignaturePolicyError):
        _verify(es256, tampered)


def test_body_must_be_available_when_a_digest_is_due(es256: Identity) -> None:
    request = _signed(es256)
    unread = SimpleNamespace(method="POST", url=URL, headers=request.headers)  # no .content
    with pytest.raises(DigestError):
        _verify(es256, unread)
    verified = RequestVerifier(TrustStore([es256])).verify(unread, body=BODY, now=NOW + 1)
    assert verified.keyid == es256.kid


# --- values that cannot be signed ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["Bearer a\r\nX-Injected: 1", "Bearer a\nb", "Bearer a\rb", "Bearer \x00", "Bearer é"]
)
def test_cr_lf_and_non_ascii_in_covered_values_are_refused(es256: Identity, value: str) -> None:
    headers = {"Content-Type": "application/json", "Authorization": value}
    request = SimpleNamespace(method="POST", url=URL, headers=headers, content=BODY)
    with pytest.raises(ComponentError) as info:
        RequestSigner(es256).sign(request)
    assert value not in str(info.value) and "Bearer" not in str(info.value)
    assert "signature" not in {k.lower() for k in headers}


def test_httpx_request_with_crlf_header_is_refused(es256: Identity) -> None:
    request = httpx.Request("POST", URL, headers={"Mcp-Session-Id": "a\r\nb"}, content=b"{}")
    with pytest.raises(ComponentError):
        RequestSigner(es256).sign(request)


def test_results_and_errors_keep_credentials_out_of_repr(es256: Identity) -> None:
    request = _request()
    result = RequestSigner(es256).sign(request, created=NOW)
    verified = _verify(es256, request)
    for text in (
        repr(result),
        repr(verified),
        repr(RequestSigner(es256)),
        repr(RequestVerifier(TrustStore([es256]))),
    ):
        assert "secret-user-token" not in text and "mandate.jwt.sig" not in text


# --- configuration -------------------------------------------------------------------------------------


def test_configuration_errors(es256: Identity) -> None:
    with pytest.raises(ConfigurationError):
        RequestSigner(es256, profile="nope")
    with pytest.raises(ConfigurationError):
        RequestVerifier(TrustStore([es256]), profile="nope")
    with pytest.raises(ConfigurationError):
        RequestSigner(es256, workload_identity_token="a.b.c")  # a WIT belongs to the wimse profile
    for lifetime in (0, -1, 10_000):
        with pytest.raises(ConfigurationError):
            RequestSigner(es256, lifetime=lifetime)
    with pytest.raises(ConfigurationError):
        RequestSigner(es256, label="Not A Key")
    with pytest.raises(ConfigurationError):
        RequestSigner(es256, ect_header="bad header")
    with pytest.raises(ConfigurationError):
        RequestSigner(es256, ect_header="Authorization")  # would cover one field twice
    with pytest.raises(ConfigurationError):
        RequestVerifier(TrustStore([es256]), required_components=['"@query-param"'])


def test_extra_required_components(es256: Identity) -> None:
    request = _signed(es256)
    with pytest.raises(SignaturePolicyError):
        _verify(es256, request, required_components=["mcp-protocol-version"])
    _verify(es256, _copy(request), required_components=["authorization", "@target-uri"])


def test_custom_lifetime_and_label(es256: Identity) -> None:
    request = _request()
    result = RequestSigner(es256, lifetime=10, label="mcp").sign(request, created=NOW)
    assert result.params["expires"] == NOW + 10
    assert request.headers["Signature"].startswith("mcp=:")
    with pytest.raises(SignatureMissing):  # the verifier looks for the profile's label
        _verify(es256, request)


# --- the wimse profile ---------------------------------------------------------------------------------


@pytest.fixture
def issuer() -> Identity:
    return Identity.generate("ES256", name="https://issuer.example")


def _wit(issuer: Identity, workload: Identity, **kw: Any) -> str:
    return WorkloadIdentityToken.issue(
        issuer, subject="spiffe://example.org/agent", key=workload, now=NOW, **kw
    ).token


def test_wimse_round_trip_and_exact_parameter_rules(agent: Identity, issuer: Identity) -> None:
    wit = _wit(issuer, agent)
    request = _request(Txn_Token="txn.token.value")
    result = RequestSigner(agent, profile="wimse", workload_identity_token=wit).sign(request, created=NOW)

    assert result.label == "wimse"
    assert result.covered == (
        "@method",
        "@request-target",
        "workload-identity-token",
        "content-type",
        "content-digest",
        "authorization",
        "txn-token",
    )
    assert list(result.params) == ["created", "expires", "nonce", "tag", "wimse-aud"]
    assert result.params["tag"] == WIMSE_TAG and result.params["wimse-aud"] == AUDIENCE
    assert request.headers["Workload-Identity-Token"] == wit
    signature_input = request.headers["Signature-Input"]
    assert signature_input.startswith('wimse=("@method" "@request-target" "workload-identity-token" ')
    assert "keyid=" not in signature_input and "alg=" not in signature_input
    assert result.base.split(b"\n")[1] == b'"@request-target": /mcp?tenant=7'
    assert "act-mandate" not in result.covered  # not a wimse component

    verified = RequestVerifier(TrustStore([issuer]), profile="wimse").verify(request, now=NOW + 1)
    assert verified.label == "wimse"
    assert verified.key.thumbprint == agent.public.thumbprint
    assert verified.algorithm == agent.http_alg  # from cnf.jwk.alg
    assert verified.wit is not None and verified.wit.subject == "spiffe://example.org/agent"


def test_wimse_keeps_a_wit_already_on_the_request(es256: Identity, issuer: Identity) -> None:
    request = _request(Workload_Identity_Token=_wit(issuer, es256))
    RequestSigner(es256, profile="wimse").sign(request, created=NOW)
    RequestVerifier(TrustStore([issuer]), profile="wimse").verify(request, now=NOW + 1)


def test_wimse_without_or_with_a_foreign_wit_is_a_configuration_error(
    es256: Identity, issuer: Identity
) -> None:
    with pytest.raises(ConfigurationError):
        RequestSigner(es256, profile="wimse").sign(_request())
    foreign = _wit(issuer, Identity.generate("ES256"))
    with pytest.raises(ConfigurationError):
        RequestSigner(es256, profile="wimse", workload_identity_token=foreign)
    with pytest.raises(ConfigurationError):
        RequestSigner(es256, profile="wimse").sign(_request(Workload_Identity_Token=foreign))


def test_wimse_verifier_rules(es256: Identity, issuer: Identity) -> None:
    request = _request()
    RequestSigner(es256, profile="wimse", workload_identity_token=_wit(issuer, es256)).sign(
        request, created=NOW
    )
    verifier = RequestVerifier(TrustStore([issuer]), profile="wimse")

    with_keyid = _copy(request)
    with_keyid.headers["Signature-Input"] = request.headers["Signature-Input"] + ';keyid="x"'
    with pytest.raises(SignaturePolicyError):
        verifier.verify(with_keyid, now=NOW + 1)
    with pytest.raises(UnknownKey):  # WIT issuer not trusted
        RequestVerifier(TrustStore([es256]), profile="wimse").verify(_copy(request), now=NOW + 1)
    swapped = _copy(request)  # another (valid) WIT for another key in the header
    swapped.headers["Workload-Identity-Token"] = _wit(issuer, Identity.generate("ES256"))
    with pytest.raises(SignatureInvalid):
        verifier.verify(swapped, now=NOW + 1)
    verifier.verify(_copy(request), now=NOW + 1)
    with pytest.raises(SignatureReplay):
        verifier.verify(_copy(request), now=NOW + 2)


def test_mcp_verifier_does_not_accept_a_wimse_signature(es256: Identity, issuer: Identity) -> None:
    request = _request()
    RequestSigner(es256, profile="wimse", workload_identity_token=_wit(issuer, es256)).sign(
        request, created=NOW
    )
    with pytest.raises(SignatureMissing):
        RequestVerifier(TrustStore([issuer, es256])).verify(request, now=NOW + 1)


def test_wit_expiry_and_tampering(es256: Identity, issuer: Identity) -> None:
    short = _wit(issuer, es256, ttl=30)
    request = _request()
    RequestSigner(es256, profile="wimse", workload_identity_token=short, lifetime=300).sign(
        request, created=NOW + 50
    )
    with pytest.raises(McpClientAuthError) as info:
        RequestVerifier(TrustStore([issuer]), profile="wimse").verify(request, now=NOW + 100)
    assert info.value.code == "token_expired"
    head, payload, sig = short.split(".")
    with pytest.raises(McpClientAuthError):
        WorkloadIdentityToken.verify(f"{head}.{payload}.{sig[:-2]}AA", TrustStore([issuer]), now=NOW)


# --- parsing never crashes --------------------------------------------------------------------------


_SF_PIECES = st.sampled_from(
    [
        "sig1",
        "wimse",
        "=",
        "(",
        ")",
        " ",
        '"@method"',
        '"@target-uri"',
        '"content-digest"',
        '"@query-param"',
        ";",
        "name=",
        '"x"',
        "created=",
        "expires=",
        "1618884473",
        "-1",
        "99999999999999999",
        "nonce=",
        "keyid=",
        "tag=",
        "alg=",
        '"ed25519"',
        ":",
        "AAAA",
        "==",
        ",",
        "req",
        "sf",
        "bs",
        "key=",
        "?1",
        "?0",
        "1.5",
        "tok",
        '%"x"',
        "@1",
        "\t",
        '"\\"',
        "*",
        "sha-256=",
        "sha-512=",
        "md5=",
    ]
)
_SF_TEXT = st.one_of(st.text(max_size=80), st.lists(_SF_PIECES, max_size=25).map("".join))


@settings(max_examples=200, deadline=None)
@given(signature_input=_SF_TEXT, signature=_SF_TEXT)
def test_signature_field_parsing_raises_only_typed_errors(signature_input: str, signature: str) -> None:
    try:
        parsed = parse_signature_fields(signature_input, signature)
    except SignatureError:
        return
    for entry in parsed.values():
        assert isinstance(entry.signature, bytes)
        assert entry.signature_params.startswith("(")


@settings(max_examples=200, deadline=None)
@given(value=_SF_TEXT, body=st.binary(max_size=32))
def test_digest_parsing_raises_only_digest_errors(value: str, body: bytes) -> None:
    with contextlib.suppress(DigestError):
        parse_digest_field(value)
    with contextlib.suppress(DigestError):
        verify_content_digest(value, body)


_VERIFIER_AGENT = Identity.generate("ES256")


@settings(max_examples=100, deadline=None)
@given(signature_input=_SF_TEXT, signature=_SF_TEXT, digest=_SF_TEXT)
def test_verifier_raises_only_typed_errors(signature_input: str, signature: str, digest: str) -> None:
    headers = {"Signature-Input": signature_input, "Signature": signature, "Content-Digest": digest}
    request = SimpleNamespace(method="POST", url=URL, headers=headers, content=BODY)
    with pytest.raises(McpClientAuthError):
        RequestVerifier(TrustStore([_VERIFIER_AGENT])).verify(request, now=NOW)


def test_signature_input_matches_the_documented_shape(es256: Identity) -> None:
    request = _signed(es256)
    assert re.fullmatch(
        r'sig1=\("@method" "@target-uri"( "[a-z-]+")*\);created=\d+;expires=\d+;nonce="[A-Za-z0-9_-]{22}";keyid="[A-Za-z0-9_-]{43}";tag="mcpclient-auth/1";wimse-aud="[^"]+"',
        request.headers["Signature-Input"],
    )


# --- Workload Identity Tokens ------------------------------------------------------------------------


def test_wit_claims_and_validation(es256: Identity, issuer: Identity) -> None:
    from mcpclient_auth import jose
    from mcpclient_auth.errors import ClaimsInvalid, InvalidTokenType
    from mcpclient_auth.wit import WIT_TYP

    wit = WorkloadIdentityToken.issue(issuer, subject="spiffe://example.org/a", key=es256, now=NOW, ttl=600)
    assert wit.header["typ"] == WIT_TYP and wit.header["kid"] == issuer.kid
    assert wit.claims["cnf"]["jwk"]["alg"] == "ES256" and "d" not in wit.claims["cnf"]["jwk"]
    assert (wit.issuer, wit.subject, wit.expires_at) == (issuer.name, "spiffe://example.org/a", NOW + 600)
    assert wit.key.thumbprint == es256.public.thumbprint
    assert wit.token not in repr(wit)
    checked = WorkloadIdentityToken.verify(wit.token, TrustStore([issuer]), now=NOW + 1)
    assert checked.jti == wit.jti

    base = {"iss": issuer.name, "sub": "s", "jti": "j", "iat": NOW, "exp": NOW + 60}
    jwk = dict(wit.claims["cnf"]["jwk"])
    bad_claims = [
        base,  # no cnf
        {**base, "cnf": {"jwk": {**jwk, "alg": "RS256"}}},
        {**base, "cnf": {"jwk": {k: v for k, v in jwk.items() if k != "alg"}}},
        {**base, "cnf": {"jwk": {**jwk, "d": "AAAA"}}},
        {**base, "cnf": {"jwk": {**jwk, "x": "not-a-point"}}},
        {**base, "sub": ""},
    ]
    for claims in bad_claims:
        with pytest.raises(ClaimsInvalid):
            WorkloadIdentityToken.verify(jose.encode(issuer, WIT_TYP, claims), TrustStore([issuer]), now=NOW)
    with pytest.raises(InvalidTokenType):  # an ECT (or any other JWT) is not a WIT
        WorkloadIdentityToken.verify(jose.encode(issuer, jose.ECT_TYP, base), TrustStore([issuer]), now=NOW)


# --- the generic layer on httpx objects --------------------------------------------------------------


def test_httpx_response_adapter_and_req_components(es256: Identity) -> None:
    from mcpclient_auth._rfc9421 import HttpMessage, create_signature, verify_signature

    request = _request()
    RequestSigner(es256).sign(request, created=NOW)
    response = httpx.Response(
        200, headers={"Content-Type": "application/json"}, content=b'{"ok":true}', request=request
    )
    view = HttpMessage.of(response)
    assert view.status == 200 and view.body == b'{"ok":true}' and view.request is not None
    assert view.request.method == "POST" and view.request.url == URL
    created = create_signature(
        response,
        label="resp",
        components=[
            "@status",
            "content-type",
            '"@method";req',
            '"@target-uri";req',
            '"signature";req;key="sig1"',
        ],
        params={"created": NOW, "keyid": es256.kid, "tag": "response"},
        key=es256.private_key,
        algorithm=es256.http_alg,
    )
    lines = created.base.decode().split("\n")
    assert lines[:4] == [
        '"@status": 200',
        '"content-type": application/json',
        '"@method";req: POST',
        f'"@target-uri";req: {URL}',
    ]
    assert lines[4].startswith('"signature";req;key="sig1": :')  # the request's own signature, bound
    parsed = parse_signature_fields(created.signature_input_member, created.signature_member)["resp"]
    verify_signature(response, parsed, es256.public.key, es256.http_alg)
    other = _request()
    RequestSigner(es256).sign(other, created=NOW)
    answered_other = httpx.Response(200, headers={"Content-Type": "application/json"}, request=other)
    with pytest.raises(SignatureInvalid):  # a response cannot be lifted onto another request
        verify_signature(answered_other, parsed, es256.public.key, es256.http_alg)
