"""The reference verifier middleware in front of a real FastMCP server under uvicorn (issue 6, acc. 2).

Correct requests come from real signed clients (``AgentRun`` + mcp's streamable-HTTP client);
the negatives are hand-crafted with the SDK's own signer so exactly one thing is wrong in each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from starlette.requests import Request
from starlette.responses import JSONResponse

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.demo.hr import build_hr_server, hr_app
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.httpsig import RequestSigner
from mcpclient_auth.jsonrpc import Call, parse
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.policy import McpActionPolicy
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import PROBLEM_TYPE_PREFIX
from tests.support.mcp_app import GATES, build_mcp
from tests.support.trust import trust_for

pytestmark = pytest.mark.e2e

INIT = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "hand-crafted", "version": "1"},
        },
    }
).encode()
ACCEPT = "application/json, text/event-stream"
ALL_CAPS = ["mcp.get_office_locations", "mcp.get_employee_salary"]


def tool_body(name: str, arguments: dict[str, Any], request_id: int = 7) -> bytes:
    message = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }
    return json.dumps(message).encode()


@dataclass
class Hr:
    url: str
    user: Identity
    agent: Identity
    other: Identity
    trust: TrustStore
    ledger: Path

    def mandate(self, caps: list[str] | None = None, **kwargs: Any) -> Mandate:
        options: dict[str, Any] = {"agent": self.agent, "audience": self.url, "purpose": "HR questions"}
        options.update(kwargs)
        return Mandate.issue(self.user, capabilities=caps or ALL_CAPS, **options)

    def signed(
        self,
        body: bytes,
        mandate: Mandate | None = None,
        *,
        signer: Identity | None = None,
        ect_body: bytes | None = None,
    ) -> httpx.Request:
        """A request as AgentRun would send it: mandate, ECT for ``ect_body`` (default: ``body``), signature."""
        mandate = mandate or self.mandate()
        key = signer or self.agent
        call = parse(ect_body or body)
        assert isinstance(call, Call)
        ect = ExecutionContextToken.mint(
            key,
            audience=[self.url],
            exec_act=McpActionPolicy().action_for(call),
            pred=[mandate.jti],
            wid=mandate.jti,
            inp_hash=sha256_b64url(ect_body or body),
        )
        request = httpx.Request(
            "POST",
            self.url,
            content=body,
            headers={
                "content-type": "application/json",
                "accept": ACCEPT,
                "act-mandate": mandate.token,
                "execution-context": ect.token,
            },
        )
        RequestSigner(key).sign(request)
        return request


def _custom_routes(mcp: Any) -> None:
    @mcp.custom_route("/.well-known/oauth-protected-resource/mcp", methods=["GET"])
    async def resource_metadata(request: Request) -> JSONResponse:
        return JSONResponse(
            {"resource": str(request.url).replace("/.well-known/oauth-protected-resource", "")}
        )


@pytest.fixture(scope="module")
def hr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hr]:
    user = Identity.generate("ES256", name="maria")
    agent = Identity.generate("ES256", name="hr-agent")
    other = Identity.generate("ES256", name="intruder")  # a trusted agent key no mandate binds
    trust = trust_for(issuers=[user], agents=[agent, other])
    ledger = tmp_path_factory.mktemp("server") / "server-ledger.jsonl"
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    mcp = build_hr_server()
    _custom_routes(mcp)
    with running(hr_app(trust, audience=url, ledger=ledger, mcp=mcp), port):
        yield Hr(url, user, agent, other, trust, ledger)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as plain:  # no hooks: sends exactly what a test built
        yield plain


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["type"] == PROBLEM_TYPE_PREFIX + code
    assert document["code"] == code
    assert document["status"] == status
    return document


def copy_of(request: httpx.Request, *, content: bytes | None = None) -> httpx.Request:
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    return httpx.Request(
        request.method, request.url, headers=headers, content=request.content if content is None else content
    )


# --- the positive path -----------------------------------------------------------------------------------


async def test_signed_client_passes_and_the_tool_sees_the_principal(hr: Hr, tmp_path: Path) -> None:
    run = AgentRun(
        agent=hr.agent,
        issuer=hr.user,
        purpose="HR questions",
        capabilities=ALL_CAPS,
        endpoint=hr.url,
        ledger=tmp_path / "client.jsonl",
        principal=Principal(id="maria"),
    )
    async with (
        run,
        run.httpx_client_factory()() as http,
        streamable_http_client(hr.url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        offices = await session.call_tool("get_office_locations", {})
        salary = await session.call_tool("get_employee_salary", {"employee": "bob"})
    assert not offices.isError and not salary.isError
    assert salary.structuredContent == {"employee": "bob", "salary": 98_000, "asked_by": "maria"}
    # The server's audit ledger holds this run's mandate and both tool calls, and verifies.
    entries = [e for e in Ledger.open(hr.ledger).entries() if e.run == run.id]
    assert entries[0].kind == "mandate"
    assert [e.meta.get("tool") for e in entries if e.kind == "ect" and e.meta.get("tool")] == [
        "get_office_locations",
        "get_employee_salary",
    ]
    # No ledger_key here: nothing signs the server ledger, so all of it is the (accepted) tail.
    report = verify_ledger(hr.ledger, hr.trust, allow_unsealed=True, allow_unsealed_tail=True)
    assert report.ok, report.failures


def test_hand_crafted_correct_request_passes(hr: Hr, client: httpx.Client) -> None:
    response = client.send(hr.signed(INIT))
    assert response.status_code == 200, response.text
    assert "mcp-session-id" in response.headers


# --- 401: missing or invalid credentials ------------------------------------------------------------------


def test_no_signature_is_401_with_a_challenge(hr: Hr, client: httpx.Client) -> None:
    response = client.post(
        hr.url, content=INIT, headers={"content-type": "application/json", "accept": ACCEPT}
    )
    problem(response, 401, "signature_missing")
    assert response.headers["www-authenticate"].startswith("HTTPSig")


def test_changed_body_is_401(hr: Hr, client: httpx.Client) -> None:
    tampered = INIT.replace(b"hand-crafted", b"hand-crafteD")
    problem(client.send(copy_of(hr.signed(INIT), content=tampered)), 401, "content_digest_mismatch")


def test_replayed_nonce_is_401(hr: Hr, client: httpx.Client) -> None:
    request = hr.signed(INIT)
    assert client.send(request).status_code == 200
    problem(client.send(copy_of(request)), 401, "nonce_replayed")


def test_replayed_ect_jti_is_401(hr: Hr, client: httpx.Client) -> None:
    request = hr.signed(INIT)
    assert client.send(request).status_code == 200
    again = copy_of(request)
    RequestSigner(hr.agent).sign(again)  # a fresh signature and nonce; the same ECT
    assert again.headers["signature"] != request.headers["signature"]
    problem(client.send(again), 401, "replay_detected")


def test_expired_mandate_is_401(hr: Hr, client: httpx.Client) -> None:
    expired = hr.mandate(ttl=300, now=time.time() - 3600)
    problem(client.send(hr.signed(INIT, expired)), 401, "token_expired")


def test_mandate_for_another_audience_is_401(hr: Hr, client: httpx.Client) -> None:
    elsewhere = hr.mandate(audience="http://127.0.0.1:1/other-mcp")
    problem(client.send(hr.signed(INIT, elsewhere)), 401, "audience_mismatch")


def test_signature_by_a_key_the_mandate_does_not_bind_is_401(hr: Hr, client: httpx.Client) -> None:
    problem(client.send(hr.signed(INIT, signer=hr.other)), 401, "signature_policy_violation")


def test_unbound_mandate_is_401(hr: Hr, client: httpx.Client) -> None:
    unbound = hr.mandate(agent="hr-agent")  # a name only: any trusted key could act on it
    problem(client.send(hr.signed(INIT, unbound)), 401, "mandate_unbound")


def test_ect_for_another_body_is_401(hr: Hr, client: httpx.Client) -> None:
    # Digest and signature match the body sent; the ECT's inp_hash names a different body.
    other = INIT.replace(b"hand-crafted", b"other-client")
    problem(client.send(hr.signed(INIT, ect_body=other)), 401, "inp_hash_mismatch")


# --- 403: valid credentials, action not granted --------------------------------------------------------------


def test_tool_outside_the_cap_is_403_and_audited(hr: Hr, client: httpx.Client) -> None:
    mandate = hr.mandate(["mcp.get_office_locations"])
    response = client.send(hr.signed(tool_body("get_employee_salary", {"employee": "bob"}), mandate))
    document = problem(response, 403, "capability_not_granted")
    assert "mcp.get_employee_salary" in document["detail"]
    denials = [e for e in Ledger.open(hr.ledger).entries() if e.run == mandate.jti and e.kind == "denial"]
    assert [(d.meta["tool"], d.meta["code"], d.meta["status"]) for d in denials] == [
        ("get_employee_salary", "capability_not_granted", 403)
    ]
    assert verify_ledger(hr.ledger, hr.trust, allow_unsealed=True, allow_unsealed_tail=True).ok


def test_granted_tool_passes_the_middleware(hr: Hr, client: httpx.Client) -> None:
    # Past the middleware, FastMCP itself answers (no session yet): anything but our problem document.
    mandate = hr.mandate(["mcp.get_office_locations"])
    response = client.send(hr.signed(tool_body("get_office_locations", {}), mandate))
    assert response.headers.get("content-type") != "application/problem+json"
    assert response.status_code not in (401, 403)


# --- what passes untouched, and the SSE GET -------------------------------------------------------------------


def test_oauth_discovery_passes_without_credentials(hr: Hr, client: httpx.Client) -> None:
    response = client.get(hr.url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"))
    assert response.status_code == 200
    assert response.json() == {"resource": hr.url}


def test_sse_get_is_verified_and_streams(hr: Hr, tmp_path: Path) -> None:
    run = AgentRun(
        agent=hr.agent,
        issuer=hr.user,
        purpose="HR questions",
        capabilities=ALL_CAPS,
        endpoint=hr.url,
        ledger=tmp_path / "client.jsonl",
    )
    with httpx.Client(timeout=10) as signed_client, httpx.Client(timeout=10) as plain:
        run.install(signed_client)
        opened = signed_client.post(
            hr.url, content=INIT, headers={"content-type": "application/json", "accept": ACCEPT}
        )
        session = opened.headers["mcp-session-id"]
        notified = signed_client.post(
            hr.url,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers={"accept": ACCEPT, "mcp-session-id": session},
        )
        assert notified.status_code == 202
        stream_headers = {"accept": "text/event-stream", "mcp-session-id": session}
        # Unsigned: refused before FastMCP sees it.
        problem(plain.get(hr.url, headers=stream_headers), 401, "signature_missing")
        # Signed: the stream opens and stays open — the middleware neither reads nor waits for a body.
        with signed_client.stream("GET", hr.url, headers=stream_headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert "signature" in stream.request.headers
    run.close()


async def test_streamed_responses_pass_through_unbuffered(tmp_path: Path) -> None:
    # build_mcp's ``stepwise`` continues only after the client has *seen* each progress notification:
    # if the middleware held back the response stream, the tool would report a stall instead.
    user = Identity.generate("ES256", name="maria")
    agent = Identity.generate("ES256", name="hr-agent")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    key = f"middleware-{port}"
    seen: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(f"progress {int(progress)}")
        GATES.release(key)

    run = AgentRun(
        agent=agent,
        issuer=user,
        purpose="p",
        capabilities=["mcp.stepwise"],
        endpoint=url,
        ledger=tmp_path / "c.jsonl",
    )
    with running(hr_app(trust_for(issuers=[user], agents=[agent]), audience=url, mcp=build_mcp()), port):
        async with (
            run,
            run.httpx_client_factory()() as http,
            streamable_http_client(url, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool(
                "stepwise", {"key": key, "steps": 3}, progress_callback=on_progress
            )
    assert result.content[0].text == "streamed"  # type: ignore[union-attr]
    assert seen == ["progress 1", "progress 2", "progress 3"]
