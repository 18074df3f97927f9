"""ExecutionContextToken._validated takes shortcuts for the common claim shapes (a remembered action
name, one predecessor); held here to the strict checks it replaced, on generated and hostile claims."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth import jose
from mcpclient_auth._claims import (
    audience_list,
    check_action,
    check_hash,
    check_preds,
    check_uuid,
    optional_str,
    require_int,
    require_str,
)
from mcpclient_auth.ect import MAX_PREDS, ExecutionContextToken, _check_ext
from mcpclient_auth.errors import ClaimsInvalid, McpClientAuthError

JTI = "3f0c1f9e-8a7b-4c2d-9e1f-0a1b2c3d4e5f"


def strict(jws: jose.DecodedJWS) -> None:
    """_validated's checks as they were (main at 56f849f)."""
    claims = jws.claims
    require_str(claims, "iss")
    audience_list(claims.get("aud"))
    iat, exp = require_int(claims, "iat"), require_int(claims, "exp")
    if exp <= iat:
        raise ClaimsInvalid("claim 'exp' must be later than 'iat'", claim="exp")
    check_uuid(claims.get("jti"))
    check_action(claims.get("exec_act"))
    if "pred" not in claims and jws.typ == jose.ECT_TYP_LEGACY and "par" in claims:
        check_preds(claims["par"], name="par", max_preds=MAX_PREDS)
    else:
        check_preds(claims.get("pred"), max_preds=MAX_PREDS)
    optional_str(claims, "wid")
    for name in ("inp_hash", "out_hash"):
        if name in claims:
            check_hash(claims[name], name)
    if "ect_ext" in claims:
        _check_ext(claims["ect_ext"])


def outcome(check: Any, jws: jose.DecodedJWS) -> Any:
    try:
        check(jws)
    except McpClientAuthError as exc:
        return type(exc), exc.code, exc.message
    return "ok"


_ACTIONS = st.one_of(
    st.sampled_from(["mcp.search", "mcp.rpc.tools.list", "a..b", "", ".a", "mcp.search ", "1a", "a-b_c.D9"]),
    st.sampled_from([None, 7, ["mcp.search"], {"a": 1}]),
    st.text(max_size=8),
)
_PREDS = st.one_of(
    st.sampled_from([[""], [JTI], ["x"], [5], [None], [JTI, JTI], [], [[JTI]]]),
    st.lists(st.sampled_from([JTI, "x", "", 5, None]), max_size=3),
    st.just([JTI] * 101),
    st.just([str(i) for i in range(101)]),
    st.sampled_from([None, "x", {"a": 1}, (JTI,)]),
)


@settings(max_examples=800, deadline=None)
@given(
    act=st.one_of(st.just("mcp.search"), _ACTIONS),
    preds=_PREDS,
    has_pred=st.booleans(),
    legacy=st.booleans(),
    par=_PREDS,
)
def test_validated_agrees_with_the_strict_checks(act: Any, preds: Any, has_pred: bool, legacy: bool, par: Any) -> None:
    claims: dict[str, Any] = {"iss": "agent", "aud": ["https://hr.example/mcp"], "iat": 10, "exp": 20, "jti": JTI}
    claims["exec_act"] = act
    if has_pred:
        claims["pred"] = preds
    if legacy:
        claims["par"] = par
    typ = jose.ECT_TYP_LEGACY if legacy else jose.ECT_TYP
    jws = jose.DecodedJWS("t", {"typ": typ, "alg": "ES256", "kid": "k"}, claims, b"", b"")
    assert outcome(ExecutionContextToken._validated, jws) == outcome(strict, jws)
    # and again, now that a valid action may have been remembered
    assert outcome(ExecutionContextToken._validated, jws) == outcome(strict, jws)
