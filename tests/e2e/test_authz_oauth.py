"""mcp's own ``OAuthClientProvider`` as ``auth=`` beside our hooks (issue [authz], acceptance 6): the
authorization-code flow against a local authorization server, with a scripted browser.

Discovery, registration and token requests must carry none of our headers; every MCP request must
carry the OAuth access token, covered by a signature the server verifies. Both client shapes: a
run's own factory (the caller's auth is used as is) and a multi-run factory (our ``RunAuth`` drives
the provider's flow as its inner auth).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

from mcpclient_auth._hooks import use_run
from mcpclient_auth.adapters.mcp_v1 import RunSession
from mcpclient_auth.factory import multi_run_client_factory
from mcpclient_auth.ledger import verify_ledger
from tests.support.hooks_env import Env, RecordingTransport, entries, hr_server
from tests.support.mcp_app import OUR_HEADERS
from tests.support.oauth_server import AuthorizationServer

pytestmark = pytest.mark.e2e

ACCESS_TOKEN = "oauth-at-" + secrets.token_hex(8)
MCP_ACCEPT = {"accept": "application/json, text/event-stream"}


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


@pytest.fixture(scope="module")
def oauth() -> AuthorizationServer:
    return AuthorizationServer(access_token=ACCESS_TOKEN)


@pytest.fixture(scope="module")
def env(oauth: AuthorizationServer) -> Iterator[Env]:
    with hr_server(extra_routes=oauth.routes()) as server:
        server.state.require_bearer = ACCESS_TOKEN
        server.state.resource_metadata_url = f"{server.base}/.well-known/oauth-protected-resource/mcp"
        yield server


def provider(env: Env, oauth: AuthorizationServer) -> OAuthClientProvider:
    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl("http://127.0.0.1:9/callback")],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        client_name="agent",
    )
    return OAuthClientProvider(
        env.url,
        metadata,
        Memory(),
        redirect_handler=oauth.browser.visit,
        callback_handler=oauth.browser.callback,
    )


@pytest.mark.parametrize("shape", ["run factory", "multi-run factory"])
async def test_oauth_provider_with_our_hooks(
    env: Env, oauth: AuthorizationServer, tmp_path: Path, shape: str
) -> None:
    env.state.reset()
    oauth.requests.clear()
    oauth.browser.visited.clear()
    recorder = RecordingTransport()
    path = tmp_path / "ledger.jsonl"
    async with env.run(path) as run:
        options: dict[str, Any] = {"auth": provider(env, oauth), "transport": recorder, "headers": MCP_ACCEPT}
        if shape == "run factory":
            client = run.httpx_client_factory()(**options)
        else:
            client = multi_run_client_factory()(**options)
        with use_run(run):  # the multi-run client needs it; harmless for the other
            async with (
                client,
                streamable_http_client(env.url, http_client=client) as (read, write, _),
                RunSession(read, write) as session,
            ):
                await session.initialize()
                result = await session.call_tool("search", {"query": "oauth"})
        assert not result.isError

    # the whole authorization-code flow ran, on the MCP server's origin
    assert len(oauth.browser.visited) == 1
    assert {p for _, p in oauth.requests} >= {
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/register",
        "/token",
    }
    sent = [x.request for x in recorder.exchanges]
    oauth_side = [r for r in sent if r.url.path != "/mcp"]
    mcp_side = [r for r in sent if r.url.path == "/mcp"]
    assert {r.url.path for r in oauth_side} >= {
        "/register",
        "/token",
        "/.well-known/oauth-authorization-server",
    }
    for request in oauth_side:  # discovery, registration, token: none of our headers, no bearer
        assert not [h for h in OUR_HEADERS if h in request.headers], request.url
        assert "authorization" not in request.headers
    authorized = [r for r in mcp_side if r.headers.get("authorization") == f"Bearer {ACCESS_TOKEN}"]
    assert len(authorized) >= 3  # initialize (resent), initialized, the tool call ...
    for request in mcp_side:  # every MCP request signed; the OAuth token covered by the signature
        assert "signature" in request.headers
    for request in authorized:
        assert '"authorization"' in request.headers["signature-input"]
    state = env.state
    assert state.rejected == 0, state.errors()
    guarded = [s for s in state.requests if s.path == "/mcp"]
    assert guarded and all(s.verified for s in guarded)
    assert {s.authorization for s in guarded if s.method == "POST"} >= {f"Bearer {ACCESS_TOKEN}"}
    assert all(s.carried_our_headers == [] for s in state.requests if s.path != "/mcp")
    assert [e.meta.get("tool") for e in entries(path, kind="ect") if e.meta.get("tool")] == ["search"]
    assert verify_ledger(path, env.trust).ok
