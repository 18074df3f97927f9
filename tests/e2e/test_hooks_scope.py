"""End-to-end: the scope guard, retries and redirects, install() on existing clients, JSON responses,
user tokens from a token source, and failures (issue 3, acceptance 4 and the request-path details).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from mcpclient_auth._context import use_run
from mcpclient_auth.adapters.mcp_v1 import open_session
from mcpclient_auth.authz import AccessToken, StaticTokens
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import MandateDenied, PrincipalMismatch
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.principal import Principal
from mcpclient_auth.refusal import REFUSAL_CODE
from mcpclient_auth.run import AgentRun
from tests.support.hooks_env import Env, RecordingTransport, actors, entries, hr_server, sha256_b64url
from tests.support.mcp_app import EchoApp, oauth_routes
from tests.support.servers import serve

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning"),
]

ISSUED_TOKEN = "service-token-abc123"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
SALARY = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_employee_salary", "arguments": {}}}
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with hr_server(extra_routes=oauth_routes(ISSUED_TOKEN)) as server:
        server.state.resource_metadata_url = f"{server.base}/.well-known/oauth-protected-resource/mcp"
        yield server


@pytest.fixture(scope="module")
def json_env() -> Iterator[Env]:
    with hr_server(json_response=True) as server:
        yield server


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[EchoApp, str]]:
    app = EchoApp()
    with serve(app) as base:
        yield app, base


@pytest.fixture(autouse=True)
def _fresh(env: Env, echo: tuple[EchoApp, str]) -> Iterator[None]:
    env.state.reset()
    echo[0].received.clear()
    yield
    env.state.require_bearer = None
    env.state.redirect_slash = False


async def test_other_origins_get_nothing_from_the_same_client(
    env: Env, echo: tuple[EchoApp, str], tmp_path: Path
) -> None:
    app, other = echo
    path = tmp_path / "ledger.jsonl"
    async with env.run(path) as run, run.httpx_client_factory()() as client:
        before = len(entries(path))
        await client.post(f"{other}/mcp", json=INITIALIZE, headers=MCP_HEADERS)  # same path, other origin
        await client.get(f"{other}/anything")
        assert len(entries(path)) == before  # no ledger entry for another origin
        signed = await client.post(env.url, json=INITIALIZE, headers=MCP_HEADERS)
        assert signed.status_code == 200
    assert app.ours() == [] and len(app.received) == 2
    assert env.state.verified_ects == 1 and env.state.rejected == 0


async def test_a_redirect_to_another_origin_drops_our_headers(
    echo: tuple[EchoApp, str], tmp_path: Path
) -> None:
    app, other = echo
    user, agent, _ = actors()
    run = AgentRun(
        agent=agent, issuer=user, purpose="p", capabilities=[], endpoint=f"{other}/hop", ledger=tmp_path / "l.jsonl"
    )
    landing = EchoApp()
    with serve(landing) as landing_base:  # a third origin
        async with run, httpx.AsyncClient(follow_redirects=True) as client:
            run.install(client)
            response = await client.post(f"{other}/hop?to={landing_base}/landing", json=INITIALIZE)
    assert response.status_code == 200 and response.json()["path"] == "/landing"
    first_hop = app.received[-1][2]
    assert {"act-mandate", "execution-context", "signature"} <= set(first_hop)  # in scope: signed
    assert len(landing.received) == 1 and landing.ours() == []  # the redirected hop: nothing of ours


async def test_oauth_discovery_passes_untouched_and_the_401_retry_is_freshly_signed(
    env: Env, tmp_path: Path
) -> None:
    env.state.require_bearer = ISSUED_TOKEN

    class Memory:
        def __init__(self) -> None:
            self.tokens: OAuthToken | None = None
            self.client: OAuthClientInformationFull | None = None

        async def get_tokens(self) -> OAuthToken | None:
            return self.tokens

        async def set_tokens(self, tokens: OAuthToken) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> OAuthClientInformationFull | None:
            return self.client

        async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
            self.client = client_info

    oauth = ClientCredentialsOAuthProvider(
        server_url=env.url, storage=Memory(), client_id="agent", client_secret="s3cret", issuer=env.base
    )
    path = tmp_path / "ledger.jsonl"
    async with (
        env.run(path) as run,
        streamablehttp_client(env.url, httpx_client_factory=run.httpx_client_factory(), auth=oauth) as (r, w, _),
        ClientSession(r, w) as session,
    ):
        await session.initialize()
        await session.call_tool("search", {"query": "x"})

    state = env.state
    oauth_requests = [s for s in state.requests if s.path != "/mcp"]
    assert {s.path for s in oauth_requests} >= {
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/token",
    }
    assert all(s.carried_our_headers == [] for s in oauth_requests)  # discovery/token: untouched
    assert all(e.meta["url"] == env.url for e in entries(path, kind="ect"))
    assert state.rejected == 0, state.errors()  # the retry was re-signed: no replayed nonce or ECT
    challenged, retried = [s for s in state.requests if s.path == "/mcp" and s.method == "POST"][:2]
    assert challenged.authorization is None and retried.authorization == f"Bearer {ISSUED_TOKEN}"
    assert challenged.verified and retried.verified
    assert challenged.ect is not None and retried.ect is not None and challenged.ect.jti != retried.ect.jti
    assert state.verified_ects == len(entries(path, kind="ect"))
    statuses = [e.meta["status"] for e in entries(path, kind="response")]
    assert statuses[0] == 401 and 200 in statuses
    assert verify_ledger(path, env.trust).ok


async def test_a_same_origin_redirect_is_re_signed(env: Env, tmp_path: Path) -> None:
    env.state.redirect_slash = True
    path = tmp_path / "ledger.jsonl"
    async with env.run(path) as run, open_session(run) as session:
        result = await session.call_tool("search", {"query": "moved"})
        assert not result.isError
    state = env.state
    assert state.rejected == 0, state.errors()
    landed = [s for s in state.requests if s.path == "/mcp/"]
    assert landed and all(s.verified for s in landed)
    ects = entries(path, kind="ect")
    assert {e.meta["url"].endswith("/mcp/") for e in ects} == {True, False}  # both hops, each its own ECT
    assert 307 in {e.meta["status"] for e in entries(path, kind="response")}
    # the tool call joined the DAG through its redirected hop only
    tool_ects = [ExecutionContextToken.decode(e.token) for e in ects if e.meta.get("tool")]  # type: ignore[arg-type]
    assert [t.pred for t in tool_ects] == [[run.id], [run.id]]
    record_pred = (await run.aclose()).pred
    assert len(record_pred) == 1 and record_pred[0] == tool_ects[1].jti


async def test_installed_async_client_signs_and_raises_typed_refusals(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    async with env.run(path) as run, httpx.AsyncClient(headers=MCP_HEADERS) as client:
        seen_by_user_hook: list[str] = []

        async def user_hook(request: httpx.Request) -> None:
            seen_by_user_hook.append(request.method)

        client.event_hooks["request"].append(user_hook)
        run.install(client)
        assert client.event_hooks["request"][0] is user_hook  # appended, not replaced
        response = await client.post(env.url, json=INITIALIZE)
        assert response.status_code == 200
        with pytest.raises(MandateDenied):
            await client.post(env.url, json=SALARY)
        assert seen_by_user_hook == ["POST", "POST"]
    assert env.state.verified_ects == 1 and len(env.state.requests) == 1
    assert [e.kind for e in entries(path)][:5] == ["mandate", "ect", "response", "denial", "record"]


async def test_installed_client_can_answer_locally(env: Env, tmp_path: Path) -> None:
    async with env.run(tmp_path / "l.jsonl") as run, httpx.AsyncClient(headers=MCP_HEADERS) as client:
        run.install(client, answer_locally=True)
        response = await client.post(env.url, json=SALARY)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == REFUSAL_CODE and error["data"]["code"] == "mandate_denied" and response.json()["id"] == 2
    assert env.state.requests == []


def test_installed_sync_client(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with env.run(path) as run, httpx.Client(headers=MCP_HEADERS) as client:
        run.install(client)
        response = client.post(env.url, json=INITIALIZE)
        assert response.status_code == 200
        with pytest.raises(MandateDenied):
            client.post(env.url, json=SALARY)
    assert env.state.verified_ects == 1 and env.state.rejected == 0
    response_entry = entries(path, kind="response")[0]
    assert response_entry.meta["out_hash"] == sha256_b64url(response.content)
    assert verify_ledger(path, env.trust).ok


async def test_json_responses_are_hashed_and_complete_at_eof(json_env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    recorder = RecordingTransport()
    async with json_env.run(path) as run, open_session(run, client_kwargs={"transport": recorder}) as session:
        await session.call_tool("search", {"query": "a"})
        await session.call_tool("get_office_locations", {})
    tool_ects = [e for e in entries(path, kind="ect") if e.meta.get("tool")]
    first, second = (ExecutionContextToken.decode(e.token) for e in tool_ects)  # type: ignore[arg-type]
    assert second.pred == [first.jti]
    for ect_entry in tool_ects:
        exchange = next(x for x in recorder.exchanges if x.request.headers.get("execution-context") == ect_entry.token)
        assert exchange.chunks and json.loads(exchange.body)["result"]
        response = next(e for e in entries(path, kind="response") if e.jti == ect_entry.jti)
        assert response.meta["out_hash"] == sha256_b64url(exchange.body)
    assert json_env.state.rejected == 0


async def test_user_tokens_from_a_token_source(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    source = StaticTokens({"alice": "alice-access-token"})
    async with env.run(path, token_source=source, principal=Principal(id="alice")) as run:
        async with open_session(run) as session:
            await session.call_tool("search", {"query": "x"})
        assert all(s.authorization == "Bearer alice-access-token" for s in env.state.requests)
        assert all("act-mandate" in s.carried_our_headers for s in env.state.requests)
        assert env.state.rejected == 0
    assert "alice-access-token" not in path.read_text()  # never in the ledger

    nobody = env.run(tmp_path / "bob.jsonl", token_source=source, principal=Principal(id="bob"))
    env.state.reset()
    async with nobody, nobody.httpx_client_factory()(headers=MCP_HEADERS) as client:
        response = await client.post(env.url, json=INITIALIZE)
        assert response.json()["error"]["data"]["code"] == "no_token_for_principal"
    assert env.state.requests == []  # fail closed: nothing sent without the user's token
    assert entries(tmp_path / "bob.jsonl", kind="error")[0].meta["code"] == "no_token_for_principal"


async def test_a_network_failure_is_an_error_entry_and_does_not_join_the_dag(env: Env, tmp_path: Path) -> None:
    class Unreachable(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

    path = tmp_path / "ledger.jsonl"
    async with env.run(path) as run:
        async with run.httpx_client_factory()(transport=Unreachable(), headers=MCP_HEADERS) as client:
            body: dict[str, Any] = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "search"}}
            with pytest.raises(httpx.ConnectError):
                await client.post(env.url, json=body)
        assert run.frontier.current() == []
    errors = entries(path, kind="error")
    [ect] = entries(path, kind="ect")
    assert [(e.meta["code"], e.jti) for e in errors] == [("transport_error", ect.jti)]
    # The ledger is intact, and says the tool call was never answered (issue 15: not reported OK).
    report = verify_ledger(path, env.trust)
    assert [(f.check, f.jti) for f in report.failures] == [("response_missing", ect.jti)]


async def test_legacy_sse_transport_messages_are_signed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with hr_server(legacy_sse=True) as sse_env:
        async with (
            sse_env.run(path) as run,
            sse_client(sse_env.url, httpx_client_factory=run.httpx_client_factory()) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("search", {"query": "legacy"})
            assert not result.isError
        state = sse_env.state
    assert state.rejected == 0, state.errors()
    posts = [s for s in state.requests if s.method == "POST"]
    assert posts and all(s.path == "/messages/" and s.verified and s.ect is not None for s in posts)
    assert any(s.method == "GET" and s.path == "/sse" and s.verified for s in state.requests)
    assert state.verified_ects == len(entries(path, kind="ect"))
    assert verify_ledger(path, sse_env.trust).ok


async def test_mandate_in_authorization_mode(env: Env, tmp_path: Path) -> None:
    async with env.run(tmp_path / "l.jsonl", mandate_header="authorization") as run, open_session(run) as session:
        await session.call_tool("search", {"query": "x"})
    assert env.state.rejected == 0
    assert all(s.authorization == f"Bearer {run.mandate.token}" for s in env.state.requests)
    assert all("act-mandate" not in s.carried_our_headers for s in env.state.requests)


async def test_a_client_of_one_run_refuses_calls_while_another_run_is_selected(
    env: Env, echo: tuple[EchoApp, str], tmp_path: Path
) -> None:
    """A client built for run A, used inside ``use_run(B)``: a call to A's endpoint is signable by
    neither run, so it is refused (local -32003, a denial in A's ledger) — never sent unsigned."""
    app, other = echo
    path_a, path_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    other_run = AgentRun(
        agent=env.agent, issuer=env.user, purpose="p", capabilities=["mcp.other"], endpoint=f"{other}/mcp",
        ledger=path_b,
    )
    landing = EchoApp()
    with serve(landing) as third:
        async with env.run(path_a) as run, other_run, run.httpx_client_factory()() as client:
            with use_run(other_run):
                refused = await client.post(env.url, json=SALARY, headers=MCP_HEADERS)
                to_b = await client.post(f"{other}/mcp", json=INITIALIZE, headers=MCP_HEADERS)
                elsewhere = await client.post(f"{third}/x", json=INITIALIZE)
    error = refused.json()["error"]
    assert error["code"] == REFUSAL_CODE and error["data"]["code"] == "principal_mismatch"
    assert to_b.json()["error"]["data"]["code"] == "principal_mismatch"
    assert env.state.requests == [] and app.received == []  # nothing reached either run's server
    assert elsewhere.status_code == 200 and len(landing.received) == 1 and landing.ours() == []
    assert [e.meta["code"] for e in entries(path_a, kind="denial")] == ["principal_mismatch"] * 2
    assert entries(path_b, kind="denial") == []


def test_an_installed_sync_client_refuses_while_another_run_is_selected(
    env: Env, echo: tuple[EchoApp, str], tmp_path: Path
) -> None:
    _, other = echo
    other_run = AgentRun(
        agent=env.agent, issuer=env.user, purpose="p", capabilities=[], endpoint=f"{other}/mcp",
        ledger=tmp_path / "b.jsonl",
    )
    with env.run(tmp_path / "a.jsonl") as run, other_run, httpx.Client(headers=MCP_HEADERS) as client:
        run.install(client)
        with use_run(other_run), pytest.raises(PrincipalMismatch):
            client.post(env.url, json=INITIALIZE)
        assert client.post(env.url, json=INITIALIZE).status_code == 200  # its own run: signed as before
    assert env.state.verified_ects == 1 and len(env.state.requests) == 1


class _Unauthorized:
    """Another origin that answers every request 401 invalid_token."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.received += 1
        body = b"no"
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", b'Bearer error="invalid_token"'),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def test_a_401_from_another_origin_after_a_redirect_is_final(
    echo: tuple[EchoApp, str], tmp_path: Path
) -> None:
    """The run's endpoint redirects to another origin that answers 401: that hop carried none of our
    credentials, so its answer must not make the run drop its token and obtain a new one."""
    app, other = echo
    user, agent, _ = actors()
    obtained: list[str] = []

    def lookup(principal: Principal) -> AccessToken:
        obtained.append(principal.id)
        return AccessToken(f"alice-token-{len(obtained)}")

    foreign = _Unauthorized()
    with serve(foreign) as foreign_base:
        run = AgentRun(
            agent=agent,
            issuer=user,
            purpose="p",
            capabilities=["mcp.search"],
            endpoint=f"{other}/hop",
            ledger=tmp_path / "l.jsonl",
            token_source=StaticTokens(lookup),
        )
        async with run, run.httpx_client_factory()(follow_redirects=True, headers=MCP_HEADERS) as client:
            body = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "search", "arguments": {}}}
            response = await client.post(f"{other}/hop?to={foreign_base}/collect", json=body)
    assert response.status_code == 401  # the other origin's answer, passed through as final
    assert obtained == [user.name]  # no re-obtain
    assert foreign.received == 1 and len(app.received) == 1  # no resend to the endpoint either
    assert app.received[0][2]["authorization"] == "Bearer alice-token-1"
