"""Acceptance 4 (issue 9): faults of the MCP server and of the identity provider, on the request path.

Every case uses real servers on 127.0.0.1 (a closed port for "down"; a raw asyncio server for a
connection reset in the middle of an SSE stream), every await is bounded with ``asyncio.wait_for``
well above the configured timeouts, and each case checks that the caller gets a typed error, that
the ledger records the call's outcome — ``error`` for a call without a usable response, ``response``
with the status for an HTTP error answer, ``denial`` when no user token could be had and nothing was
sent — that the ledger still verifies, and that no credential appears in any message or entry.

Token-source faults at the source level (retry counts, reasons, backoff) are covered in
``tests/e2e/test_token_endpoint.py``; here they are driven through ``AgentRun``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcpclient_auth.adapters.mcp_v1 import open_session
from mcpclient_auth.authz import StaticTokens, TokenExchange
from mcpclient_auth.errors import AuthorizationError, InvalidTokenResponse, TokenExchangeUnavailable
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import AgentRun
from tests.support.hooks_env import entries
from tests.support.idp import IdP, Reply
from tests.support.mcp_app import EchoApp
from tests.support.servers import free_port, serve
from tests.support.trust import trust_for

pytestmark = pytest.mark.e2e

ACCESS_TOKEN = "at-SENTINEL-7f3a9c"
SUBJECT_TOKEN = "st-SENTINEL-41d2e8"
CLIENT_SECRET = "cs-SENTINEL-b6e0f5"
SECRETS = (ACCESS_TOKEN, SUBJECT_TOKEN, CLIENT_SECRET)
HEADERS = {"accept": "application/json, text/event-stream"}
CALL = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {"name": "search", "arguments": {"query": "x"}},
}
#: The bound for "no hang": every timeout configured below is at most a second.
BOUND = 15.0
SHORT = httpx.Timeout(0.3)


@pytest.fixture(scope="module")
def keys() -> tuple[Identity, Identity, TrustStore]:
    user = Identity.generate("ES256", name="alice")
    agent = Identity.generate("ES256", name="agent-1")
    return user, agent, trust_for(issuers=[user], agents=[agent])


def texts_of(exc: BaseException) -> str:
    """str and repr of an exception, its causes and contexts, and the members of exception groups."""
    seen: list[str] = []
    todo: list[BaseException | None] = [exc]
    visited: set[int] = set()
    for _ in range(100):
        if not todo:
            break
        item = todo.pop()
        if item is None or id(item) in visited:
            continue
        visited.add(id(item))
        seen += [str(item), repr(item)]
        todo += [item.__cause__, item.__context__, *getattr(item, "exceptions", ())]
    return "\n".join(seen)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def new_run(
    keys: tuple[Identity, Identity, TrustStore], endpoint: str, ledger: Path, **options: Any
) -> AgentRun:
    user, agent, _ = keys
    options.setdefault("token_source", StaticTokens({"alice": ACCESS_TOKEN}))
    return AgentRun(
        agent=agent,
        issuer=user,
        purpose="faults",
        capabilities=["mcp.search"],
        endpoint=endpoint,
        ledger=ledger,
        principal=Principal(id="alice", subject_token=SUBJECT_TOKEN),
        **options,
    )


async def post_and_read(run: AgentRun, url: str, timeout: httpx.Timeout | None = None) -> httpx.Response:
    async with run.httpx_client_factory()(headers=HEADERS, timeout=timeout) as client:
        response = await client.post(url, json=CALL)
        await response.aread()
        return response


def assert_intact_and_unanswered(path: Path, trust: Any, jti: str) -> None:
    """The ledger verifies except for what it must say: this tool call never got its answer."""
    report = verify_ledger(path, trust)
    assert [(f.check, f.jti) for f in report.failures] == [("response_missing", jti)]


def outcome(path: Path) -> tuple[str, str, dict[str, Any]]:
    """(ect jti, outcome kind, outcome meta) of the one call in the ledger."""
    (ect,) = entries(path, kind="ect")
    (done,) = [e for e in entries(path) if e.kind in ("response", "error") and e.jti == ect.jti]
    return str(ect.jti), done.kind, dict(done.meta)


# --- MCP server faults -----------------------------------------------------------------------------


async def _answer_503(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b'{"error":"unavailable"}'})


async def _answer_slowly(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(1.5)  # far beyond the client's 0.3 s read timeout
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


@contextlib.asynccontextmanager
async def sse_then_reset() -> AsyncIterator[str]:
    """A raw HTTP/1.1 server: answers an SSE stream, sends half an event, then resets the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        event = b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\n\n'
        partial = b'event: message\ndata: {"jsonrpc":"2.0","id":7,"res'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + f"{len(event):x}\r\n".encode()
            + event
            + b"\r\n"
            + f"{len(partial) + 200:x}\r\n".encode()
            + partial  # a chunk promised, never finished
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # RST: the connection dies mid-stream

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def test_server_down(keys: Any, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    path = tmp_path / "l.jsonl"
    async with new_run(keys, url, path) as run:
        with pytest.raises(httpx.ConnectError) as caught:
            await asyncio.wait_for(post_and_read(run, url), BOUND)
        assert run.frontier.current() == []
    jti, kind, meta = outcome(path)
    assert (kind, meta["code"]) == ("error", "transport_error")
    assert_intact_and_unanswered(path, keys[2], jti)
    assert_no_secret(texts_of(caught.value), path.read_text())


async def test_server_answers_5xx(keys: Any, tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with serve(_answer_503) as base:
        async with new_run(keys, f"{base}/mcp", path) as run:
            response = await asyncio.wait_for(post_and_read(run, f"{base}/mcp"), BOUND)
            with pytest.raises(httpx.HTTPStatusError) as caught:
                response.raise_for_status()
            assert run.frontier.current() == []  # a failed call is no predecessor
    _, kind, meta = outcome(path)
    assert (kind, meta["status"]) == ("response", 503)
    assert verify_ledger(path, keys[2]).ok
    assert_no_secret(texts_of(caught.value), path.read_text())


async def test_server_slower_than_the_timeout(keys: Any, tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with serve(_answer_slowly) as base:
        async with new_run(keys, f"{base}/mcp", path) as run:
            started = asyncio.get_running_loop().time()
            with pytest.raises(httpx.ReadTimeout) as caught:
                await asyncio.wait_for(post_and_read(run, f"{base}/mcp", timeout=SHORT), BOUND)
            assert asyncio.get_running_loop().time() - started < 1.5  # gave up at the timeout, not the answer
    jti, kind, meta = outcome(path)
    assert (kind, meta["code"]) == ("error", "timeout")
    assert_intact_and_unanswered(path, keys[2], jti)
    assert_no_secret(texts_of(caught.value), path.read_text())


async def test_connection_reset_in_the_middle_of_an_sse_stream(keys: Any, tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    received: list[bytes] = []
    async with sse_then_reset() as url, new_run(keys, url, path) as run:
        async with run.httpx_client_factory()(headers=HEADERS, timeout=SHORT) as client:

            async def consume() -> None:
                async with client.stream("POST", url, json=CALL) as response:
                    assert response.headers["content-type"] == "text/event-stream"
                    async for chunk in response.aiter_raw():
                        received.append(chunk)

            with pytest.raises(httpx.TransportError) as caught:
                await asyncio.wait_for(consume(), BOUND)
        assert run.frontier.current() == []
    assert b"notifications/progress" in b"".join(received)  # the stream had started
    jti, kind, meta = outcome(path)
    assert (kind, meta["code"]) == ("error", "transport_error")
    assert_intact_and_unanswered(path, keys[2], jti)
    assert_no_secret(texts_of(caught.value), path.read_text())


@pytest.mark.parametrize("fault", ["down", "5xx"])
async def test_an_mcp_session_fails_fast_and_records_the_call(fault: str, keys: Any, tmp_path: Path) -> None:
    """Through mcp's ClientSession (open_session): the failure surfaces (mcp raises it from its task
    group) instead of the session waiting forever, and the ledger has the call's outcome."""
    path = tmp_path / "l.jsonl"
    with contextlib.ExitStack() as stack:
        base = (
            f"http://127.0.0.1:{free_port()}" if fault == "down" else stack.enter_context(serve(_answer_503))
        )
        run = new_run(keys, f"{base}/mcp", path)

        async def session_call() -> None:
            async with run, open_session(run) as session:
                await session.call_tool("search", {"query": "x"})

        # mcp raises the transport failure from its task group, wrapped in an ExceptionGroup
        with pytest.raises(BaseException) as caught:
            await asyncio.wait_for(session_call(), BOUND)
    assert not isinstance(caught.value, asyncio.TimeoutError | TimeoutError)
    texts = texts_of(caught.value)
    assert ("ConnectError" if fault == "down" else "503") in texts
    ect = entries(path, kind="ect")[0]  # the initialize request
    (done,) = [e for e in entries(path) if e.kind in ("response", "error") and e.jti == ect.jti]
    assert (done.kind, done.meta.get("code") or done.meta.get("status")) == (
        ("error", "transport_error") if fault == "down" else ("response", 503)
    )
    assert entries(path, kind="record")[0].meta["status"] == "failed"
    assert verify_ledger(path, keys[2]).ok
    assert_no_secret(texts, path.read_text())


# --- identity-provider faults --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idp_and_echo() -> Iterator[tuple[IdP, EchoApp, str]]:
    idp = IdP(clients={"agent": CLIENT_SECRET}, subjects={SUBJECT_TOKEN: "alice"})
    echo = EchoApp()
    with serve(idp.app) as idp_base, serve(echo) as echo_base:
        idp.base_url = idp_base
        yield idp, echo, echo_base


def exchange(token_endpoint: str) -> TokenExchange:
    return TokenExchange(
        token_endpoint,
        client_id="agent",
        client_secret=CLIENT_SECRET,
        audience="api://mcp",
        timeout=0.3,
        retry_backoff=0.01,
    )


async def call_through_installed_client(run: AgentRun, url: str) -> httpx.Response:
    async with httpx.AsyncClient(headers=HEADERS) as client:
        run.install(client)  # plain httpx: refusals raise the typed error
        return await client.post(url, json=CALL)


IDP_FAULTS = {
    "slow": ((Reply.slow(1.0), Reply.slow(1.0)), TokenExchangeUnavailable),
    "5xx twice": ((Reply.unavailable(503), Reply.unavailable(502)), TokenExchangeUnavailable),
    "garbage json": ((Reply.raw(b"<html>{not json"),), InvalidTokenResponse),
    "json array": ((Reply.raw(b"[1, 2, 3]"),), InvalidTokenResponse),
    "no access_token": ((Reply.token(drop=("access_token",)),), InvalidTokenResponse),
    "no token_type": ((Reply.token(drop=("token_type",)),), InvalidTokenResponse),
    "access_token not a string": ((Reply.token(access_token=12345),), InvalidTokenResponse),
}


@pytest.mark.parametrize("fault", [*IDP_FAULTS, "down"])
async def test_idp_faults_refuse_the_call_and_send_nothing(
    fault: str,
    keys: Any,
    idp_and_echo: tuple[IdP, EchoApp, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    idp, echo, echo_base = idp_and_echo
    idp.reset()
    echo.received.clear()
    if fault == "down":
        token_endpoint, expected = f"http://127.0.0.1:{free_port()}/token", TokenExchangeUnavailable
    else:
        replies, expected = IDP_FAULTS[fault]
        idp.queue(*replies)
        token_endpoint = idp.token_url
    path = tmp_path / "l.jsonl"
    url = f"{echo_base}/mcp"
    async with new_run(keys, url, path, token_source=exchange(token_endpoint)) as run:
        with pytest.raises(AuthorizationError) as caught:
            await asyncio.wait_for(call_through_installed_client(run, url), BOUND)
    assert type(caught.value) is expected
    assert caught.value.code == "token_exchange_failed"
    assert echo.received == []  # fail closed: nothing reached the MCP server
    assert entries(path, kind="denial") == []  # the IdP failed: an ``error``, not a decision
    (error,) = entries(path, kind="error")
    assert error.meta["code"] == "token_exchange_failed" and error.meta["principal"] == "alice"
    assert entries(path, kind="ect") == []
    assert verify_ledger(path, keys[2]).ok
    assert_no_secret(texts_of(caught.value), path.read_text(), caplog.text)


async def test_idp_healthy_the_same_wiring_succeeds(
    keys: Any, idp_and_echo: tuple[IdP, EchoApp, str], tmp_path: Path
) -> None:
    """The control case: the faults above fail because of the fault, not because of the set-up."""
    idp, echo, echo_base = idp_and_echo
    idp.reset()
    echo.received.clear()
    path = tmp_path / "l.jsonl"
    async with new_run(keys, f"{echo_base}/mcp", path, token_source=exchange(idp.token_url)) as run:
        response = await asyncio.wait_for(call_through_installed_client(run, f"{echo_base}/mcp"), BOUND)
    assert response.status_code == 200
    (request,) = echo.received
    assert IdP.decode(request[2]["authorization"].removeprefix("Bearer "))["sub"] == "alice"
    assert idp.requests[0].field("subject_token") == SUBJECT_TOKEN
    assert_no_secret(path.read_text())
