"""Interop: mandates and ECTs minted by the SDK are ordinary JWTs to PyJWT, joserfc and FastMCP's
JWTVerifier; and tokens signed by PyJWT verify with the SDK."""

from __future__ import annotations

import time
import uuid

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastmcp.server.auth.providers.jwt import JWTVerifier
from joserfc import jwt as jrfc_jwt
from joserfc.jwk import ECKey, OKPKey

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import ExecutionRecord, Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.keys import Identity, TrustStore
from tests.support.trust import trust_for

AUD = "http://127.0.0.1:8000/mcp"


def pem(identity: Identity) -> str:
    return identity.public.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def tokens(alg: str) -> tuple[Identity, Identity, Mandate, ExecutionContextToken]:
    user, agent = Identity.generate(alg, name="alice"), Identity.generate(alg, name="agent-1")
    mandate = Mandate.issue(
        user, agent=agent, audience=AUD, purpose="Answer HR questions", capabilities=["mcp.search"]
    )
    ect = ExecutionContextToken.mint(
        agent,
        audience=AUD,
        exec_act="mcp.search",
        pred=[mandate.jti],
        wid=mandate.jti,
        inp_hash=sha256_b64url(b"{}"),
    )
    return user, agent, mandate, ect


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_pyjwt_accepts_mandate_and_ect(alg: str) -> None:
    user, agent, mandate, ect = tokens(alg)
    claims = pyjwt.decode(mandate.token, pem(user), algorithms=[alg], audience=AUD, issuer="alice")
    assert claims == mandate.claims
    assert pyjwt.get_unverified_header(mandate.token) == {"alg": alg, "typ": "act+jwt", "kid": user.kid}
    ect_claims = pyjwt.decode(ect.token, pem(agent), algorithms=[alg], audience=AUD, issuer="agent-1")
    assert ect_claims == ect.claims
    # The audience check is real: the same library refuses another audience and another key.
    with pytest.raises(pyjwt.InvalidAudienceError):
        pyjwt.decode(ect.token, pem(agent), algorithms=[alg], audience="https://other/mcp")
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(ect.token, pem(user), algorithms=[alg], audience=AUD)


def test_pyjwt_accepts_an_execution_record() -> None:
    _, agent, mandate, _ = tokens("ES256")
    record = ExecutionRecord.issue(
        agent, mandate, exec_act="mcp.search", pred=[], out_hash=sha256_b64url(b"x"), status="completed"
    )
    claims = pyjwt.decode(record.token, pem(agent), algorithms=["ES256"], audience=AUD)
    assert claims["jti"] == mandate.jti and claims["status"] == "completed"


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # joserfc prefers RFC 9864's "Ed25519"
@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_joserfc_accepts_mandate_and_ect(alg: str) -> None:
    user, agent, mandate, ect = tokens(alg)
    key_type = ECKey if alg == "ES256" else OKPKey
    for token, signer, expected in ((mandate.token, user, mandate.claims), (ect.token, agent, ect.claims)):
        decoded = jrfc_jwt.decode(token, key_type.import_key(signer.public_jwk()), algorithms=[alg])
        assert decoded.claims == expected
        registry = jrfc_jwt.JWTClaimsRegistry(aud={"essential": True, "value": AUD})
        registry.validate(decoded.claims)


async def test_fastmcp_jwt_verifier_accepts_mandate_and_ect() -> None:
    user, agent, mandate, ect = tokens("ES256")
    for token, signer, issuer in ((mandate.token, user, "alice"), (ect.token, agent, "agent-1")):
        verifier = JWTVerifier(public_key=pem(signer), issuer=issuer, audience=AUD, algorithm="ES256")
        access = await verifier.verify_token(token)
        assert access is not None, issuer
        assert access.claims["jti"] in (mandate.jti, ect.jti)
        assert access.expires_at is not None and access.expires_at > time.time()
        # The verifier is not accept-all: wrong audience and wrong issuer are refused.
        other_aud = JWTVerifier(
            public_key=pem(signer), issuer=issuer, audience="https://other/mcp", algorithm="ES256"
        )
        assert await other_aud.verify_token(token) is None
        other_iss = JWTVerifier(public_key=pem(signer), issuer="mallory", audience=AUD, algorithm="ES256")
        assert await other_iss.verify_token(token) is None
    tampered = ect.token[:-6] + ("AAAAAA" if not ect.token.endswith("AAAAAA") else "BBBBBB")
    verifier = JWTVerifier(public_key=pem(agent), issuer="agent-1", audience=AUD, algorithm="ES256")
    assert await verifier.verify_token(tampered) is None


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_sdk_verifies_tokens_signed_by_pyjwt(alg: str) -> None:
    # The other direction: PyJWT's signature (it converts DER to raw r||s itself) verifies with us.
    user, agent = Identity.generate(alg, name="alice"), Identity.generate(alg, name="agent-1")
    now = int(time.time())
    claims = {
        "iss": "alice",
        "sub": "agent-1",
        "aud": AUD,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        "task": {"purpose": "p"},
        "cap": [{"action": "mcp.search"}],
        "cnf": {"jkt": agent.public.thumbprint},
    }
    token = pyjwt.encode(claims, user.private_key, algorithm=alg, headers={"typ": "act+jwt", "kid": user.kid})
    mandate = Mandate.verify(token, trust_for(issuers=[user], agents=[agent]), audience=AUD)
    assert mandate.allows("mcp.search") and mandate.binds(agent)
    ect = pyjwt.encode(
        {"iss": "agent-1", "aud": [AUD], "iat": now, "exp": now + 60, "jti": str(uuid.uuid4()),
         "exec_act": "mcp.search", "pred": [claims["jti"]]},
        agent.private_key,
        algorithm=alg,
        headers={"typ": "exec+jwt", "kid": agent.kid},
    )  # fmt: skip
    assert ExecutionContextToken.verify(ect, TrustStore([agent]), audience=AUD).pred == [claims["jti"]]
