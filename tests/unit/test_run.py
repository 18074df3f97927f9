"""AgentRun construction, configuration errors and lifecycle without a network."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from mcpclient_auth._calls import Admitted, prepare
from mcpclient_auth._hooks import current_run, use_run
from mcpclient_auth._hooks.auth import AuthFlow
from mcpclient_auth.act import ExecutionRecord, Mandate
from mcpclient_auth.authz import StaticTokens
from mcpclient_auth.errors import ConfigurationError, RunClosed, TokenExpired
from mcpclient_auth.factory import DEFAULT_TIMEOUT, httpx_client_factory, install, multi_run_client_factory
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import Ledger
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import AgentRun
from tests.support.trust import trust_for

URL = "http://127.0.0.1:9/mcp"  # never contacted


@pytest.fixture(scope="module")
def keys() -> tuple[Identity, Identity]:
    return Identity.generate("ES256", name="alice"), Identity.generate("EdDSA", name="agent-1")


def make(keys: tuple[Identity, Identity], tmp_path: Path, **kw: object) -> AgentRun:
    user, agent = keys
    options: dict[str, object] = {
        "issuer": user,
        "purpose": "p",
        "capabilities": ["mcp.search"],
        "endpoint": URL,
        "ledger": tmp_path / "l.jsonl",
    }
    options.update(kw)
    return AgentRun(agent=agent, **options)  # type: ignore[arg-type]


def test_a_new_run_writes_its_mandate_entry(keys: tuple[Identity, Identity], tmp_path: Path) -> None:
    run = make(keys, tmp_path)
    (entry,) = list(Ledger.open(tmp_path / "l.jsonl").entries())
    assert entry.kind == "mandate" and entry.jti == run.id == entry.run
    mandate = Mandate.decode(entry.token)  # type: ignore[arg-type]
    assert mandate.aud == [URL] and mandate.binds(keys[1]) and mandate.capabilities == ["mcp.search"]
    assert run.principal == Principal(id="alice")  # default: the mandate's issuer
    assert run.mandate.token not in repr(run)


def test_an_existing_mandate_is_used(keys: tuple[Identity, Identity], tmp_path: Path) -> None:
    user, agent = keys
    mandate = Mandate.issue(user, agent=agent, audience=URL, purpose="given", capabilities=["mcp.x"])
    run = AgentRun(agent=agent, mandate=mandate.token, endpoint=URL, ledger=tmp_path / "l.jsonl")
    assert run.id == mandate.jti and run.mandate.purpose == "given"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"issuer": None},  # neither issuer nor mandate
        {"purpose": ""},
        {"capabilities": None},
        {"mandate_header": "cookie"},
        {"mandate_header": "authorization", "token_source": StaticTokens({"alice": "t"})},
        {"endpoint": "relative"},
    ],
)
def test_configuration_errors(keys: tuple[Identity, Identity], tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        make(keys, tmp_path, **kwargs)


def test_mandates_for_another_agent_or_audience_or_expired_are_refused(
    keys: tuple[Identity, Identity], tmp_path: Path
) -> None:
    user, agent = keys
    other = Identity.generate("ES256", name="agent-1")
    for_other = Mandate.issue(user, agent=other, audience=URL, purpose="p", capabilities=[])
    with pytest.raises(ConfigurationError, match=r"cnf\.jkt"):
        AgentRun(agent=agent, mandate=for_other.token, endpoint=URL, ledger=tmp_path / "a.jsonl")
    unbound = Mandate.issue(user, agent="someone-else", audience=URL, purpose="p", capabilities=[])
    with pytest.raises(ConfigurationError, match="sub"):
        AgentRun(agent=agent, mandate=unbound.token, endpoint=URL, ledger=tmp_path / "b.jsonl")
    mine = Mandate.issue(user, agent=agent, audience=URL, purpose="p", capabilities=[])
    with pytest.raises(ConfigurationError, match="aud"):
        AgentRun(agent=agent, mandate=mine, audience="https://elsewhere", endpoint=URL, ledger=tmp_path / "c.jsonl")
    expired = Mandate.issue(user, agent=agent, audience=URL, purpose="p", capabilities=[], now=1_000_000)
    with pytest.raises(TokenExpired):
        AgentRun(agent=agent, mandate=expired, endpoint=URL, ledger=tmp_path / "d.jsonl")
    assert not (tmp_path / "d.jsonl").exists() or (tmp_path / "d.jsonl").read_bytes() == b""


def test_close_is_idempotent_and_the_record_of_a_run_without_calls(
    keys: tuple[Identity, Identity], tmp_path: Path
) -> None:
    run = make(keys, tmp_path)
    record = asyncio.run(run.aclose(output={"answer": 42}, status="cancelled"))
    assert run.close() is record and run.closed
    assert record.pred == [] and record.exec_act is None and record.status == "cancelled"
    ExecutionRecord.verify(record.token, _trust(keys), mandate=run.mandate)
    kinds = [e.kind for e in Ledger.open(tmp_path / "l.jsonl").entries()]
    assert kinds == ["mandate", "record", "seal"]
    with pytest.raises(ConfigurationError):
        make(keys, tmp_path / "x").close(status="done")  # type: ignore[arg-type]


def test_close_after_more_than_100_parallel_completions_names_at_most_100_preds(
    keys: tuple[Identity, Identity], tmp_path: Path
) -> None:
    # 150 tool calls that all began before any completed: the frontier holds 150 leaves, but a token
    # may name at most 100 predecessors, so the record names the oldest 100 and still verifies.
    run = make(keys, tmp_path)
    pred = run.frontier.begin()
    leaves = [f"call-{i}" for i in range(150)]
    for jti in leaves:
        run.frontier.complete(jti, pred)
    record = run.close(output="done")
    assert record.pred == leaves[:100]
    ExecutionRecord.verify(record.token, _trust(keys), mandate=run.mandate)


def test_requests_after_close_raise_run_closed(keys: tuple[Identity, Identity], tmp_path: Path) -> None:
    run = make(keys, tmp_path)
    run.close()
    with httpx.Client() as client:
        run.install(client)
        with pytest.raises(RunClosed):
            client.post(URL, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})


def test_factory_shape_defaults_and_authorization_refusal(keys: tuple[Identity, Identity], tmp_path: Path) -> None:
    run = make(keys, tmp_path)
    factory = run.httpx_client_factory()
    client = factory(follow_redirects=True)  # fastmcp passes extra kwargs
    assert client.timeout == DEFAULT_TIMEOUT and client.follow_redirects
    assert len(client.event_hooks["request"]) == 1
    with pytest.raises(ConfigurationError, match="Authorization"):
        factory(headers={"authorization": "Bearer smuggled"})

    async def mine(request: httpx.Request) -> None:
        pass

    client = factory(event_hooks={"request": [mine], "response": []})
    assert client.event_hooks["request"][0] is mine and len(client.event_hooks["request"]) == 2  # appended


def test_install_refuses_a_second_run_and_gives_sync_clients_the_auth_flow(
    keys: tuple[Identity, Identity], tmp_path: Path
) -> None:
    run = make(keys, tmp_path)
    client = httpx.AsyncClient()
    install(client, run)
    with pytest.raises(ConfigurationError, match="already"):
        install(client, run)
    with_tokens = make(keys, tmp_path / "t", token_source=StaticTokens({"alice": "t"}))
    sync_client = httpx.Client()
    with_tokens.install(sync_client)  # token sources are async; the sync flow waits on the token loop
    assert isinstance(sync_client.auth, AuthFlow)
    with pytest.raises(ConfigurationError):
        install(object(), run)  # type: ignore[arg-type]


def test_multi_run_clients_need_a_selected_run(keys: tuple[Identity, Identity], tmp_path: Path) -> None:
    run = make(keys, tmp_path)
    client = multi_run_client_factory()()
    hooks = client.event_hooks["request"][0].__self__  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="no AgentRun selected"):
        hooks.select()
    assert current_run() is None
    with use_run(run):
        assert hooks.select() is run and current_run() is run
    with run.activate():
        assert current_run() is run
    assert current_run() is None
    assert httpx_client_factory(run)().event_hooks["request"][0].__self__.select() is run  # type: ignore[attr-defined]


def _trust(keys: tuple[Identity, Identity]) -> object:
    user, agent = keys
    return trust_for(issuers=[user], agents=[agent])


class _Refused(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)


class _BrokenBody(httpx.AsyncByteStream):
    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield b'{"jsonrpc":"2.0",'
        raise httpx.ReadError("connection reset")


class _BreaksMidBody(httpx.AsyncBaseTransport):
    """Fault injection a real server cannot produce on demand: the body stream dies halfway."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=_BrokenBody())


TOOL_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {}}}


def test_calls_still_in_flight_at_close_get_an_incomplete_error(
    keys: tuple[Identity, Identity], tmp_path: Path
) -> None:
    run = make(keys, tmp_path)
    with httpx.Client(transport=_Refused()) as client:  # installed without our transport wrapper
        run.install(client)
        with pytest.raises(httpx.ConnectError):
            client.post(URL, json=TOOL_CALL)
    run.close()
    found = list(Ledger.open(tmp_path / "l.jsonl").entries())
    assert [e.kind for e in found] == ["mandate", "ect", "error", "record", "seal"]
    assert found[2].meta["code"] == "incomplete" and found[2].jti == found[1].jti
    assert run.record is not None and run.record.pred == []


async def test_a_body_that_breaks_midway_is_an_error_not_a_response(
    keys: tuple[Identity, Identity], tmp_path: Path
) -> None:
    run = make(keys, tmp_path)
    async with run.httpx_client_factory()(transport=_BreaksMidBody()) as client:
        with pytest.raises(httpx.ReadError):
            await client.post(URL, json=TOOL_CALL)
    await run.aclose()
    found = list(Ledger.open(tmp_path / "l.jsonl").entries())
    assert [e.kind for e in found] == ["mandate", "ect", "error", "record", "seal"]
    assert found[2].meta["code"] == "transport_error" and found[2].meta["message"] == "ReadError"
    assert run.frontier.current() == []


def test_no_credential_in_reprs(keys: tuple[Identity, Identity], tmp_path: Path) -> None:
    run = make(keys, tmp_path, token_source=StaticTokens({"alice": "user-secret-token"}))
    from mcpclient_auth.jsonrpc import Call

    call = Call("request", "tools/call", 1, "search")
    endpoint = run.endpoint_set.endpoints[0]
    request = httpx.Request("POST", URL, content=b"{}")
    admitted = Admitted(call, "mcp.search")
    prepared = prepare(run, request, b"{}", endpoint, admitted, "Bearer user-secret-token")
    assert prepared.headers["Authorization"] == "Bearer user-secret-token"
    for text in (repr(prepared), repr(prepared.inflight), repr(run), repr(run.principal)):
        assert "user-secret-token" not in text
        assert run.mandate.token not in text


def _ssl_context_of(client: httpx.AsyncClient) -> object:
    transport: object = client._transport
    while hasattr(transport, "inner"):  # our wrappers keep the real transport as .inner
        transport = transport.inner
    return transport._pool._ssl_context  # type: ignore[attr-defined]


def test_factory_clients_share_one_ssl_context_unless_verify_is_given(
    keys: tuple[Identity, Identity], tmp_path: Path
) -> None:
    # langchain-mcp-adapters builds a client per tool call; a fresh SSL context each time costs ~25 ms.
    factory = make(keys, tmp_path).httpx_client_factory()
    first, second = factory(), factory()
    assert _ssl_context_of(first) is _ssl_context_of(second)
    assert _ssl_context_of(factory(verify=False)) is not _ssl_context_of(first)


def test_endpoint_url_admits_only_the_runs_endpoints(keys: tuple[Identity, Identity], tmp_path: Path) -> None:
    # The one check every adapter's url= goes through (open_session, open_client, signed_client).
    run = make(keys, tmp_path)
    assert run.endpoint_url() == URL == run.endpoints[0]
    assert run.endpoint_url(URL) == URL
    for other in ("https://evil.example/mcp", URL + "/other", "http://127.0.0.1:10/mcp", "not a url"):
        with pytest.raises(ConfigurationError, match="one of the run's endpoints"):
            run.endpoint_url(other)


def test_repr_of_a_run_whose_init_failed_part_way_does_not_raise(tmp_path: Path) -> None:
    # A traceback formatter or debugger may repr the half-built object; a second error would hide the first.
    run = AgentRun.__new__(AgentRun)
    assert "not initialised" in repr(run)
