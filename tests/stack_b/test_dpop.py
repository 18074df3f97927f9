"""Stack B: DPoP (RFC 9449) on mcp 2.x and httpx2 through the shared request path and 401 flow (mirrors
``tests/e2e/test_dpop_run.py``): proofs checked by the gate with PyJWT + joserfc, the RFC 9421 signature
(covering ``DPoP``) by the guard, ``use_dpop_nonce`` at the AS and the MCP server, ledger ``dpop_jti``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcpclient_auth.adapters.mcp_v2 import open_client
from mcpclient_auth.authz import DPoP
from mcpclient_auth.authz.dpop import access_token_hash
from mcpclient_auth.errors import UpstreamUnauthorized
from mcpclient_auth.ledger import verify_ledger
from tests.support.authz_env import AuthzEnv, authz_server
from tests.support.hooks_env import entries

HANG_GUARD = 60


@pytest.fixture(scope="module")
def env() -> Iterator[AuthzEnv]:
    with authz_server(["alice"]) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(env: AuthzEnv) -> None:
    env.reset()


async def test_proofs_nonces_at_both_servers_and_the_ledger(env: AuthzEnv, tmp_path: Path) -> None:
    env.idp.dpop_nonce = "as-nonce-b"
    env.gate.dpop_nonce = "rs-nonce-b"
    dpop = DPoP(env.agent)
    path = tmp_path / "l.jsonl"
    async with (
        asyncio.timeout(HANG_GUARD),
        env.run("alice", path, token_source=env.exchange(dpop=dpop), dpop=dpop) as run,
        open_client(run) as client,
    ):
        for i in range(2):
            assert not (await client.call_tool("search", {"query": f"q{i}"})).is_error
        token = (await run.token_source.get_token(run.principal)).token  # type: ignore[union-attr]
    # The AS: challenged once, then the proof with its nonce; the token is bound to the agent's key.
    assert [r.dpop is not None for r in env.idp.requests] == [False, True]
    assert env.idp.requests[1].dpop_jkt == dpop.thumbprint
    seen = [s for s in env.gate.seen if s.path.rstrip("/") == "/mcp"]
    challenged = [s for s in seen if s.status == 401]
    assert [s.dpop_error for s in challenged] == ["nonce"]  # once, then remembered
    first, resend = seen[0], seen[1]
    assert first.rpc_method == resend.rpc_method and first.token_number == resend.token_number
    assert first.dpop_proof != resend.dpop_proof and resend.status == 200
    ok = [s for s in seen if s.status == 200]
    assert all(s.scheme == "DPoP" and s.dpop_claims for s in ok)
    assert all(s.dpop_claims["nonce"] == "rs-nonce-b" for s in ok if s.dpop_claims)
    assert {s.dpop_claims["ath"] for s in ok if s.dpop_claims} == {access_token_hash(token)}
    assert len({s.dpop_claims["jti"] for s in ok if s.dpop_claims}) == len(ok)
    assert env.state.rejected == 0, env.state.errors()
    assert all("dpop" in (s.signature_input or "") for s in seen)
    by_ect = {s.ect_jti: s.dpop_claims["jti"] for s in seen if s.ect_jti and s.dpop_claims}
    ects = entries(path, kind="ect")
    assert all(e.meta["dpop_jti"] == by_ect[e.jti] for e in ects if e.jti in by_ect)
    assert verify_ledger(path, env.trust).ok
    assert token not in path.read_text()


async def test_a_server_that_keeps_asking_for_a_nonce_gets_one_resend(env: AuthzEnv, tmp_path: Path) -> None:
    async with (
        asyncio.timeout(HANG_GUARD),
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange(dpop=DPoP())) as run,
        open_client(run) as client,
    ):
        assert not (await client.call_tool("search", {"query": "warm-up"})).is_error
        env.gate.seen.clear()
        env.gate.dpop_nonce, env.gate.dpop_rotate = "rs-x", True
        with pytest.raises(UpstreamUnauthorized):
            await client.call_tool("search", {"query": "q"})
    assert [c.dpop_error for c in env.gate.calls("search")] == ["nonce", "nonce"]
