"""The reference verifier middleware with DPoP (RFC 9449) requests, under uvicorn (issue #15).

The middleware does not validate access tokens (bearer or DPoP): that is the resource server's OAuth
layer, which knows ``cnf.jkt`` and can call :func:`mcpclient_auth.authz.verify_proof`. What the
middleware does: it accepts ``Authorization: DPoP`` beside the mandate, and our RFC 9421 signature
covers the ``DPoP`` header, so a swapped or unsigned proof is refused (401) before the app runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcpclient_auth import DPoP
from mcpclient_auth.authz import verify_proof
from mcpclient_auth.demo.hr import build_hr_server, hr_app
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import AgentRun
from tests.support.calls_pipeline import BoundSource
from tests.support.trust import trust_for

pytestmark = pytest.mark.e2e

TOKEN = "at-SENTINEL-dpop-server"
CAPS = ["mcp.get_office_locations"]


@dataclass
class Hr:
    url: str
    user: Identity
    agent: Identity
    trust: TrustStore


@pytest.fixture(scope="module")
def hr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hr]:
    user = Identity.generate("ES256", name="maria")
    agent = Identity.generate("ES256", name="hr-agent")
    trust = trust_for(issuers=[user], agents=[agent])
    ledger = tmp_path_factory.mktemp("server") / "server-ledger.jsonl"
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with running(hr_app(trust, audience=url, ledger=ledger, mcp=build_hr_server()), port):
        yield Hr(url, user, agent, trust)


class Recorder(httpx.AsyncBaseTransport):
    """The innermost transport: keeps every request to the server (as sent) and its status."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[tuple[httpx.Request, bytes, int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        response = await self.inner.handle_async_request(request)
        self.sent.append((request, body, response.status_code))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_dpop_requests_pass_and_a_swapped_or_unsigned_proof_is_refused(hr: Hr, tmp_path: Path) -> None:
    dpop = DPoP(hr.agent)
    run = AgentRun(
        agent=hr.agent,
        issuer=hr.user,
        purpose="HR questions",
        capabilities=CAPS,
        endpoint=hr.url,
        ledger=tmp_path / "client.jsonl",
        principal=Principal(id="maria"),
        token_source=BoundSource(dpop, TOKEN),  # type: ignore[arg-type]
        dpop=dpop,
    )
    recorder = Recorder()
    async with (
        run,
        run.httpx_client_factory()(transport=recorder) as http,
        streamable_http_client(hr.url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        offices = await session.call_tool("get_office_locations", {})
    assert not offices.isError
    posts = [(r, b, s) for r, b, s in recorder.sent if r.method == "POST"]
    assert posts and all(s < 400 for _, _, s in posts)
    request, body, _ = posts[-1]
    assert request.headers["authorization"] == f"DPoP {TOKEN}"
    # What a resource server's token layer would check (cnf.jkt = the agent key's thumbprint).
    verify_proof(
        request.headers["dpop"], method="POST", url=hr.url, access_token=TOKEN, jkt=hr.agent.public.thumbprint
    )
    headers = {k: v for k, v in request.headers.items() if k != "content-length"}
    async with httpx.AsyncClient(timeout=10) as plain:  # no hooks: sends exactly what the test built
        swapped = dict(headers, dpop=dpop.proof("POST", hr.url, access_token=TOKEN).token)
        answer = await plain.post(hr.url, content=body, headers=swapped)
        assert answer.status_code == 401 and answer.json()["code"] == "signature_invalid"
        # A proof added to a request signed without one: the signature does not cover it.
        unsigned = {k: v for k, v in headers.items() if k != "dpop"}
        unsigned["signature-input"] = headers["signature-input"].replace(' "dpop"', "")
        answer = await plain.post(hr.url, content=body, headers=dict(unsigned, dpop=headers["dpop"]))
        assert answer.status_code == 401


async def test_a_cross_origin_redirect_carries_no_proof_and_no_token(tmp_path: Path) -> None:
    import asyncio

    from tests.support.mcp_app import EchoApp
    from tests.support.servers import serve

    home, foreign = EchoApp(), EchoApp()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {}}}
    dpop = DPoP()
    with serve(home) as home_base, serve(foreign) as foreign_base:
        run = AgentRun(
            agent=Identity.generate("ES256", name="agent-1"),
            issuer=Identity.generate("ES256", name="alice"),
            purpose="origins",
            capabilities=["mcp.search"],
            endpoint=f"{home_base}/hop",
            ledger=tmp_path / "l.jsonl",
            principal=Principal(id="alice"),
            token_source=BoundSource(dpop, TOKEN),  # type: ignore[arg-type]
        )
        async with run, run.httpx_client_factory()(follow_redirects=True) as client:
            response = await asyncio.wait_for(client.post(f"{home_base}/hop?to={foreign_base}/x", json=body), 15)
    assert response.status_code == 200
    (_, _, first), (_, _, landed) = home.received[0], foreign.received[0]
    assert first["authorization"] == f"DPoP {TOKEN}" and "dpop" in first
    assert "dpop" not in landed and "authorization" not in landed
    assert all(TOKEN not in value and first["dpop"] not in value for value in landed.values())
