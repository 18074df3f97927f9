"""The user's token on the request path, end to end (issue [authz], acceptance 1-4, RFC 9728 and the
construction-time refusals): a real token endpoint, and the verifying FastMCP server behind a gate
that checks whose token each request carries and can answer 401 / 403 challenges.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcpclient_auth._hooks import use_run
from mcpclient_auth.adapters.mcp_v1 import open_session
from mcpclient_auth.authz import ClientCredentials, StaticTokens, TokenCache, TokenExchange
from mcpclient_auth.errors import (
    AuthorizationError,
    ConfigurationError,
    InsufficientScope,
    McpClientAuthError,
    UpstreamUnauthorized,
)
from mcpclient_auth.factory import httpx_client_factory, multi_run_client_factory
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.refusal import REFUSAL_CODE
from tests.support.authz_env import CLIENT_ID, CLIENT_SECRET, AuthzEnv, authz_server, subject_token
from tests.support.hooks_env import entries
from tests.support.idp import Reply
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

BODY_SENTINEL = "BODY-SENTINEL-idp-raw"
SENTINELS = (subject_token("alice"), CLIENT_SECRET, BODY_SENTINEL, "SENTINEL")
SEARCH = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {"name": "search", "arguments": {"query": "x"}},
}
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


class FakeClock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def env() -> Iterator[AuthzEnv]:
    with authz_server(["alice", "bob"]) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(env: AuthzEnv) -> None:
    env.reset()


async def settled(session: Any, env: AuthzEnv) -> int:
    """Let the session finish setting up: mcp sends ``notifications/initialized`` and opens its GET
    stream *after* ``initialize()`` returns, so wait (bounded) for both before scripting failures.
    Returns the issue number of the token the session uses."""
    await session.call_tool("search", {"query": "warm-up"})
    for _ in range(200):
        if any(s.method == "GET" for s in env.gate.seen):
            break
        await asyncio.sleep(0.01)
    number = max(s.token_number or 0 for s in env.gate.seen)
    env.gate.seen.clear()
    return number


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for sentinel in SENTINELS:
            assert sentinel not in text


def leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for inner in group.exceptions for leaf in leaves(inner)]
    return [group]


async def failed_session_setup(run: Any) -> BaseException:
    """The one error raised while opening a session (mcp wraps it in its task groups)."""
    try:
        async with open_session(run):
            pass
    except BaseException as exc:  # returned for the caller's asserts
        (leaf,) = leaves(exc)
        return leaf
    raise AssertionError("the session opened")


def error_texts(exc: McpClientAuthError) -> list[str]:
    return [str(exc), repr(exc), json.dumps(exc.to_dict())]


# --- acceptance 1: one token for 200 concurrent calls --------------------------------------------------


async def test_200_concurrent_tool_calls_share_one_token_request(env: AuthzEnv, tmp_path: Path) -> None:
    clock = FakeClock()
    source = env.exchange(cache=TokenCache(clock=clock), scopes=["mcp.read"])
    path = tmp_path / "ledger.jsonl"
    async with env.run("alice", path, token_source=source) as run, open_session(run) as session:
        first_token = await settled(session, env)
        assert env.idp.count == 1  # the session's set-up fetched alice's token
        clock.now += 3600  # it expires: the next calls all miss at once
        env.idp.queue(Reply.slow(0.2))  # and the refresh is slow, so all 200 wait on the one request
        results = await asyncio.gather(*(session.call_tool("search", {"query": f"q{i}"}) for i in range(200)))
        assert all(not r.isError for r in results)
        assert env.idp.count == 2  # exactly one token request served the 200 concurrent calls
        # Two sequential calls fan the 200 in (pred <= 100 each), so the phase-2 record's pred fits
        # the 100-predecessor cap (a frontier of 200 would not: reported to the lead).
        for i in range(2):
            await session.call_tool("search", {"query": f"fan-in {i}"})
    calls = env.gate.calls("search")
    assert len(calls) == 202
    ((user, number, issuer),) = {(c.token_user, c.token_number, c.mandate_issuer) for c in calls}
    assert user == issuer == "alice" and number != first_token  # every call carried the refreshed token
    assert env.state.rejected == 0, env.state.errors()
    form = env.idp.requests[-1].form
    assert form["subject_token"] == [subject_token("alice")] and form["scope"] == ["mcp.read"]
    assert_no_secrets(path.read_text())
    assert verify_ledger(path, env.trust).ok


# --- acceptance 2: transient and permanent IdP failures -------------------------------------------------


async def test_one_503_is_retried_and_the_call_succeeds(env: AuthzEnv, tmp_path: Path) -> None:
    env.idp.queue(Reply.unavailable(503, body=BODY_SENTINEL.encode()))
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange()) as run,
        open_session(run) as s,
    ):
        result = await s.call_tool("search", {"query": "after a hiccup"})
    assert not result.isError
    assert env.idp.count == 2
    assert [c.token_user for c in env.gate.calls()] == ["alice"]


async def test_two_503s_refuse_the_call_retryable_and_nothing_reaches_the_server(
    env: AuthzEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    source = env.exchange(cache=TokenCache(clock=clock))
    path = tmp_path / "l.jsonl"
    async with env.run("alice", path, token_source=source) as run, open_session(run) as session:
        await settled(session, env)
        clock.now += 3600
        env.idp.queue(
            Reply.unavailable(503, body=BODY_SENTINEL.encode()),
            Reply.unavailable(503, body=BODY_SENTINEL.encode()),
        )
        with pytest.raises(AuthorizationError) as info:
            await session.call_tool("search", {"query": "refused"})
        assert env.idp.count == 3  # 1 for the session, then exactly 2 attempts
        assert env.gate.calls() == []  # the MCP server received no tools/call
        # the session survived the refusal: the next call gets a fresh token and goes through
        assert not (await session.call_tool("search", {"query": "later"})).isError
    error = info.value
    assert error.retryable is True and error.reason == "exchange_unavailable"
    assert error.code == "token_exchange_failed"
    assert_no_secrets(*error_texts(error), path.read_text(), caplog.text)
    assert "failed (HTTP 503), attempt 2 of 2" in caplog.text
    # the IdP failed: a fault (``error``), not a decision (``denial``)
    assert entries(path, kind="denial") == []
    errors = entries(path, kind="error")
    assert [(e.meta["tool"], e.meta["code"]) for e in errors] == [("search", "token_exchange_failed")]


async def test_invalid_grant_is_not_retried(env: AuthzEnv, tmp_path: Path) -> None:
    clock = FakeClock()
    source = env.exchange(cache=TokenCache(clock=clock))
    path = tmp_path / "l.jsonl"
    async with env.run("alice", path, token_source=source) as run, open_session(run) as session:
        await settled(session, env)
        clock.now += 3600
        env.idp.queue(Reply.error("invalid_grant", description=BODY_SENTINEL))
        with pytest.raises(AuthorizationError) as info:
            await session.call_tool("search", {"query": "refused"})
        assert env.idp.count == 2  # one for the session, one (not retried) for the call
    assert info.value.retryable is False and info.value.reason == "exchange_rejected"
    assert info.value.details.get("error") == "invalid_grant"
    assert env.gate.calls() == []
    assert_no_secrets(*error_texts(info.value), path.read_text())


# --- acceptance 3: IdP down ------------------------------------------------------------------------------


async def test_idp_down_sends_nothing_to_the_mcp_server(env: AuthzEnv, tmp_path: Path) -> None:
    dead = TokenExchange(
        f"http://127.0.0.1:{free_port()}/token",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        retry_backoff=0.01,
    )
    path = tmp_path / "l.jsonl"
    async with env.run("alice", path, token_source=dead) as run:
        in_session = await failed_session_setup(run)  # refused locally at initialize
        async with httpx_client_factory(run, answer_locally=False)(headers=MCP_HEADERS) as client:
            with pytest.raises(AuthorizationError) as plain:
                await client.post(run.endpoints[0], json=SEARCH)
    assert isinstance(in_session, AuthorizationError) and in_session.retryable is True
    assert plain.value.retryable is True
    assert env.gate.seen == [] and env.state.requests == []  # not one request reached the server
    assert_no_secrets(*error_texts(plain.value), path.read_text())


# --- acceptance 4: 401 invalid_token and 403 insufficient_scope from the MCP server ----------------------


async def test_401_invalid_token_re_obtains_once_and_the_resend_is_freshly_signed(
    env: AuthzEnv, tmp_path: Path
) -> None:
    path = tmp_path / "l.jsonl"
    async with env.run("alice", path, token_source=env.exchange()) as run, open_session(run) as session:
        number = await settled(session, env)
        env.gate.revoked.add(number)  # the server revokes the token the session has been using
        result = await session.call_tool("search", {"query": "revoked"})
        assert env.idp.count == 2  # one re-obtain
    assert not result.isError
    first, second = env.gate.calls("search")
    assert (first.token_number, first.status) == (number, 401)
    assert second.token_number not in (None, number) and second.status == 200
    # the resend went through the hooks again: its own ECT, its own signature, verified by the server
    assert first.ect_jti and second.ect_jti and first.ect_jti != second.ect_jti
    assert first.signature_input != second.signature_input
    assert env.state.rejected == 0, env.state.errors()
    tool_ects = [e for e in entries(path, kind="ect") if e.meta.get("tool") == "search"]
    assert [e.jti for e in tool_ects][-2:] == [first.ect_jti, second.ect_jti]
    statuses = {e.jti: e.meta["status"] for e in entries(path, kind="response")}
    assert statuses[first.ect_jti] == 401 and statuses[second.ect_jti] == 200
    assert verify_ledger(path, env.trust).ok


async def test_many_calls_failing_with_one_stale_token_cause_one_re_obtain(
    env: AuthzEnv, tmp_path: Path
) -> None:
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange()) as run,
        open_session(run) as s,
    ):
        number = await settled(s, env)
        env.gate.revoked.add(number)
        results = await asyncio.gather(*(s.call_tool("search", {"query": f"q{i}"}) for i in range(20)))
        assert env.idp.count == 2  # invalidate(token=...) drops the stale token once; single-flight re-obtain
    assert all(not r.isError for r in results)
    assert len({c.token_number for c in env.gate.calls() if c.status == 200}) == 1


async def test_second_401_is_a_typed_refusal_and_the_session_survives(env: AuthzEnv, tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    async with env.run("alice", path, token_source=env.exchange()) as run, open_session(run) as session:
        await settled(session, env)
        env.gate.revoked_users.add("alice")
        with pytest.raises(UpstreamUnauthorized) as info:
            await session.call_tool("search", {"query": "twice"})
        assert [c.status for c in env.gate.calls()] == [401, 401]  # one resend, no more
        env.gate.revoked_users.clear()
        assert not (await session.call_tool("search", {"query": "again"})).isError
    assert env.idp.count == 3  # session, re-obtain after the first 401, re-obtain after the refusal
    assert info.value.code == "upstream_unauthorized" and info.value.retryable is False
    assert [d.meta["code"] for d in entries(path, kind="denial")] == ["upstream_unauthorized"]
    assert verify_ledger(path, env.trust).ok


async def test_second_401_raises_from_a_plain_httpx_client(env: AuthzEnv, tmp_path: Path) -> None:
    env.gate.revoked_users.add("alice")
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange()) as run,
        httpx_client_factory(run, answer_locally=False)(headers=MCP_HEADERS) as client,
    ):
        with pytest.raises(UpstreamUnauthorized):
            await client.post(run.endpoints[0], json=SEARCH)
    assert [c.status for c in env.gate.calls()] == [401, 401]


async def test_403_insufficient_scope_steps_up_once_with_the_union(env: AuthzEnv, tmp_path: Path) -> None:
    env.gate.required_scopes = frozenset({"mcp.read", "mcp.write"})
    source = env.exchange(scopes=["mcp.read"])
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=source, allowed_scopes=["mcp.read", "mcp.write"]) as run,
        open_session(run) as session,
    ):
        first = await session.call_tool("search", {"query": "one"})
        second = await session.call_tool("search", {"query": "two"})
    assert not first.isError and not second.isError
    asked = [r.form.get("scope") for r in env.idp.requests]
    assert asked == [["mcp.read"], ["mcp.read mcp.write"]]  # one step-up, with the union
    # once stepped up, the run asks for the union directly: no further 403
    assert [s.status for s in env.gate.seen if s.status == 403] == [403]
    assert {c.token_scopes for c in env.gate.calls()} == {frozenset({"mcp.read", "mcp.write"})}


async def test_second_403_is_a_typed_refusal(env: AuthzEnv, tmp_path: Path) -> None:
    source = env.exchange(scopes=["mcp.read"])
    path = tmp_path / "l.jsonl"
    allowed = ["mcp.read", "mcp.write", "mcp.admin"]
    async with env.run("alice", path, token_source=source, allowed_scopes=allowed) as run, open_session(run) as session:
        await settled(session, env)
        # the server needs mcp.admin too, but its challenge only names mcp.write
        env.gate.required_scopes = frozenset({"mcp.write", "mcp.admin"})
        env.gate.challenge_scopes = frozenset({"mcp.write"})
        with pytest.raises(InsufficientScope) as info:
            await session.call_tool("search", {"query": "admin"})
        assert [c.status for c in env.gate.calls()] == [403, 403]
        env.gate.required_scopes = frozenset()
        assert not (await session.call_tool("search", {"query": "fine"})).isError
    assert info.value.details["scopes"] == ["mcp.write"]
    assert [r.form.get("scope") for r in env.idp.requests] == [["mcp.read"], ["mcp.read mcp.write"]]
    assert [d.meta["code"] for d in entries(path, kind="denial")] == ["insufficient_scope"]


async def test_a_403_for_another_reason_is_passed_through(env: AuthzEnv, tmp_path: Path) -> None:
    # a token that is not the server's business (a signature rejection answers 403 without a challenge)
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange()) as run,
        httpx_client_factory(run, answer_locally=False)(headers=MCP_HEADERS) as client,
    ):
        response = await client.post(run.endpoints[0], json=SEARCH, headers={"mcp-session-id": "x"})
    assert response.status_code in (400, 404)  # FastMCP's own answer: no retry, no refusal
    assert env.idp.count == 1


# --- RFC 9728 ---------------------------------------------------------------------------------------------


async def test_resource_metadata_from_the_challenge_sets_the_audience(env: AuthzEnv, tmp_path: Path) -> None:
    env.idp.metadata = {"resource": env.url, "authorization_servers": [env.idp.base_url]}
    env.gate.resource_metadata = f"{env.idp.base_url}/.well-known/oauth-protected-resource/mcp"
    env.gate.required_audience = env.url
    run = env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange(), discover_resource_metadata=True)
    async with run, open_session(run) as session:
        assert not (await session.call_tool("search", {"query": "discovered"})).isError
    assert [r.form.get("audience") for r in env.idp.requests] == [None, [env.url]]
    (headers,) = env.idp.metadata_requests  # fetched once, anonymously
    assert "authorization" not in headers and "signature" not in headers and "act-mandate" not in headers


async def test_without_discovery_a_bare_401_is_final(env: AuthzEnv, tmp_path: Path) -> None:
    env.gate.resource_metadata = f"{env.idp.base_url}/.well-known/oauth-protected-resource/mcp"
    env.gate.required_audience = env.url
    async with env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange()) as run:
        assert isinstance(await failed_session_setup(run), UpstreamUnauthorized)
    assert env.idp.count == 1 and env.idp.metadata_requests == []


# --- construction-time refusals ---------------------------------------------------------------------------


def test_two_sources_of_authorization_are_refused(env: AuthzEnv, tmp_path: Path) -> None:
    with env.run("alice", tmp_path / "a.jsonl", token_source=StaticTokens({"alice": "t"})) as run:
        factory = run.httpx_client_factory()
        with pytest.raises(ConfigurationError, match="two sources of Authorization"):
            factory(auth=httpx.BasicAuth("u", "p"))
        with pytest.raises(ConfigurationError, match="Authorization header"):
            factory(headers={"Authorization": "Bearer mine"})
        with pytest.raises(ConfigurationError, match="two sources of Authorization"):
            run.install(httpx.AsyncClient(auth=httpx.BasicAuth("u", "p")))
        with pytest.raises(ConfigurationError, match="two sources of Authorization"):
            run.install(httpx.AsyncClient(headers={"Authorization": "Bearer mine"}))
    with pytest.raises(ConfigurationError, match="mandate_header"):
        env.run(
            "alice",
            tmp_path / "b.jsonl",
            token_source=StaticTokens({"alice": "t"}),
            mandate_header="authorization",
        )
    service = ClientCredentials(env.idp.token_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    with pytest.raises(ConfigurationError, match="mandate_header"):
        env.run("alice", tmp_path / "c.jsonl", discovery_token_source=service, mandate_header="authorization")
    with (
        env.run("alice", tmp_path / "d.jsonl", mandate_header="authorization") as mandate_run,
        pytest.raises(ConfigurationError, match="two sources of Authorization"),
    ):
        mandate_run.httpx_client_factory()(auth=httpx.BasicAuth("u", "p"))
    with (
        env.run("alice", tmp_path / "e.jsonl") as plain,
        pytest.raises(ConfigurationError),
        plain.discovery(),
    ):
        pass


async def test_a_multi_run_client_with_its_own_auth_refuses_a_run_with_a_token_source(
    env: AuthzEnv, tmp_path: Path
) -> None:
    path = tmp_path / "l.jsonl"
    run = env.run("alice", path, token_source=env.exchange())
    async with run, multi_run_client_factory()(headers=MCP_HEADERS, auth=httpx.BasicAuth("u", "p")) as client:
        with use_run(run):
            response = await client.post(run.endpoints[0], json=SEARCH)
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == REFUSAL_CODE and error["data"]["code"] == "configuration_error"
    assert env.gate.seen == [] and env.idp.count == 0


async def test_an_installed_client_re_obtains_too(env: AuthzEnv, tmp_path: Path) -> None:
    async with (
        env.run("alice", tmp_path / "l.jsonl", token_source=env.exchange()) as run,
        httpx.AsyncClient(headers=MCP_HEADERS) as client,
    ):
        run.install(client)
        first = await client.post(run.endpoints[0], json=SEARCH)  # no session: FastMCP answers 400
        env.gate.revoked.add(env.gate.seen[-1].token_number or 0)
        second = await client.post(run.endpoints[0], json=SEARCH)
        env.gate.revoked_users.add("alice")
        with pytest.raises(UpstreamUnauthorized):  # installed without answer_locally: typed exception
            await client.post(run.endpoints[0], json=SEARCH)
    assert first.status_code == second.status_code == 400  # past the gate both times
    assert [c.status for c in env.gate.calls()] == [400, 401, 400, 401, 401]
    assert env.idp.count == 3  # the first token, one re-obtain, one more after the revocation
