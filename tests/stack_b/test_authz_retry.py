"""Stack B: the 401 re-obtain / 403 step-up flow on mcp 2.x and httpx2 (mirrors
``tests/e2e/test_authz_retry.py``): a real token endpoint, and the verifying FastMCP server behind a
gate that checks whose token each request carries and answers 401 / 403 challenges.

Before #14 step 5 a run with a token source got none of this on httpx2: ``compose_auth`` returned
the caller's ``auth`` for any library but httpx, so a 401 was final and the stale token stayed cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from mcpclient_auth._hooks import library_for
from mcpclient_auth.adapters.mcp_v2 import open_client
from mcpclient_auth.errors import InsufficientScope, UpstreamUnauthorized
from mcpclient_auth.factory import httpx2_client_factory
from mcpclient_auth.ledger import verify_ledger
from tests.support.authz_env import AuthzEnv, authz_server
from tests.support.hooks_env import entries

HANG_GUARD = 60
SEARCH = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {"name": "search", "arguments": {"query": "x"}},
}
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def env() -> Iterator[AuthzEnv]:
    with authz_server(["alice"]) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(env: AuthzEnv) -> None:
    env.reset()


async def settled(client: Any, env: AuthzEnv) -> int:
    """One warm-up call; returns the issue number of the token the client uses."""
    assert not (await client.call_tool("search", {"query": "warm-up"})).is_error
    number = max(s.token_number or 0 for s in env.gate.seen)
    env.gate.seen.clear()
    return number


async def test_the_httpx2_client_carries_the_run_auth(env: AuthzEnv, tmp_path: Path) -> None:
    async with env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange()) as run:
        client = httpx2_client_factory(run)(headers=MCP_HEADERS)
        async with client:
            library = library_for(client)
            assert isinstance(client.auth, library.auth) and isinstance(client.auth, httpx2.Auth)


async def test_401_invalid_token_re_obtains_once_and_the_resend_is_freshly_signed(
    env: AuthzEnv, tmp_path: Path
) -> None:
    path = tmp_path / "l.jsonl"
    async with (
        asyncio.timeout(HANG_GUARD),
        env.run("alice", path, token_source=env.exchange()) as run,
        open_client(run) as client,
    ):
        number = await settled(client, env)
        env.gate.revoked.add(number)  # the server revokes the token the client has been using
        result = await client.call_tool("search", {"query": "revoked"})
        assert env.idp.count == 2  # one re-obtain
    assert not result.is_error
    first, second = env.gate.calls("search")
    assert (first.token_number, first.status) == (number, 401)
    assert second.token_number not in (None, number) and second.status == 200
    assert first.ect_jti and second.ect_jti and first.ect_jti != second.ect_jti
    assert first.signature_input != second.signature_input
    assert env.state.rejected == 0, env.state.errors()
    statuses = {e.jti: e.meta["status"] for e in entries(path, kind="response")}
    assert statuses[first.ect_jti] == 401 and statuses[second.ect_jti] == 200
    assert verify_ledger(path, env.trust).ok


async def test_second_401_is_a_typed_refusal_and_the_client_survives(env: AuthzEnv, tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    async with (
        asyncio.timeout(HANG_GUARD),
        env.run("alice", path, token_source=env.exchange()) as run,
        open_client(run) as client,
    ):
        await settled(client, env)
        env.gate.revoked_users.add("alice")
        with pytest.raises(UpstreamUnauthorized) as info:
            await client.call_tool("search", {"query": "twice"})
        assert [c.status for c in env.gate.calls()] == [401, 401]  # one resend, no more
        env.gate.revoked_users.clear()
        assert not (await client.call_tool("search", {"query": "again"})).is_error
    assert info.value.code == "upstream_unauthorized"
    assert [d.meta["code"] for d in entries(path, kind="denial")] == ["upstream_unauthorized"]
    assert verify_ledger(path, env.trust).ok


async def test_second_401_raises_from_a_plain_httpx2_client(env: AuthzEnv, tmp_path: Path) -> None:
    env.gate.revoked_users.add("alice")
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange()) as run,
        httpx2_client_factory(run, answer_locally=False)(headers=MCP_HEADERS) as client,
    ):
        with pytest.raises(UpstreamUnauthorized):
            await client.post(run.endpoints[0], json=SEARCH)
    assert [c.status for c in env.gate.calls()] == [401, 401]


async def test_403_insufficient_scope_steps_up_once_with_the_union(env: AuthzEnv, tmp_path: Path) -> None:
    env.gate.required_scopes = frozenset({"mcp.read", "mcp.write"})
    source = env.exchange(scopes=["mcp.read"])
    allowed = ["mcp.read", "mcp.write"]
    async with (
        asyncio.timeout(HANG_GUARD),
        env.run("alice", tmp_path / "l.jsonl", token_source=source, allowed_scopes=allowed) as run,
        open_client(run) as client,
    ):
        first = await client.call_tool("search", {"query": "one"})
        second = await client.call_tool("search", {"query": "two"})
    assert not first.is_error and not second.is_error
    asked = [r.form.get("scope") for r in env.idp.requests]
    assert asked == [["mcp.read"], ["mcp.read mcp.write"]]  # one step-up, with the union
    assert [s.status for s in env.gate.seen if s.status == 403] == [403]


async def test_second_403_is_a_typed_refusal(env: AuthzEnv, tmp_path: Path) -> None:
    source = env.exchange(scopes=["mcp.read"])
    path = tmp_path / "l.jsonl"
    allowed = ["mcp.read", "mcp.write", "mcp.admin"]
    async with (
        asyncio.timeout(HANG_GUARD),
        env.run("alice", path, token_source=source, allowed_scopes=allowed) as run,
        open_client(run) as client,
    ):
        await settled(client, env)
        env.gate.required_scopes = frozenset({"mcp.write", "mcp.admin"})
        env.gate.challenge_scopes = frozenset({"mcp.write"})
        with pytest.raises(InsufficientScope) as info:
            await client.call_tool("search", {"query": "admin"})
        assert [c.status for c in env.gate.calls()] == [403, 403]
    assert info.value.details["scopes"] == ["mcp.write"]
    assert [d.meta["code"] for d in entries(path, kind="denial")] == ["insufficient_scope"]
