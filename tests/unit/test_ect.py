"""ect: ExecutionContextToken mint / decode / verify, limits, legacy typ, replay."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

import pytest

from mcpclient_auth import jose
from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.ect import MAX_EXT_BYTES, MAX_PREDS, ExecutionContextToken
from mcpclient_auth.errors import (
    AudienceMismatch,
    ClaimsInvalid,
    ExtensionTooLarge,
    InvalidTokenType,
    ReplayDetected,
    TokenExpired,
    TokenNotYetValid,
    TokenSignatureInvalid,
)
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.replay import ReplayCache

AUD = "https://mcp.example/mcp"
NOW = 1_800_000_000.0
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}'
H = sha256_b64url(BODY)
ROOT = str(uuid.uuid4())


@pytest.fixture(scope="module")
def agent() -> Identity:
    return Identity.generate("ES256", name="agent-1")


@pytest.fixture(scope="module")
def trust(agent: Identity) -> TrustStore:
    return TrustStore([agent])


def mint(agent: Identity, **kw: Any) -> ExecutionContextToken:
    args: dict[str, Any] = {
        "audience": AUD,
        "exec_act": "mcp.search",
        "pred": [ROOT],
        "wid": ROOT,
        "now": NOW,
    }
    args.update(kw)
    return ExecutionContextToken.mint(agent, **args)


def claims_of(agent: Identity, **changes: Any) -> dict[str, Any]:
    claims = dict(mint(agent).claims)
    claims["jti"] = str(uuid.uuid4())
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_mint_claims_and_header(agent: Identity, trust: TrustStore) -> None:
    ect = mint(agent, inp_hash=H, out_hash=H, ect_ext={"trace": {"id": "t-1"}})
    v = ExecutionContextToken.verify(ect.token, trust, audience=AUD, now=NOW)
    assert list(v.claims) == [
        "iss",
        "aud",
        "iat",
        "exp",
        "jti",
        "wid",
        "exec_act",
        "pred",
        "inp_hash",
        "out_hash",
        "ect_ext",
    ]
    assert v.claims["aud"] == [AUD] and v.aud == [AUD]
    assert (v.iss, v.iat, v.exp) == ("agent-1", int(NOW), int(NOW) + 600)
    assert uuid.UUID(v.jti).version == 4 and str(uuid.UUID(v.jti)) == v.jti
    assert (v.wid, v.exec_act, v.pred, v.inp_hash, v.out_hash) == (ROOT, "mcp.search", [ROOT], H, H)
    assert v.ect_ext == {"trace": {"id": "t-1"}}
    assert v.header == ect.header == {"alg": "ES256", "typ": "exec+jwt", "kid": agent.kid}
    assert v.signer is not None and v.signer.kid == agent.kid
    assert ect.token not in repr(ect)


def test_minimal_mint_and_eddsa() -> None:
    ed = Identity.generate("EdDSA", name="ed")
    ect = ExecutionContextToken.mint(ed, audience=[AUD, "b"], exec_act="mcp.rpc.tools.list", pred=[])
    v = ExecutionContextToken.verify(ect.token, TrustStore([ed]), audience="b")
    assert v.pred == [] and v.wid is None and v.inp_hash is None and "ect_ext" not in v.claims
    assert v.header["alg"] == "EdDSA"


def test_jtis_are_unique_uuid4(agent: Identity) -> None:
    jtis = {mint(agent).jti for _ in range(200)}
    assert len(jtis) == 200
    assert all(uuid.UUID(j).version == 4 and uuid.UUID(j).variant == uuid.RFC_4122 for j in jtis)


@pytest.mark.parametrize(
    "bad",
    [
        H + "=",
        "sha-256:" + H,
        "sha-256=:" + base64.b64encode(hashlib.sha256(BODY).digest()).decode() + ":",
        hashlib.sha256(BODY).hexdigest(),
        sha256_b64url(BODY)[:-1],
        base64.urlsafe_b64encode(hashlib.sha256(BODY).digest()[:31]).rstrip(b"=").decode(),
        H[:-1] + ("B" if H[-1] != "B" else "C"),  # non-canonical: stray low bits
        H[:10] + "+" + H[11:],
        "",
    ],
)
def test_hash_format_is_enforced(agent: Identity, trust: TrustStore, bad: str) -> None:
    with pytest.raises(ClaimsInvalid):
        mint(agent, inp_hash=bad)
    with pytest.raises(ClaimsInvalid):
        mint(agent, out_hash=bad)
    token = jose.encode(agent, jose.ECT_TYP, claims_of(agent, inp_hash=bad))
    with pytest.raises(ClaimsInvalid):
        ExecutionContextToken.verify(token, trust, now=NOW)


def test_pred_limits(agent: Identity, trust: TrustStore) -> None:
    preds = [str(uuid.uuid4()) for _ in range(MAX_PREDS + 1)]
    assert len(mint(agent, pred=preds[:MAX_PREDS]).pred) == MAX_PREDS
    for bad in (preds, [ROOT, ROOT], [""], [1], ROOT):
        with pytest.raises(ClaimsInvalid):
            mint(agent, pred=bad)
    for bad_claim in (preds, [ROOT, ROOT], "x", None):
        token = jose.encode(agent, jose.ECT_TYP, claims_of(agent, pred=bad_claim))
        with pytest.raises(ClaimsInvalid):
            ExecutionContextToken.verify(token, trust, now=NOW)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def test_ect_ext_limits(agent: Identity, trust: TrustStore) -> None:
    mint(agent, ect_ext=_nested(5))
    mint(agent, ect_ext={"a": [[[[1]]]]})  # the object, then 4 levels of lists: depth 5
    filler = "x" * (MAX_EXT_BYTES - len('{"f":""}'))
    assert len(mint(agent, ect_ext={"f": filler}).claims["ect_ext"]["f"]) == len(filler)
    cases = [_nested(6), {"a": [[[[[1]]]]]}, {"f": filler + "x"}, {"f": "é" * (MAX_EXT_BYTES // 2)}]
    for too_big in cases:
        with pytest.raises(ExtensionTooLarge) as info:
            mint(agent, ect_ext=too_big)
        assert info.value.code == "ect_ext_too_large"
        token = jose.encode(agent, jose.ECT_TYP, claims_of(agent, ect_ext=too_big))
        with pytest.raises(ExtensionTooLarge):
            ExecutionContextToken.verify(token, trust, now=NOW)
    with pytest.raises(ExtensionTooLarge):  # tuples are arrays once serialised
        mint(agent, ect_ext={"a": ((((((1,),),),),),)})
    # Far beyond the recursion limit: refused by the depth walk, before any JSON encoding.
    with pytest.raises(ExtensionTooLarge):
        mint(agent, ect_ext=_nested(50_000))
    for not_object in ([1], "x"):
        token = jose.encode(agent, jose.ECT_TYP, claims_of(agent, ect_ext=not_object))
        with pytest.raises(ClaimsInvalid):
            ExecutionContextToken.verify(token, trust, now=NOW)
    with pytest.raises(ClaimsInvalid):
        mint(agent, ect_ext={"x": object()})


@pytest.mark.parametrize(
    "change",
    [
        {"iss": None},
        {"aud": None},
        {"aud": []},
        {"iat": None},
        {"exp": 1.5},
        {"exp": int(NOW) - 10},
        {"jti": "abc"},
        {"jti": None},
        {"exec_act": None},
        {"exec_act": "mcp..x"},
        {"wid": 3},
    ],
)
def test_required_and_typed_claims(agent: Identity, trust: TrustStore, change: dict[str, Any]) -> None:
    claims = claims_of(agent)
    for name, value in change.items():
        if value is None:
            del claims[name]
        else:
            claims[name] = value
    with pytest.raises(ClaimsInvalid):
        ExecutionContextToken.verify(jose.encode(agent, jose.ECT_TYP, claims), trust, now=NOW)


def test_mint_refuses_bad_values(agent: Identity) -> None:
    bad_values: list[dict[str, Any]] = [
        {"exec_act": "not an action"},
        {"exec_act": ""},
        {"audience": []},
        {"audience": [""]},
        {"jti": "123"},
        {"wid": ""},
        {"ttl": 0},
    ]
    for kw in bad_values:
        with pytest.raises(ClaimsInvalid):
            mint(agent, **kw)


def test_action_check_memo_is_bounded_and_never_admits_bad_names(agent: Identity) -> None:
    from mcpclient_auth.ect import _checked_actions

    for i in range(_checked_actions.limit + 10):
        mint(agent, exec_act=f"mcp.tool{i}")
        assert len(_checked_actions) <= _checked_actions.limit
    for bad in ("mcp.bad name", ["mcp.search"], None):
        with pytest.raises(ClaimsInvalid):
            mint(agent, exec_act=bad)
    assert "mcp.bad name" not in _checked_actions


def test_aud_as_string_on_input(agent: Identity, trust: TrustStore) -> None:
    token = jose.encode(agent, jose.ECT_TYP, claims_of(agent, aud=AUD))
    assert ExecutionContextToken.verify(token, trust, audience=AUD, now=NOW).aud == [AUD]


def test_legacy_typ_and_par(agent: Identity, trust: TrustStore) -> None:
    legacy = jose.encode(agent, jose.ECT_TYP_LEGACY, claims_of(agent))
    assert ExecutionContextToken.verify(legacy, trust, now=NOW).header["typ"] == "wimse-exec+jwt"
    par = claims_of(agent, par=[ROOT])
    del par["pred"]
    v = ExecutionContextToken.verify(jose.encode(agent, jose.ECT_TYP_LEGACY, par), trust, now=NOW)
    assert v.pred == [ROOT]
    # "par" is only the -00 name: a current-typ token must say "pred".
    with pytest.raises(ClaimsInvalid):
        ExecutionContextToken.verify(jose.encode(agent, jose.ECT_TYP, par), trust, now=NOW)


def test_typ_swap_and_time(agent: Identity, trust: TrustStore) -> None:
    user = Identity.generate(name="u")
    mandate = Mandate.issue(user, agent=agent, audience=AUD, purpose="p", capabilities=["mcp.a"], now=NOW)
    with pytest.raises(InvalidTokenType):
        ExecutionContextToken.verify(mandate.token, TrustStore([user]), now=NOW)
    with pytest.raises(InvalidTokenType):
        ExecutionContextToken.decode(mandate.token)
    ect = mint(agent, ttl=3600)
    ExecutionContextToken.verify(ect.token, trust, now=NOW + 900 + 60)  # exactly at max age + skew
    with pytest.raises(TokenNotYetValid):  # older than max_age, although exp is still ahead
        ExecutionContextToken.verify(ect.token, trust, now=NOW + 900 + 61)
    ExecutionContextToken.verify(ect.token, trust, now=NOW + 2000, max_age=None)
    with pytest.raises(TokenExpired):
        ExecutionContextToken.verify(ect.token, trust, now=NOW + 3600 + 60, max_age=None)
    with pytest.raises(TokenNotYetValid):
        ExecutionContextToken.verify(ect.token, trust, now=NOW - 61)
    with pytest.raises(AudienceMismatch):
        ExecutionContextToken.verify(ect.token, trust, audience="https://evil/mcp", now=NOW)
    ExecutionContextToken.verify(ect.token, trust, now=NOW + 10**6, verify_time=False)


def test_replay_is_detected_and_scoped_to_wid(agent: Identity, trust: TrustStore) -> None:
    cache = ReplayCache()
    jti = str(uuid.uuid4())
    first = mint(agent, jti=jti, wid="run-a")
    seen = ExecutionContextToken.verify(first.token, trust, now=NOW, replay=cache)
    with pytest.raises(ReplayDetected) as info:
        ExecutionContextToken.verify(first.token, trust, now=NOW + 1, replay=cache)
    assert info.value.code == "replay_detected" and first.token not in str(info.value)
    # The same jti in another workflow is another task.
    ExecutionContextToken.verify(mint(agent, jti=jti, wid="run-b").token, trust, now=NOW, replay=cache)
    # Once the token could no longer be accepted anyway, the cache forgets it.
    claim = seen.replay_claim()
    assert claim.partition == agent.public.thumbprint  # charged to the signing key
    assert cache.contains(claim, now=NOW + 600 + 59)
    assert not cache.contains(claim, now=NOW + 600 + 60)


def test_invalid_tokens_never_enter_the_replay_cache(agent: Identity, trust: TrustStore) -> None:
    cache = ReplayCache()
    ect = mint(agent)
    header, payload, sig = ect.token.split(".")
    forged = f"{header}.{payload}.{sig[:5]}{'A' if sig[5] != 'A' else 'B'}{sig[6:]}"
    with pytest.raises(TokenSignatureInvalid):
        ExecutionContextToken.verify(forged, trust, now=NOW, replay=cache)
    with pytest.raises(AudienceMismatch):
        ExecutionContextToken.verify(ect.token, trust, audience="x", now=NOW, replay=cache)
    assert len(cache) == 0
    ExecutionContextToken.verify(ect.token, trust, now=NOW, replay=cache)
    assert len(cache) == 1


def test_decode_does_not_verify(agent: Identity) -> None:
    ect = mint(agent)
    stranger_view = ExecutionContextToken.decode(ect.token)
    assert stranger_view.jti == ect.jti and stranger_view.signer is None
