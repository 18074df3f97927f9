"""Issue 12, findings 4 and 6, end to end against the HR server behind ``McpAuthMiddleware``:

- endpoint spellings (``/./mcp``, ``/x/../mcp``, ``HTTP://LOCALHOST:p``, an explicit port that
  normalises, ``:80``): every request signed, the mandate's and the ECT's ``aud`` and ``wimse-aud``
  equal to the URI the request was sent to — checked by the middleware and by PyJWT;
- the scope guard fails closed on the run's origin (OAuth discovery and learned token endpoints pass);
- MCP sessions are bound to the caller that opened them (POST, GET, DELETE by another agent: 403);
- ECTs without ``wid`` or with a ``pred`` the server never accepted are refused.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.demo.hr import build_hr_server, hr_app
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.endpoints import canonical_url
from mcpclient_auth.errors import RequestOutOfScope
from mcpclient_auth.factory import httpx_client_factory
from mcpclient_auth.httpsig import RequestSigner
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import Ledger
from mcpclient_auth.refusal import REFUSAL_CODE
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import PROBLEM_TYPE_PREFIX
from tests.support.hooks_env import RecordingTransport
from tests.support.servers import serve
from tests.support.trust import trust_for

pytestmark = [pytest.mark.e2e]

CAPS = ["mcp.get_office_locations"]
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
OFFICES = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "get_office_locations", "arguments": {}},
}
OUR_HEADERS = ("act-mandate", "execution-context", "signature", "signature-input", "content-digest")


@dataclass
class Actors:
    maria: Identity
    agent: Identity
    erik: Identity
    other_agent: Identity

    @property
    def trust(self) -> Any:
        return trust_for(issuers=[self.maria, self.erik], agents=[self.agent, self.other_agent])

    def run(
        self,
        endpoint: str,
        ledger: Path,
        *,
        user: Identity | None = None,
        agent: Identity | None = None,
        **options: Any,
    ) -> AgentRun:
        return AgentRun(
            agent=agent or self.agent,
            issuer=user or self.maria,
            purpose="HR questions",
            capabilities=CAPS,
            endpoint=endpoint,
            ledger=ledger,
            **options,
        )


@dataclass
class Server:
    base: str
    url: str  # the audience the middleware verifies against (canonical)
    ledger: Path


def _metadata_routes(mcp: Any) -> None:
    @mcp.custom_route("/.well-known/oauth-authorization-server", methods=["GET"])
    async def server_metadata(request: Request) -> JSONResponse:
        base = f"{request.url.scheme}://{request.url.netloc}"
        return JSONResponse({"issuer": base, "token_endpoint": f"{base}/oauth/token"})

    @mcp.custom_route("/oauth/token", methods=["POST"])
    async def token(request: Request) -> JSONResponse:
        return JSONResponse({"access_token": "opaque", "token_type": "Bearer", "expires_in": 60})

    @mcp.custom_route("/admin", methods=["GET", "POST"])
    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({"reached": True})


@contextmanager
def hr_server(
    actors: Actors, tmp: Path, *, host: str = "127.0.0.1", port: int | None = None, **options: Any
) -> Iterator[Server]:
    port = port or free_port()
    audience = canonical_url(f"http://{host}:{port}/mcp")
    mcp = build_hr_server()
    _metadata_routes(mcp)
    ledger = tmp / f"server-{uuid.uuid4().hex}.jsonl"
    with running(hr_app(actors.trust, audience=audience, ledger=ledger, mcp=mcp, **options), port):
        yield Server(f"http://127.0.0.1:{port}", audience, ledger)


@pytest.fixture(scope="module")
def actors() -> Actors:
    return Actors(*(Identity.generate("ES256", name=n) for n in ("maria", "hr-agent", "erik", "other-agent")))


@pytest.fixture(scope="module")
def server(actors: Actors, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with hr_server(actors, tmp_path_factory.mktemp("srv")) as running_server:
        yield running_server


def pem(identity: Identity) -> bytes:
    return identity.public.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sent_uri(request: httpx.Request) -> str:
    url = request.url
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.raw_path.decode('ascii').partition('?')[0]}"


async def session_through(run: AgentRun, spelling: str, recorder: RecordingTransport) -> Any:
    factory = run.httpx_client_factory()
    async with (
        factory(transport=recorder) as http,
        streamable_http_client(spelling, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await session.call_tool("get_office_locations", {})


def assert_signed_for_the_sent_uri(recorder: RecordingTransport, actors: Actors, canonical: str) -> None:
    assert recorder.exchanges
    methods = set()
    for exchange in recorder.exchanges:
        request = exchange.request
        methods.add(request.method)
        uri = sent_uri(request)
        assert uri == canonical  # every request went to the canonical URI ...
        assert "signature" in request.headers and "act-mandate" in request.headers  # ... signed
        assert f'wimse-aud="{uri}"' in request.headers["signature-input"]
        assert 200 <= exchange.status < 300, (request.method, exchange.status)  # the middleware accepted it
        mandate = pyjwt.decode(
            request.headers["act-mandate"], pem(actors.maria), algorithms=["ES256"], audience=uri
        )
        assert mandate["aud"] == [uri] or mandate["aud"] == uri
        if request.method == "POST":
            ect = pyjwt.decode(
                request.headers["execution-context"], pem(actors.agent), algorithms=["ES256"], audience=uri
            )
            assert ect["aud"] == [uri]
    assert {"POST", "DELETE"} <= methods


# --- finding 4: endpoint spellings ---------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["{base}/./mcp", "{base}/x/../mcp", "http://127.0.0.1:0{port}/mcp"])
async def test_endpoint_spellings_sign_every_request_for_the_uri_sent(
    spelling: str, server: Server, actors: Actors, tmp_path: Path
) -> None:
    url = spelling.format(base=server.base, port=server.base.rsplit(":", 1)[1])
    recorder = RecordingTransport()
    run = actors.run(url, tmp_path / "l.jsonl")
    async with run:
        result = await session_through(run, url, recorder)
    assert not result.isError
    assert run.endpoints == [server.url]
    assert_signed_for_the_sent_uri(recorder, actors, server.url)
    ects = [e for e in Ledger.open(tmp_path / "l.jsonl").entries(kind="ect")]
    assert ects and {e.meta["url"] for e in ects} == {server.url}


async def test_upper_case_localhost_spelling(actors: Actors, tmp_path: Path) -> None:
    port = free_port()
    with hr_server(actors, tmp_path, host="localhost", port=port) as srv:
        assert srv.url == f"http://localhost:{port}/mcp"
        spelling = f"HTTP://LOCALHOST:{port}/mcp"
        recorder = RecordingTransport()
        run = actors.run(spelling, tmp_path / "l.jsonl")
        async with run:
            result = await session_through(run, spelling, recorder)
    assert not result.isError
    assert_signed_for_the_sent_uri(recorder, actors, srv.url)


def _port_80_free() -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 80))
        except OSError:
            return False
    return True


@pytest.mark.skipif(not _port_80_free(), reason="needs to bind 127.0.0.1:80")
@pytest.mark.parametrize("spelling", ["http://127.0.0.1:80/mcp", "HTTP://127.0.0.1:80/./mcp"])
async def test_explicit_default_port(spelling: str, actors: Actors, tmp_path: Path) -> None:
    # httpx sends "HTTP://host:80/" to "http://host:80/" (it keeps the port under an upper-case
    # scheme): the hook sends the canonical URI instead, so the tokens' aud is the URI on the wire.
    with hr_server(actors, tmp_path, port=80) as srv:
        assert srv.url == "http://127.0.0.1/mcp"
        recorder = RecordingTransport()
        run = actors.run(spelling, tmp_path / "l.jsonl")
        async with run:
            result = await session_through(run, spelling, recorder)
    assert not result.isError
    assert_signed_for_the_sent_uri(recorder, actors, "http://127.0.0.1/mcp")


# --- finding 4: the guard fails closed -------------------------------------------------------------------


async def test_a_path_outside_the_endpoints_is_refused_not_sent_unsigned(
    server: Server, actors: Actors, tmp_path: Path
) -> None:
    path = tmp_path / "l.jsonl"
    recorder = RecordingTransport()
    async with actors.run(server.url, path) as run:
        async with httpx_client_factory(run, answer_locally=False)(
            transport=recorder, headers=ACCEPT
        ) as plain:
            with pytest.raises(RequestOutOfScope) as info:
                await plain.post(f"{server.base}/admin", json=OFFICES)
            with pytest.raises(RequestOutOfScope):
                await plain.get(f"{server.base}/admin")
        async with run.httpx_client_factory()(transport=recorder, headers=ACCEPT) as session_client:
            local = await session_client.post(f"{server.base}/./admin", json=OFFICES)
    assert recorder.exchanges == []  # nothing left the client
    assert info.value.code == "request_out_of_scope"
    error = local.json()["error"]
    assert error["code"] == REFUSAL_CODE and error["data"]["code"] == "request_out_of_scope"
    denials = list(Ledger.open(path).entries(kind="denial"))
    assert [d.meta["code"] for d in denials] == ["request_out_of_scope"] * 3
    assert denials[0].meta["tool"] == "get_office_locations"


async def test_oauth_discovery_and_the_learned_token_endpoint_pass_untouched(
    server: Server, actors: Actors, tmp_path: Path
) -> None:
    recorder = RecordingTransport()
    run = actors.run(server.url, tmp_path / "l.jsonl")
    async with run, httpx_client_factory(run, answer_locally=False)(transport=recorder) as client:
        with pytest.raises(RequestOutOfScope):  # not (yet) known as a token endpoint
            await client.post(f"{server.base}/oauth/token", data={"grant_type": "client_credentials"})
        prm = await client.get(f"{server.base}/.well-known/oauth-protected-resource/mcp")
        metadata = await client.get(f"{server.base}/.well-known/oauth-authorization-server")
        token = await client.post(f"{server.base}/oauth/token", data={"grant_type": "client_credentials"})
        with pytest.raises(RequestOutOfScope):
            await client.post(f"{server.base}/oauth/other", data={"grant_type": "client_credentials"})
    assert metadata.status_code == 200 and token.status_code == 200 and prm.status_code in (200, 404)
    assert [sent_uri(x.request).rsplit("/", 1)[1] for x in recorder.exchanges] == [
        "mcp",
        "oauth-authorization-server",
        "token",
    ]
    for exchange in recorder.exchanges:
        assert not any(h in exchange.request.headers for h in OUR_HEADERS)  # no credential, no signature
    assert [e.kind for e in Ledger.open(tmp_path / "l.jsonl").entries()].count("ect") == 0


# --- finding 6: sessions bound to whoever opened them ------------------------------------------------------


async def rpc(
    client: httpx.AsyncClient,
    url: str,
    message: dict[str, Any] | None,
    session: str | None,
    method: str = "POST",
) -> httpx.Response:
    headers = dict(ACCEPT)
    if session is not None:
        headers["mcp-session-id"] = session
    content = json.dumps(message).encode() if message is not None else None
    return await client.request(method, url, content=content, headers=headers)


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    document = response.json()
    assert document["type"] == PROBLEM_TYPE_PREFIX + document["code"]
    return str(document["code"])


async def test_another_agent_cannot_use_a_session_it_did_not_open(
    server: Server, actors: Actors, tmp_path: Path
) -> None:
    owner = actors.run(server.url, tmp_path / "maria.jsonl")
    intruder = actors.run(server.url, tmp_path / "erik.jsonl", user=actors.erik, agent=actors.other_agent)
    same_user_other_agent = actors.run(server.url, tmp_path / "x.jsonl", agent=actors.other_agent)
    factory = httpx_client_factory
    async with (
        owner,
        intruder,
        same_user_other_agent,
        factory(owner, answer_locally=False)() as mine,
        factory(intruder, answer_locally=False)() as theirs,
        factory(same_user_other_agent, answer_locally=False)() as sibling,
    ):
        opened = await rpc(mine, server.url, INIT, None)
        assert opened.status_code == 200
        sid = opened.headers["mcp-session-id"]
        assert (await rpc(mine, server.url, INITIALIZED, sid)).status_code == 202

        # Erik's agent, with its own valid mandate, learns the session id
        posted = await rpc(theirs, server.url, OFFICES, sid)
        assert (posted.status_code, problem_code(posted)) == (403, "session_not_yours")
        streamed = await rpc(theirs, server.url, None, sid, method="GET")
        assert (streamed.status_code, problem_code(streamed)) == (403, "session_not_yours")
        deleted = await rpc(theirs, server.url, None, sid, method="DELETE")
        assert (deleted.status_code, problem_code(deleted)) == (403, "session_not_yours")
        # the same user's mandate for another agent key is another caller too
        sibling_post = await rpc(sibling, server.url, OFFICES, sid)
        assert (sibling_post.status_code, problem_code(sibling_post)) == (403, "session_not_yours")
        unknown = await rpc(theirs, server.url, OFFICES, "not-a-session")
        assert (unknown.status_code, problem_code(unknown)) == (404, "session_unknown")

        # the owner's session survived all of it
        answer = await rpc(mine, server.url, OFFICES, sid)
        assert answer.status_code == 200 and "Berlin" in answer.text
        assert (await rpc(mine, server.url, None, sid, method="DELETE")).status_code == 200
        after = await rpc(mine, server.url, OFFICES, sid)
        assert (after.status_code, problem_code(after)) == (404, "session_unknown")
    denials = [e for e in Ledger.open(server.ledger).entries(kind="denial") if e.run == intruder.id]
    assert [d.meta["code"] for d in denials] == ["session_not_yours"] * 3 + ["session_unknown"]


# --- finding 6: wid and pred --------------------------------------------------------------------------------


def crafted(
    server: Server, actors: Actors, mandate: Mandate, *, wid: str | None, pred: list[str]
) -> httpx.Request:
    body = json.dumps(INIT).encode()
    ect = ExecutionContextToken.mint(
        actors.agent,
        audience=[server.url],
        exec_act="mcp.rpc.initialize",
        pred=pred,
        wid=wid,
        inp_hash=sha256_b64url(body),
    )
    request = httpx.Request(
        "POST",
        server.url,
        content=body,
        headers={**ACCEPT, "act-mandate": mandate.token, "execution-context": ect.token},
    )
    RequestSigner(actors.agent).sign(request)
    return request


async def test_ects_without_wid_or_with_an_unseen_pred_are_refused(server: Server, actors: Actors) -> None:
    mandate = Mandate.issue(
        actors.maria, agent=actors.agent, audience=server.url, purpose="p", capabilities=CAPS
    )
    async with httpx.AsyncClient() as plain:
        no_wid = await plain.send(crafted(server, actors, mandate, wid=None, pred=[mandate.jti]))
        forged = await plain.send(crafted(server, actors, mandate, wid=mandate.jti, pred=[str(uuid.uuid4())]))
        first = await plain.send(crafted(server, actors, mandate, wid=mandate.jti, pred=[mandate.jti]))
        chained_ect = ExecutionContextToken.decode(first.request.headers["execution-context"])
        chained = await plain.send(crafted(server, actors, mandate, wid=mandate.jti, pred=[chained_ect.jti]))
    assert (no_wid.status_code, problem_code(no_wid)) == (401, "ect_wid_missing")
    assert (forged.status_code, problem_code(forged)) == (401, "pred_unknown")
    assert first.status_code == 200 and chained.status_code == 200  # a pred the server accepted is fine


async def test_the_ledger_url_is_the_uri_as_sent(server: Server, actors: Actors, tmp_path: Path) -> None:
    spelling = f"{server.base}/m cp/ä/./x/.."
    recorder = RecordingTransport()
    run = actors.run(spelling, tmp_path / "l.jsonl")
    async with (
        run,
        httpx_client_factory(run, answer_locally=False)(transport=recorder, headers=ACCEPT) as client,
    ):
        await client.post(spelling, json=INIT)  # the HR server has no such path: its answer does not matter
    (ect,) = Ledger.open(tmp_path / "l.jsonl").entries(kind="ect")
    (exchange,) = recorder.exchanges
    assert ect.meta["url"] == run.endpoints[0] == sent_uri(exchange.request) == f"{server.base}/m%20cp/%C3%A4"
    token = ExecutionContextToken.decode(exchange.request.headers["execution-context"])
    assert token.aud == [f"{server.base}/m%20cp/%C3%A4"]


async def test_a_resource_metadata_url_named_by_a_401_passes_untouched(
    actors: Actors, tmp_path: Path
) -> None:
    # A server whose RFC 9728 metadata lives at a path of its own choosing: mcp's OAuth flow fetches
    # the URL the 401 names, through the run's client.
    async def mcp_endpoint(request: Request) -> JSONResponse:
        challenge = f'Bearer resource_metadata="{request.url.scheme}://{request.url.netloc}/meta/prm"'
        return JSONResponse(
            {"error": "unauthorized"}, status_code=401, headers={"www-authenticate": challenge}
        )

    async def metadata(request: Request) -> JSONResponse:
        return JSONResponse({"resource": f"{request.url.scheme}://{request.url.netloc}/mcp"})

    app = Starlette(routes=[Route("/mcp", mcp_endpoint, methods=["POST"]), Route("/meta/{name}", metadata)])
    recorder = RecordingTransport()
    with serve(app) as base:
        run = actors.run(f"{base}/mcp", tmp_path / "l.jsonl")
        async with (
            run,
            httpx_client_factory(run, answer_locally=False)(transport=recorder, headers=ACCEPT) as client,
        ):
            with pytest.raises(RequestOutOfScope):
                await client.get(f"{base}/meta/prm")  # not named by anyone yet
            assert (await client.post(f"{base}/mcp", json=INIT)).status_code == 401
            assert (await client.get(f"{base}/meta/prm")).status_code == 200
            with pytest.raises(RequestOutOfScope):
                await client.get(f"{base}/meta/other")
    signed, fetched = (x.request for x in recorder.exchanges)
    assert "signature" in signed.headers and not any(h in fetched.headers for h in OUR_HEADERS)
