"""DPoP proofs (RFC 9449 §4.2) checked by a second implementation (PyJWT + joserfc, via
tests/support/dpop_check.py), htu normalisation, the nonce memory, and the token-response rules
(a proof sent means a DPoP-bound token or a typed error; the cache key names the key)."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import time

import pytest

from mcpclient_auth import DPoP
from mcpclient_auth.authz import AccessToken, CacheKey
from mcpclient_auth.authz._grant import bind_key, check_binding
from mcpclient_auth.authz._token_request import parse_token_response
from mcpclient_auth.authz.dpop import access_token_hash, htu, valid_nonce, verify_proof
from mcpclient_auth.errors import (
    ConfigurationError,
    DPoPNotBound,
    DPoPProofInvalid,
    InvalidTokenResponse,
    ReplayDetected,
)
from mcpclient_auth.keys import Identity
from tests.support.dpop_check import ProofRejected, check_proof, thumbprint

TOKEN = "at-SENTINEL-dpop-7f3a"
URL = "https://mcp.example.com/mcp"


def header_of(proof: str) -> dict[str, object]:
    segment = proof.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_a_proof_verifies_with_another_implementation(alg: str) -> None:
    key = Identity.generate(alg, name="agent-with-a-name")
    dpop = DPoP(key)
    proof = dpop.proof("POST", URL + "?session=1#frag", access_token=TOKEN)
    claims, jkt = check_proof(proof.token, "POST", URL, set(), access_token=TOKEN)
    assert claims["htm"] == "POST" and claims["htu"] == URL and claims["jti"] == proof.jti
    assert abs(claims["iat"] - time.time()) < 60  # issued now (a generous bound: no timing test)
    expected_ath = base64.urlsafe_b64encode(hashlib.sha256(TOKEN.encode()).digest()).rstrip(b"=").decode()
    assert claims["ath"] == expected_ath == proof.ath
    assert "nonce" not in claims
    # The JWK thumbprint computed by joserfc is the one the AS binds the token to.
    assert jkt == dpop.thumbprint == key.public.thumbprint
    header = header_of(proof.token)
    assert header["typ"] == "dpop+jwt" and header["alg"] == key.alg
    # Only the RFC 7638 members: no private part, no kid/name that would name the agent.
    jwk = header["jwk"]
    assert isinstance(jwk, dict)
    assert set(jwk) == ({"kty", "crv", "x", "y"} if alg == "ES256" else {"kty", "crv", "x"})


def test_a_proof_at_the_token_endpoint_has_no_ath_and_carries_the_nonce() -> None:
    dpop = DPoP()
    proof = dpop.proof("POST", "http://127.0.0.1:8080/token", nonce="n-1")
    claims, _ = check_proof(proof.token, "POST", "http://127.0.0.1:8080/token", set(), nonce="n-1")
    assert "ath" not in claims and claims["nonce"] == "n-1"


def test_every_proof_is_fresh_and_tampering_fails_the_other_implementation() -> None:
    dpop = DPoP()
    proofs = [dpop.proof("GET", URL, access_token=TOKEN) for _ in range(50)]
    assert len({p.jti for p in proofs}) == 50
    assert len({p.ath for p in proofs}) == 1  # same token, same ath
    seen: set[str] = set()
    check_proof(proofs[0].token, "GET", URL, seen, access_token=TOKEN)
    with pytest.raises(ProofRejected, match="replayed"):
        check_proof(proofs[0].token, "GET", URL, seen, access_token=TOKEN)
    header, payload, signature = proofs[1].token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["htm"] = "DELETE"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(ProofRejected, match="signature"):
        check_proof(f"{header}.{forged}.{signature}", "DELETE", URL, seen, access_token=TOKEN)
    with pytest.raises(ProofRejected, match="ath"):
        check_proof(proofs[2].token, "GET", URL, seen, access_token=TOKEN + "x")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://mcp.example.com/mcp?x=1#y", "https://mcp.example.com/mcp"),
        ("HTTPS://MCP.Example.COM:443/mcp", "https://mcp.example.com/mcp"),
        ("http://127.0.0.1:80/token", "http://127.0.0.1/token"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("https://user:pw@host.example/p", "https://host.example/p"),
        ("http://[::1]:9000/mcp/", "http://[::1]:9000/mcp/"),
    ],
)
def test_htu_is_the_target_uri_without_query_and_fragment(url: str, expected: str) -> None:
    assert htu(url) == expected


@pytest.mark.parametrize("url", ["/relative", "ftp://host/x", "", "https://"])
def test_htu_refuses_what_is_not_an_absolute_http_url(url: str) -> None:
    with pytest.raises(ConfigurationError):
        htu(url)


def test_nonces_are_kept_per_role_and_origin_and_invalid_ones_are_dropped() -> None:
    dpop = DPoP(max_origins=2)
    assert dpop.remember_nonce("as", "https://as.example/token", "as-1")
    assert dpop.remember_nonce("rs", "https://as.example/mcp", "rs-1")  # same origin, other role
    assert dpop.nonce_for("as", "https://as.example/other?q") == "as-1"
    assert dpop.nonce_for("rs", "https://as.example/mcp") == "rs-1"
    assert dpop.nonce_for("rs", "https://other.example/mcp") is None  # never sent to another server
    for bad in ["", 'quote"d', "sp ace", "x" * 513, 7, None]:
        assert not dpop.remember_nonce("rs", "https://as.example/mcp", bad)
        assert not valid_nonce(bad)
    assert dpop.nonce_for("rs", "https://as.example/mcp") == "rs-1"
    dpop.remember_nonce("rs", "https://third.example/mcp", "t")  # bounded: the oldest origin goes
    assert dpop.nonce_for("as", "https://as.example/token") is None
    with pytest.raises(ConfigurationError):
        dpop.proof("POST", URL, nonce="bad nonce")
    with pytest.raises(ConfigurationError):
        dpop.remember_nonce("idp", URL, "n")  # type: ignore[arg-type]


def test_no_key_material_or_proof_in_reprs_and_no_pickling() -> None:
    key = Identity.generate("ES256")
    dpop = DPoP(key)
    proof = dpop.proof("POST", URL, access_token=TOKEN, nonce="nonce-1")
    private_d = key.private_jwk()["d"]
    for text in (repr(dpop), str(dpop), repr(proof)):
        assert private_d not in text and proof.token not in text and TOKEN not in text
        assert "nonce-1" not in text and str(proof.ath) not in text
    assert dpop.thumbprint in repr(dpop)
    with pytest.raises(TypeError):
        pickle.dumps(dpop)
    with pytest.raises(ConfigurationError):
        DPoP("not a key")  # type: ignore[arg-type]


def test_a_fresh_key_is_generated_when_none_is_given() -> None:
    a, b = DPoP(), DPoP.generate("EdDSA")
    assert a.alg == "ES256" and b.alg == "EdDSA" and a.thumbprint != b.thumbprint
    assert thumbprint(a.public_jwk()) == a.thumbprint


def test_access_token_hash_is_rfc9449_ath() -> None:
    # RFC 9449 §7.1 example: the token "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU" has this ath.
    assert access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU") == (
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


# --- the token response ------------------------------------------------------------------------------


def body(token_type: str) -> bytes:
    return json.dumps({"access_token": TOKEN, "token_type": token_type, "expires_in": 60}).encode()


@pytest.mark.parametrize("token_type", ["DPoP", "dpop", "DPOP"])
def test_a_proof_sent_accepts_a_dpop_token(token_type: str) -> None:
    token = parse_token_response(body(token_type), now=0.0, dpop_bound=True)
    assert token.token_type == "DPoP" and token.dpop_bound
    assert token.authorization_header() == f"DPoP {TOKEN}"


@pytest.mark.parametrize("token_type", ["Bearer", "N_A", "mac"])
def test_a_proof_sent_never_accepts_another_token_type(token_type: str) -> None:
    with pytest.raises(DPoPNotBound) as caught:
        parse_token_response(body(token_type), now=0.0, dpop_bound=True)
    assert caught.value.code == "dpop_not_bound" and TOKEN not in str(caught.value)
    assert isinstance(caught.value, InvalidTokenResponse)  # ledgered as a token failure


def test_without_a_proof_a_dpop_token_is_refused() -> None:
    with pytest.raises(InvalidTokenResponse):
        parse_token_response(body("DPoP"), now=0.0)


def test_the_cache_key_names_the_dpop_key_and_binding_is_checked() -> None:
    key = CacheKey("https://idp/token", "g", "c", "alice", None, None, (), (), ())
    a, b = DPoP(), DPoP()
    assert bind_key(key, None) == key
    assert bind_key(key, a) != key and bind_key(key, a) != bind_key(key, b)
    assert bind_key(key, a).dpop == a.thumbprint
    bearer, bound = AccessToken(TOKEN), AccessToken(TOKEN, token_type="DPoP")
    assert check_binding(bound, a) is bound and check_binding(bearer, None) is bearer
    with pytest.raises(DPoPNotBound):
        check_binding(bearer, a)
    with pytest.raises(InvalidTokenResponse):
        check_binding(bound, None)


# --- verify_proof: a resource server's check (RFC 9449 §4.3) -------------------------------------------


def joserfc_proof(claims: dict[str, object], *, alg: str = "ES256", private: bool = False) -> tuple[str, str]:
    """A proof made by another implementation (joserfc), and its key's thumbprint."""
    from joserfc import jws
    from joserfc.jwk import ECKey, OKPKey

    key = ECKey.generate_key("P-256") if alg == "ES256" else OKPKey.generate_key("Ed25519")
    header = {"alg": alg, "typ": "dpop+jwt", "jwk": key.as_dict(private=private)}
    token = jws.serialize_compact(header, json.dumps(claims).encode(), key, algorithms=[alg])
    return token, str(key.thumbprint())


def good_claims(**extra: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "jti": "j-" + "x" * 20,
        "htm": "POST",
        "htu": URL,
        "iat": int(time.time()),
        "ath": access_token_hash(TOKEN),
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_verify_proof_accepts_proofs_of_another_implementation_and_of_ours(alg: str) -> None:
    token, jkt = joserfc_proof(good_claims(), alg=alg)
    verified = verify_proof(token, method="POST", url=URL + "?q=1", access_token=TOKEN, jkt=jkt)
    assert verified.jkt == jkt and verified.jti == "j-" + "x" * 20
    dpop = DPoP(Identity.generate(alg))
    ours = dpop.proof("GET", URL, access_token=TOKEN, nonce="n-7")
    verified = verify_proof(
        ours.token, method="GET", url=URL, access_token=TOKEN, jkt=dpop.thumbprint, nonce="n-7"
    )
    assert verified.jti == ours.jti and verified.nonce == "n-7"


STALE = object()  # stands for "an iat an hour ago", computed when the test runs


@pytest.mark.parametrize(
    ("overrides", "kwargs", "reason"),
    [
        ({"htm": "GET"}, {}, "htm"),
        ({"htu": "https://other.example/mcp"}, {}, "htu"),
        ({"htu": URL + "?x=1"}, {}, "htu"),
        ({"iat": STALE}, {}, "iat"),
        ({"iat": "now"}, {}, "iat"),
        ({"ath": "wrong"}, {}, "ath"),
        ({"ath": None}, {}, "ath"),
        ({"jti": None}, {}, "jti"),
        ({}, {"nonce": "demanded"}, "nonce"),
        ({}, {"jkt": "another-key"}, "key is not the one the token is bound to"),
        ({}, {"access_token": None}, "ath without an access token"),
    ],
)
def test_verify_proof_refuses_each_broken_claim(
    overrides: dict[str, object], kwargs: dict[str, object], reason: str
) -> None:
    if overrides.get("iat") is STALE:
        overrides = {**overrides, "iat": int(time.time()) - 3600}
    token, jkt = joserfc_proof(good_claims(**overrides))
    options: dict[str, object] = {"access_token": TOKEN, "jkt": jkt, **kwargs}
    with pytest.raises(DPoPProofInvalid) as caught:
        verify_proof(token, method="POST", url=URL, **options)  # type: ignore[arg-type]
    assert caught.value.details["reason"] == reason and caught.value.code == "dpop_proof_invalid"
    assert TOKEN not in str(caught.value) and token not in str(caught.value)


def test_verify_proof_refuses_forgeries_private_keys_and_replays() -> None:
    from mcpclient_auth.replay import MemoryReplayStore

    token, jkt = joserfc_proof(good_claims())
    header, _, signature = token.split(".")
    other, _ = joserfc_proof(good_claims(htm="DELETE"))
    forged = f"{header}.{other.split('.')[1]}.{signature}"
    for bad, reason in [
        (forged, "signature"),
        (None, "missing or more than one proof"),
        (f"{token}, {token}", "missing or more than one proof"),
        ("not.a.jws", "not a compact JWS"),
        (joserfc_proof(good_claims(), private=True)[0], "jwk missing or private"),
    ]:
        with pytest.raises(DPoPProofInvalid) as caught:
            verify_proof(bad, method="POST", url=URL, access_token=TOKEN, jkt=None)
        assert caught.value.details["reason"] == reason
    store = MemoryReplayStore()
    verify_proof(token, method="POST", url=URL, access_token=TOKEN, jkt=jkt, replay=store)
    with pytest.raises(ReplayDetected):
        verify_proof(token, method="POST", url=URL, access_token=TOKEN, jkt=jkt, replay=store)


def test_the_run_only_proves_a_bound_token_with_the_key_it_is_bound_to() -> None:
    from types import SimpleNamespace

    from mcpclient_auth._dpop import credential_for
    from mcpclient_auth.errors import DPoPKeyMissing

    a, b = DPoP(), DPoP()
    bound, bearer = AccessToken(TOKEN, token_type="DPoP"), AccessToken(TOKEN)
    credential = credential_for(a, SimpleNamespace(dpop=a), bound)  # type: ignore[arg-type]
    assert credential.dpop is a and credential.header == f"DPoP {TOKEN}" and TOKEN not in repr(credential)
    assert credential_for(None, SimpleNamespace(dpop=b), bound).dpop is b  # type: ignore[arg-type]
    assert credential_for(None, SimpleNamespace(), bearer).dpop is None  # type: ignore[arg-type]
    for required, source, token in [
        (a, SimpleNamespace(dpop=b), bound),  # bound to another key than the run's
        (None, SimpleNamespace(), bound),  # nothing to prove it with
        (None, SimpleNamespace(dpop="not a key"), bound),
        (a, SimpleNamespace(dpop=a), bearer),  # the run requires DPoP: no bearer fallback
    ]:
        with pytest.raises(DPoPKeyMissing) as caught:
            credential_for(required, source, token)  # type: ignore[arg-type]
        assert TOKEN not in str(caught.value) and caught.value.code == "dpop_key_missing"


def test_claims_with_awkward_characters_are_valid_json_and_methods_are_tokens() -> None:
    dpop = DPoP()
    url = 'https://h.example/a"b\\c/\u00fc\u2028?q="x"'
    proof = dpop.proof("PATCH", url, access_token=TOKEN, nonce="!#$%&'()*+,-./:;<=>?@[]^_`{|}~")
    payload = proof.token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["htu"] == 'https://h.example/a"b\\c/\u00fc\u2028' and claims["htm"] == "PATCH"
    assert claims["nonce"] == "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"
    verify_proof(
        proof.token,
        method="PATCH",
        url=url,
        access_token=TOKEN,
        jkt=dpop.thumbprint,
        nonce="!#$%&'()*+,-./:;<=>?@[]^_`{|}~",
    )
    for method in ("GET X", 'P"OST', "", "PÖST"):
        with pytest.raises(ConfigurationError):
            dpop.proof(method, URL)


def test_the_flow_reads_a_dpop_only_challenge_and_a_bearer_one_for_a_bound_token() -> None:
    import httpx

    from mcpclient_auth._hooks.auth import DPOP_NONCE, FAIL, OBTAIN, REOBTAIN, Attempt, verdict

    def answer(status: int, *challenges: str, nonce: str | None = None) -> httpx.Response:
        headers = [("www-authenticate", c) for c in challenges] + ([("dpop-nonce", nonce)] if nonce else [])
        return httpx.Response(status, headers=headers)

    first = Attempt(anonymous=True)  # a DPoP-only server's first 401 names the scope and the metadata
    action, challenge = verdict(first, answer(401, 'DPoP scope="mcp.read", resource_metadata="https://r/m"'))
    assert action == OBTAIN and challenge is not None
    assert challenge.scopes == ("mcp.read",) and challenge.resource_metadata == "https://r/m"
    bound = Attempt()
    bound.token = AccessToken(TOKEN, token_type="DPoP")
    assert verdict(bound, answer(401, 'Bearer error="invalid_token"'))[0] == REOBTAIN
    both = answer(401, 'Bearer realm="x"', 'DPoP error="invalid_token", algs="ES256"')
    assert verdict(bound, both)[0] == REOBTAIN  # the DPoP challenge is the one for a bound token
    bearer = Attempt()
    bearer.token = AccessToken(TOKEN)
    assert verdict(bearer, both)[0] == FAIL  # a bearer token reads the Bearer challenge first
    # use_dpop_nonce is only acted on for a bound token whose source holds the key
    asks = answer(401, 'DPoP error="use_dpop_nonce"', nonce="n-1")
    assert verdict(bound, asks)[0] != DPOP_NONCE  # no source with a key on this attempt
    from types import SimpleNamespace

    bound.source = SimpleNamespace(dpop=DPoP())  # type: ignore[assignment]
    assert verdict(bound, asks)[0] == DPOP_NONCE
    bound.dpop_nonce_resent = True
    assert verdict(bound, asks)[0] == FAIL  # once per request
