"""DPoP (RFC 9449) on the request path, end to end (issue #15): a real token endpoint that binds tokens
to the proof key, and the verifying FastMCP server behind a gate that checks every proof with a second
implementation (PyJWT + joserfc) and the RFC 9421 signature with the SDK's verifier (which must cover
the ``DPoP`` header). ``Authorization: DPoP``, a fresh proof per send (401 resends and redirect hops
included, ``ath`` bound to the token), ``use_dpop_nonce`` at the AS and at the MCP server, the proof's
``jti`` in the ledger, nothing secret anywhere."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcpclient_auth import DPoP
from mcpclient_auth.adapters.mcp_v1 import open_session
from mcpclient_auth.authz import StaticTokens
from mcpclient_auth.authz.dpop import access_token_hash
from mcpclient_auth.errors import ConfigurationError, DPoPKeyMissing, McpClientAuthError, UpstreamUnauthorized
from mcpclient_auth.ledger import verify_ledger
from tests.support.authz_env import CLIENT_SECRET, AuthzEnv, GateSeen, authz_server, subject_token
from tests.support.hooks_env import entries

pytestmark = pytest.mark.e2e

SENTINELS = (subject_token("alice"), CLIENT_SECRET)


@pytest.fixture(scope="module")
def env() -> Iterator[AuthzEnv]:
    with authz_server(["alice"]) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(env: AuthzEnv) -> None:
    env.reset()
    env.state.redirect_slash = False


def to_mcp(env: AuthzEnv) -> list[GateSeen]:
    return [s for s in env.gate.seen if s.path.rstrip("/") == "/mcp"]


def claims_of(seen: GateSeen) -> dict[str, Any]:
    """The claims of the proof a request carried (also one the gate refused), unverified."""
    assert seen.dpop_proof is not None
    payload = seen.dpop_proof.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for inner in group.exceptions for leaf in leaves(inner)]
    return [group]


async def settle(session: Any, env: AuthzEnv) -> None:
    """mcp 1.x sends notifications/initialized and opens its GET stream after initialize() returns."""
    for _ in range(300):
        if any(s.method == "GET" for s in env.gate.seen):
            return
        await asyncio.sleep(0.01)


async def test_every_send_carries_a_fresh_valid_proof_bound_to_the_token(
    env: AuthzEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dpop = DPoP(env.agent)  # the agent's own key proves the token
    path = tmp_path / "l.jsonl"
    async with (
        env.run("alice", path, token_source=env.exchange(dpop=dpop), dpop=dpop) as run,
        open_session(run) as session,
    ):
        await settle(session, env)
        for i in range(3):
            assert not (await session.call_tool("search", {"query": f"q{i}"})).isError
    seen = to_mcp(env)
    assert {s.method for s in seen} >= {"POST", "GET", "DELETE"}
    assert all(s.scheme == "DPoP" and s.status < 400 for s in seen), [(s.method, s.dpop_error) for s in seen]
    claims = [s.dpop_claims for s in seen]
    assert all(c is not None for c in claims)
    assert len({c["jti"] for c in claims if c}) == len(seen)  # a fresh proof per send
    token = (await run.token_source.get_token(run.principal)).token  # type: ignore[union-attr]
    assert {c["ath"] for c in claims if c} == {access_token_hash(token)}
    assert {(s.method, c["htm"]) for s, c in zip(seen, claims, strict=True) if c} == {
        (m, m) for m in {s.method for s in seen}
    }
    assert {c["htu"] for c in claims if c} == {env.url}
    # The token endpoint got a proof too, and bound the token to the agent's key.
    (token_request,) = env.idp.requests
    assert token_request.dpop_jkt == dpop.thumbprint == env.agent.public.thumbprint
    # The guard verified every request's RFC 9421 signature, which covers the DPoP header.
    assert env.state.rejected == 0, env.state.errors()
    assert all("dpop" in (s.signature_input or "") for s in seen)
    # The ledger records each call's proof jti (additive meta), and verifies.
    ects = entries(path, kind="ect")
    by_ect = {s.ect_jti: s.dpop_claims["jti"] for s in seen if s.ect_jti and s.dpop_claims}
    assert ects and all(e.meta["dpop_jti"] == by_ect[e.jti] for e in ects)
    assert verify_ledger(path, env.trust).ok
    text = path.read_text() + caplog.text
    assert token not in text and all(s.dpop_proof not in text for s in seen if s.dpop_proof)
    assert all(sentinel not in text for sentinel in SENTINELS)


async def test_use_dpop_nonce_at_the_mcp_server_resends_once_with_a_fresh_proof(
    env: AuthzEnv, tmp_path: Path
) -> None:
    env.gate.dpop_nonce = "rs-nonce-1"
    dpop = DPoP()
    path = tmp_path / "l.jsonl"
    async with (
        env.run("alice", path, token_source=env.exchange(dpop=dpop)) as run,
        open_session(run) as session,
    ):
        await settle(session, env)
        assert not (await session.call_tool("search", {"query": "after the nonce"})).isError
    seen = to_mcp(env)
    challenged = [s for s in seen if s.status == 401]
    assert [s.dpop_error for s in challenged] == ["nonce"]  # once: the nonce is remembered after it
    first, resend = seen[0], seen[1]
    assert first.rpc_method == resend.rpc_method == "initialize" and resend.status == 200
    assert resend.dpop_claims is not None and resend.dpop_claims["nonce"] == "rs-nonce-1"
    challenged_claims, resent_claims = claims_of(first), claims_of(resend)
    assert challenged_claims["jti"] != resent_claims["jti"]  # a fresh proof ...
    assert challenged_claims["ath"] == resent_claims["ath"]  # ... for the same token, not a re-obtain
    assert "nonce" not in challenged_claims and first.token_number == resend.token_number
    assert all(s.dpop_claims and s.dpop_claims["nonce"] == "rs-nonce-1" for s in seen[1:])
    assert env.idp.count == 1 and dpop.nonce_for("as", env.idp.token_url) is None
    assert env.state.rejected == 0, env.state.errors()
    # Both sends of initialize are in the ledger, each with the jti of its own proof.
    jtis = [e.meta["dpop_jti"] for e in entries(path, kind="ect") if e.meta["method"] == "initialize"]
    assert len(jtis) == 2 and jtis[1] == resend.dpop_claims["jti"]
    assert verify_ledger(path, env.trust).ok


async def test_nonces_at_the_as_and_the_mcp_server_are_kept_apart(env: AuthzEnv, tmp_path: Path) -> None:
    env.idp.dpop_nonce = "as-nonce"
    env.gate.dpop_nonce = "rs-nonce"
    dpop = DPoP()
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange(dpop=dpop)) as run,
        open_session(run) as session,
    ):
        assert not (await session.call_tool("search", {"query": "q"})).isError
    assert [r.dpop is None for r in env.idp.requests] == [True, False]  # AS: challenged, then with nonce
    assert env.idp.requests[1].dpop is not None and env.idp.requests[1].dpop["nonce"] == "as-nonce"
    nonces = {s.dpop_claims["nonce"] for s in to_mcp(env) if s.dpop_claims}
    assert nonces == {"rs-nonce"}  # the AS nonce never went to the MCP server


async def test_a_nonce_handed_out_on_success_is_used_next(env: AuthzEnv, tmp_path: Path) -> None:
    env.gate.dpop_next_nonce = "rs-next"
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange(dpop=DPoP())) as run,
        open_session(run) as session,
    ):
        await settle(session, env)
        assert not (await session.call_tool("search", {"query": "q"})).isError
    seen = to_mcp(env)
    assert all(s.status < 400 for s in seen), [(s.method, s.dpop_error) for s in seen]
    assert seen[0].dpop_claims is not None and "nonce" not in seen[0].dpop_claims
    later = [s for s in seen if s.rpc_method == "tools/call"]
    assert later and all(s.dpop_claims and s.dpop_claims["nonce"] == "rs-next" for s in later)


async def test_a_server_that_keeps_asking_for_a_nonce_is_refused_typed_not_looped(
    env: AuthzEnv, tmp_path: Path
) -> None:
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange(dpop=DPoP())) as run,
        open_session(run) as session,
    ):
        await settle(session, env)
        env.gate.seen.clear()
        env.gate.dpop_nonce, env.gate.dpop_rotate = "rs-a", True  # every nonce is already stale
        with pytest.raises(UpstreamUnauthorized) as caught:
            await session.call_tool("search", {"query": "q"})
    calls = env.gate.calls("search")
    assert len(calls) == 2 and all(c.dpop_error == "nonce" for c in calls)  # one resend, then stop
    assert caught.value.details.get("error") == "use_dpop_nonce"


async def test_a_401_invalid_token_reobtains_and_proves_the_new_token(env: AuthzEnv, tmp_path: Path) -> None:
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange(dpop=DPoP())) as run,
        open_session(run) as session,
    ):
        await settle(session, env)
        first_number = max(s.token_number or 0 for s in env.gate.seen)
        env.gate.revoked.add(first_number)  # answered with a DPoP invalid_token challenge
        env.gate.seen.clear()
        assert not (await session.call_tool("search", {"query": "q"})).isError
    rejected, accepted = env.gate.calls("search")
    assert rejected.status == 401 and accepted.status == 200
    assert accepted.token_number != rejected.token_number  # re-obtained after the DPoP challenge
    assert rejected.dpop_claims and accepted.dpop_claims
    assert rejected.dpop_claims["ath"] != accepted.dpop_claims["ath"]  # the proof names the new token
    assert rejected.dpop_claims["jti"] != accepted.dpop_claims["jti"]
    assert env.idp.count == 2 and all(r.dpop is not None for r in env.idp.requests)


async def test_a_redirect_hop_gets_its_own_proof(env: AuthzEnv, tmp_path: Path) -> None:
    env.state.redirect_slash = True  # 307 /mcp -> /mcp/
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange(dpop=DPoP())) as run,
        open_session(run, client_kwargs={"follow_redirects": True}) as session,
    ):
        assert not (await session.call_tool("search", {"query": "q"})).isError
    hops = [s for s in env.gate.seen if s.rpc_method == "tools/call"]
    assert [s.path for s in hops] == ["/mcp", "/mcp/"]
    first, second = (s.dpop_claims for s in hops)
    assert first and second and first["jti"] != second["jti"]
    assert first["htu"] == env.url and second["htu"] == env.url + "/"
    assert env.state.rejected == 0, env.state.errors()


async def test_a_run_that_requires_dpop_refuses_a_bearer_source(env: AuthzEnv, tmp_path: Path) -> None:
    dpop = DPoP()
    with pytest.raises(ConfigurationError):
        env.run("alice", tmp_path / "a.jsonl", token_source=env.exchange(), dpop=dpop)
    with pytest.raises(ConfigurationError):
        env.run("alice", tmp_path / "b.jsonl", token_source=env.exchange(dpop=DPoP()), dpop=dpop)
    # A source that does not say which key it proves with (StaticTokens) is judged per token: its
    # bearer token is refused before anything is sent.
    path = tmp_path / "c.jsonl"
    run = env.run("alice", path, token_source=StaticTokens({"alice": "static-bearer"}), dpop=dpop)
    try:
        async with open_session(run):
            pass
    except BaseException as exc:  # mcp wraps the refusal of initialize in its task groups
        errors = [leaf for leaf in leaves(exc) if isinstance(leaf, McpClientAuthError)]
        assert errors and all(isinstance(e, DPoPKeyMissing) for e in errors)
    else:
        raise AssertionError("the session opened with a bearer token under dpop=")
    finally:
        run.close()
    assert to_mcp(env) == []  # nothing reached the MCP server
    assert [e.meta["code"] for e in entries(path, kind="denial")][:1] == ["dpop_key_missing"]
