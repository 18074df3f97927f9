"""Acceptance 7 (issue 9): our credentials and signatures never reach another origin.

The run's endpoint is ``/hop`` on one local server (an echo app that answers ``/hop?to=URL`` with a
307); a second local server records everything it receives. The run has a user token source, so
in-scope requests carry ``Authorization: Bearer <user token>`` as well as the mandate, the ECT and
the signature. Asserted at the second server: no ``Authorization``, ``ACT-Mandate``,
``Execution-Context``, ``Signature``, ``Signature-Input`` or ``Content-Digest``, and the user's token
in no header at all — for a cross-origin redirect and direct requests to the foreign origin through
the same hooked clients; a same-origin redirect to a path outside the run's scope is refused (it
never leaves the client).

``tests/e2e/test_hooks_scope.py`` covers the same without a token source (other origins through a
factory client; a cross-origin redirect through an installed client).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mcpclient_auth.authz import StaticTokens
from mcpclient_auth.errors import RequestOutOfScope
from mcpclient_auth.keys import Identity
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import AgentRun
from tests.support.hooks_env import entries
from tests.support.mcp_app import EchoApp
from tests.support.servers import serve

pytestmark = pytest.mark.e2e

USER_TOKEN = "user-token-SENTINEL-91ab"
OURS = ("authorization", "act-mandate", "execution-context", "signature", "signature-input", "content-digest")
BODY = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {}}}
BOUND = 15.0


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[EchoApp, str, EchoApp, str]]:
    home, foreign = EchoApp(), EchoApp()
    with serve(home) as home_base, serve(foreign) as foreign_base:
        yield home, home_base, foreign, foreign_base


@pytest.fixture(autouse=True)
def _clear(servers: tuple[EchoApp, str, EchoApp, str]) -> None:
    servers[0].received.clear()
    servers[2].received.clear()


def new_run(home_base: str, ledger: Path) -> AgentRun:
    return AgentRun(
        agent=Identity.generate("ES256", name="agent-1"),
        issuer=Identity.generate("ES256", name="alice"),
        purpose="origins",
        capabilities=["mcp.search"],
        endpoint=f"{home_base}/hop",
        ledger=ledger,
        principal=Principal(id="alice"),
        token_source=StaticTokens({"alice": USER_TOKEN}),
    )


def assert_nothing_of_ours(app: EchoApp) -> None:
    assert app.received, "the foreign server saw no request: the test proves nothing"
    for _method, _path, headers in app.received:
        assert [h for h in OURS if h in headers] == []
        assert all(USER_TOKEN not in value for value in headers.values())


def assert_first_hop_signed(home: EchoApp) -> None:
    _method, path, headers = home.received[0]
    assert path == "/hop" and set(OURS) <= set(headers)
    assert headers["authorization"] == f"Bearer {USER_TOKEN}"


async def test_cross_origin_redirect_through_an_installed_client(
    servers: tuple[EchoApp, str, EchoApp, str], tmp_path: Path
) -> None:
    home, home_base, foreign, foreign_base = servers
    path = tmp_path / "l.jsonl"
    async with new_run(home_base, path) as run, httpx.AsyncClient(follow_redirects=True) as client:
        run.install(client)
        response = await asyncio.wait_for(
            client.post(f"{home_base}/hop?to={foreign_base}/landing", json=BODY), BOUND
        )
    assert response.status_code == 200 and response.json()["path"] == "/landing"
    assert_first_hop_signed(home)
    assert_nothing_of_ours(foreign)
    assert len(entries(path, kind="ect")) == 1  # the redirected hop is not a call of the run


async def test_cross_origin_redirect_through_a_factory_client(
    servers: tuple[EchoApp, str, EchoApp, str], tmp_path: Path
) -> None:
    home, home_base, foreign, foreign_base = servers
    run = new_run(home_base, tmp_path / "l.jsonl")
    # fastmcp calls the factory with follow_redirects=True
    async with run, run.httpx_client_factory()(follow_redirects=True) as client:
        response = await asyncio.wait_for(
            client.post(f"{home_base}/hop?to={foreign_base}/x", json=BODY), BOUND
        )
    assert response.status_code == 200
    assert_first_hop_signed(home)
    assert_nothing_of_ours(foreign)


async def test_same_origin_redirect_out_of_scope_drops_everything(
    servers: tuple[EchoApp, str, EchoApp, str], tmp_path: Path
) -> None:
    # httpx keeps Authorization on a same-origin redirect; the new path is not the run's endpoint,
    # so the guard (failing closed since issue 12) refuses that hop: it never leaves, with or without
    # what the first hop carried — the user token included.
    home, home_base, _foreign, _ = servers
    async with (
        new_run(home_base, tmp_path / "l.jsonl") as run,
        httpx.AsyncClient(follow_redirects=True) as client,
    ):
        run.install(client)
        with pytest.raises(RequestOutOfScope):
            await asyncio.wait_for(client.post(f"{home_base}/hop?to={home_base}/elsewhere", json=BODY), BOUND)
    assert_first_hop_signed(home)
    assert len(home.received) == 1  # the out-of-scope hop was not sent


async def test_direct_requests_to_a_foreign_origin(
    servers: tuple[EchoApp, str, EchoApp, str], tmp_path: Path
) -> None:
    home, home_base, foreign, foreign_base = servers
    path = tmp_path / "l.jsonl"
    async with new_run(home_base, path) as run:
        async with run.httpx_client_factory()() as client:
            await asyncio.wait_for(
                client.post(f"{foreign_base}/hop", json=BODY), BOUND
            )  # same path, other origin
            await asyncio.wait_for(client.get(f"{foreign_base}/hop"), BOUND)
            await asyncio.wait_for(
                client.post(f"{home_base.replace('127.0.0.1', 'localhost')}/hop", json=BODY), BOUND
            )
        async with httpx.AsyncClient() as installed:
            run.install(installed)
            await asyncio.wait_for(installed.post(f"{foreign_base}/other", json=BODY), BOUND)
    assert_nothing_of_ours(foreign)
    # "localhost" is another origin than "127.0.0.1" (RFC 6454): it got nothing either.
    assert [h for h in OURS if h in home.received[0][2]] == []
    assert entries(path, kind="ect") == []
