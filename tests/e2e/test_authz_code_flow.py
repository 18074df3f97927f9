"""``AuthorizationCode`` against a real authorization server on 127.0.0.1 (issue #15): discovery, PKCE,
state, RFC 9207 ``iss``, CIMD / pre-registered / dynamic registration, refresh, single-flight without a
lock across requests — and a whole signed run against a guarded MCP server."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette

from mcpclient_auth.adapters.mcp_v1 import RunSession
from mcpclient_auth.authz import AuthorizationCode, pkce_challenge
from mcpclient_auth.errors import AuthorizationResponseError, ClientRegistrationError, ResourceMetadataError
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.principal import Principal
from tests.support.hooks_env import hr_server
from tests.support.oauth_server import AuthorizationServer
from tests.support.servers import serve

pytestmark = pytest.mark.e2e

ACCESS_TOKEN = "oauth-at-" + secrets.token_hex(8)
REDIRECT = "http://127.0.0.1:9/callback"
CIMD = "https://agent.example/client.json"
SECRET = "SECRET-SENTINEL-pre"
ALICE, BOB = Principal(id="alice"), Principal(id="bob")


@pytest.fixture
def oauth() -> Iterator[tuple[AuthorizationServer, str]]:
    server = AuthorizationServer(access_token=ACCESS_TOKEN)
    with serve(Starlette(routes=server.routes())) as base:
        yield server, base


def source(server: AuthorizationServer, base: str, **options: object) -> AuthorizationCode:
    options.setdefault("interaction", server.browser.redirect)
    return AuthorizationCode(server_url=f"{base}/mcp", redirect_uri=REDIRECT, **options)  # type: ignore[arg-type]


async def test_dynamic_registration_pkce_state_and_resource(oauth: tuple[AuthorizationServer, str]) -> None:
    server, base = oauth
    async with source(server, base) as flow:
        token = await flow.get_token(ALICE)
        assert await flow.get_token(ALICE) is token  # cached: no second authorization
    assert token.token == ACCESS_TOKEN
    (registration,) = server.registrations
    assert registration["redirect_uris"] == [REDIRECT] and registration["application_type"] == "native"
    (query,) = server.authorize_queries
    assert query["code_challenge_method"] == "S256" and query["resource"] == f"{base}/mcp"
    assert query["redirect_uri"] == REDIRECT and len(query["state"]) >= 32
    (form,) = server.token_forms
    assert form["grant_type"] == "authorization_code" and form["resource"] == f"{base}/mcp"
    assert pkce_challenge(form["code_verifier"]) == query["code_challenge"]
    assert form["client_id"] == query["client_id"] and form["redirect_uri"] == REDIRECT
    paths = [p for _, p in server.requests]
    assert paths.index("/.well-known/oauth-protected-resource/mcp") < paths.index(
        "/.well-known/oauth-authorization-server"
    )


async def test_cimd_and_pre_registered_clients_skip_registration(
    oauth: tuple[AuthorizationServer, str],
) -> None:
    server, base = oauth
    server.cimd = True
    async with source(server, base, client_metadata_url=CIMD) as flow:
        await flow.get_token(ALICE)
    assert server.registrations == [] and server.authorize_queries[-1]["client_id"] == CIMD
    assert server.token_forms[-1]["client_id"] == CIMD

    server.cimd = False
    server.preregistered = {"pre-agent": SECRET}
    async with source(
        server, base, client_id="pre-agent", client_secret=SECRET, client_metadata_url=CIMD
    ) as flow:
        await flow.get_token(ALICE)
    assert server.registrations == [] and server.authorize_queries[-1]["client_id"] == "pre-agent"
    assert "client_secret" not in server.token_forms[-1]  # client_secret_basic: in the header


async def test_cimd_unsupported_means_registration_and_neither_means_a_typed_error(
    oauth: tuple[AuthorizationServer, str],
) -> None:
    server, base = oauth
    async with source(server, base, client_metadata_url=CIMD) as flow:
        await flow.get_token(ALICE)  # the AS does not advertise CIMD: the URL is not used as client_id
    assert server.authorize_queries[-1]["client_id"] != CIMD and len(server.registrations) == 1

    server.registration = False
    async with source(server, base, client_metadata_url=CIMD) as flow:
        with pytest.raises(ClientRegistrationError):
            await flow.get_token(ALICE)
    assert len(server.authorize_queries) == 1  # nothing was sent to /authorize without a client


@pytest.mark.parametrize(
    ("send", "advertise", "value", "accepted"),
    [
        (True, True, None, True),  # iss-supported
        (False, False, None, True),  # iss-not-advertised
        (False, True, None, False),  # iss-supported-missing
        (True, True, "http://evil.example", False),  # iss-wrong-issuer
        (True, False, "http://evil.example", False),  # iss-unexpected: compared even when not advertised
        (True, True, "{base}/", False),  # iss-normalized: a trailing slash is another issuer
    ],
)
async def test_rfc9207_iss(
    oauth: tuple[AuthorizationServer, str], send: bool, advertise: bool, value: str | None, accepted: bool
) -> None:
    server, base = oauth
    server.send_iss, server.advertise_iss = send, advertise
    server.iss_value = value.format(base=base) if value else None
    async with source(server, base) as flow:
        if accepted:
            assert (await flow.get_token(ALICE)).token == ACCESS_TOKEN
        else:
            with pytest.raises(AuthorizationResponseError) as caught:
                await flow.get_token(ALICE)
            assert caught.value.reason == "issuer_mismatch"
    assert len(server.token_forms) == (1 if accepted else 0)  # a rejected redirect never reaches /token


async def test_refresh_token_is_used_before_asking_the_user_again(
    oauth: tuple[AuthorizationServer, str],
) -> None:
    server, base = oauth
    server.issue_refresh = True
    async with source(server, base) as flow:
        first = await flow.get_token(ALICE)
        flow.invalidate(ALICE, token=first)  # e.g. a 401 invalid_token
        await flow.get_token(ALICE)
        assert len(server.browser.visited) == 1 and server.token_forms[-1]["grant_type"] == "refresh_token"
        assert server.token_forms[-1]["resource"] == f"{base}/mcp"
        server.revoke_refresh_tokens()
        flow.invalidate(ALICE)
        await flow.get_token(ALICE)  # refresh refused: a new authorization, not a failure
    assert len(server.browser.visited) == 2
    assert [f["grant_type"] for f in server.token_forms] == [
        "authorization_code",
        "refresh_token",
        "refresh_token",
        "authorization_code",
    ]
    assert "rt-" not in repr(flow)


async def test_scopes_fall_back_to_the_resources_and_ask_for_offline_access(
    oauth: tuple[AuthorizationServer, str],
) -> None:
    server, base = oauth
    server.scopes_supported = ["mcp.read", "offline_access"]
    async with source(server, base) as flow:
        await flow.get_token(ALICE)
        await flow.get_token(BOB, scopes=["mcp.write"])
    assert server.authorize_queries[0]["scope"] == "mcp.read offline_access"  # SEP-835, SEP-2207
    assert server.authorize_queries[1]["scope"] == "mcp.write offline_access"


async def test_one_flow_per_user_and_no_lock_across_users(oauth: tuple[AuthorizationServer, str]) -> None:
    server, base = oauth
    release = asyncio.Event()
    waiting: list[str] = []

    async def slow_user(url: str) -> str:
        state = parse_qs(urlsplit(url).query)["state"][0]
        waiting.append(state)
        if len(waiting) == 1:
            await release.wait()  # alice takes her time in the browser
        return await server.browser.redirect(url)

    async with source(server, base, interaction=slow_user) as flow:
        alice = [asyncio.create_task(flow.get_token(ALICE)) for _ in range(3)]
        while not waiting:
            await asyncio.sleep(0.01)
        bob = await asyncio.wait_for(flow.get_token(BOB), timeout=10)  # not blocked behind alice
        assert not any(task.done() for task in alice)
        release.set()
        tokens = await asyncio.gather(*alice)
    assert bob.token == ACCESS_TOKEN and {t.token for t in tokens} == {ACCESS_TOKEN}
    assert len(waiting) == 2  # one interaction for alice's three callers, one for bob


async def test_a_signed_run_with_the_authorization_code_source(tmp_path: Path) -> None:
    server = AuthorizationServer(access_token=ACCESS_TOKEN)
    with hr_server(extra_routes=server.routes()) as env:
        env.state.require_bearer = ACCESS_TOKEN
        flow = AuthorizationCode(
            server_url=env.url, interaction=server.browser.redirect, redirect_uri=REDIRECT
        )
        path = tmp_path / "ledger.jsonl"
        async with env.run(path, token_source=flow, principal=ALICE) as run:
            client = run.httpx_client_factory()(headers={"accept": "application/json, text/event-stream"})
            async with (
                client,
                streamable_http_client(env.url, http_client=client) as (read, write, _),
                RunSession(read, write) as session,
            ):
                await session.initialize()
                result = await session.call_tool("search", {"query": "oauth"})
        await flow.aclose()
    assert not result.isError
    assert len(server.browser.visited) == 1
    assert verify_ledger(path, env.trust).ok
    assert ACCESS_TOKEN not in path.read_text()


@pytest.mark.parametrize("with_metadata", [True, False])
async def test_2025_03_26_servers_without_resource_metadata(with_metadata: bool) -> None:
    # No RFC 9728 document at all (404): the AS is the MCP server's origin, with RFC 8414 metadata
    # there or else the default endpoints /authorize, /token, /register of that revision.
    server = AuthorizationServer(access_token=ACCESS_TOKEN)
    routes = [
        r
        for r in server.routes()
        if "protected-resource" not in getattr(r, "path", "")
        and (with_metadata or "authorization-server" not in getattr(r, "path", ""))
    ]
    with serve(Starlette(routes=routes)) as base:
        async with source(server, base) as flow:
            assert (await flow.get_token(ALICE)).token == ACCESS_TOKEN
    assert server.authorize_queries[0]["resource"] == f"{base}/mcp"
    assert server.token_forms[0]["grant_type"] == "authorization_code"
    assert ("GET", "/.well-known/oauth-authorization-server") in server.requests or not with_metadata


async def test_a_resource_metadata_error_other_than_404_is_not_papered_over(
    oauth: tuple[AuthorizationServer, str],
) -> None:
    server, base = oauth
    # The PRM exists but names another resource: refused, never replaced by the legacy fallback.
    async with AuthorizationCode(
        server_url=f"{base}/other", interaction=server.browser.redirect, redirect_uri=REDIRECT
    ) as flow:
        with pytest.raises(ResourceMetadataError):
            await flow.get_token(ALICE)
    assert server.authorize_queries == []
