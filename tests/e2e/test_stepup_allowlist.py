"""Issue 12, finding 5: a server cannot make the client ask the identity provider for any scope.

A real token endpoint (tests/support/idp.py) and the verifying FastMCP server behind a gate that answers
403 ``insufficient_scope`` with the scopes a test names. A step-up only asks for scopes in the run's
allowlist (``allowed_scopes=``; default the configured scopes plus RFC 9728 ``scopes_supported``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcpclient_auth.adapters.mcp_v1 import open_session
from mcpclient_auth.errors import ConfigurationError, InsufficientScope, ScopeNotAllowed
from mcpclient_auth.factory import httpx_client_factory
from mcpclient_auth.ledger import verify_ledger
from tests.support.authz_env import AuthzEnv, authz_server
from tests.support.hooks_env import entries

pytestmark = pytest.mark.e2e

FOREIGN = frozenset({"payroll.admin", "directory.write"})
MCP_HEADERS = {"accept": "application/json, text/event-stream"}
SEARCH = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {"name": "search", "arguments": {"query": "x"}},
}


async def settled(session: Any, env: AuthzEnv) -> None:
    """Let the session finish setting up (mcp opens its GET stream after ``initialize()`` returns)."""
    await session.call_tool("search", {"query": "warm-up"})
    for _ in range(200):
        if any(s.method == "GET" for s in env.gate.seen):
            break
        await asyncio.sleep(0.01)
    env.gate.seen.clear()


@pytest.fixture(scope="module")
def env() -> Iterator[AuthzEnv]:
    with authz_server(["alice"]) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(env: AuthzEnv) -> None:
    env.reset()


def asked_scopes(env: AuthzEnv) -> list[list[str] | None]:
    return [r.form.get("scope") for r in env.idp.requests]


async def test_a_403_demanding_foreign_scopes_never_reaches_the_idp(env: AuthzEnv, tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    source = env.exchange(scopes=["mcp.read"])
    async with env.run("alice", path, token_source=source) as run, open_session(run) as session:
        await settled(session, env)
        env.gate.required_scopes = frozenset({"mcp.read"}) | FOREIGN
        with pytest.raises(ScopeNotAllowed) as info:
            await session.call_tool("search", {"query": "payroll"})
        assert [c.status for c in env.gate.calls()] == [403]  # no resend
        env.gate.required_scopes = frozenset()
        assert not (await session.call_tool("search", {"query": "fine"})).isError  # the session survived
    assert asked_scopes(env) == [["mcp.read"]]  # the IdP was never asked for the foreign scopes
    assert isinstance(info.value, InsufficientScope) and info.value.code == "scope_not_allowed"
    assert sorted(info.value.details["scopes"]) == sorted(FOREIGN)
    denials = entries(path, kind="denial")
    assert [(d.meta["code"], d.meta["tool"]) for d in denials] == [("scope_not_allowed", "search")]
    assert verify_ledger(path, env.trust).ok


async def test_plain_httpx_gets_the_typed_error_and_a_denial(env: AuthzEnv, tmp_path: Path) -> None:
    env.gate.required_scopes = FOREIGN
    path = tmp_path / "l.jsonl"
    async with (
        env.run("alice", path, token_source=env.exchange(scopes=["mcp.read"])) as run,
        httpx_client_factory(run, answer_locally=False)(headers=MCP_HEADERS) as client,
    ):
        with pytest.raises(ScopeNotAllowed):
            await client.post(run.endpoints[0], json=SEARCH)
    assert asked_scopes(env) == [["mcp.read"]]
    assert [d.meta["code"] for d in entries(path, kind="denial")] == ["scope_not_allowed"]


async def test_scopes_the_resource_metadata_advertises_may_be_stepped_up_to(
    env: AuthzEnv, tmp_path: Path
) -> None:
    env.idp.metadata = {
        "resource": env.url,
        "authorization_servers": [env.idp.base_url],
        "scopes_supported": ["mcp.read", "mcp.write"],
    }
    env.gate.resource_metadata = f"{env.idp.base_url}/.well-known/oauth-protected-resource/mcp"
    env.gate.required_audience = env.url
    source = env.exchange(scopes=["mcp.read"])
    run = env.run("alice", tmp_path / "l.jsonl", token_source=source, discover_resource_metadata=True)
    async with run, open_session(run) as session:
        await settled(session, env)
        env.gate.required_scopes = frozenset({"mcp.read", "mcp.write"})
        assert not (await session.call_tool("search", {"query": "write"})).isError  # advertised: stepped up
        env.gate.required_scopes = frozenset({"mcp.read", "mcp.write", "payroll.admin"})
        with pytest.raises(ScopeNotAllowed):
            await session.call_tool("search", {"query": "payroll"})  # not advertised: refused
    assert all("payroll.admin" not in " ".join(scopes or []) for scopes in asked_scopes(env))
    assert ["mcp.read mcp.write"] in asked_scopes(env)


async def test_an_explicit_allowlist_replaces_the_default(env: AuthzEnv, tmp_path: Path) -> None:
    env.gate.required_scopes = frozenset({"mcp.read", "mcp.write"})
    source = env.exchange(scopes=["mcp.read"])
    async with (
        env.run(
            "alice", tmp_path / "l.jsonl", token_source=source, allowed_scopes=["mcp.read", "mcp.write"]
        ) as run,
        open_session(run) as session,
    ):
        assert not (await session.call_tool("search", {"query": "x"})).isError
    assert asked_scopes(env) == [["mcp.read"], ["mcp.read mcp.write"]]
    with pytest.raises(ConfigurationError, match="not in allowed_scopes"):
        env.run("alice", tmp_path / "b.jsonl", token_source=source, allowed_scopes=["mcp.write"])
