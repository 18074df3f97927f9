"""OpenTelemetry for every accountable call (#17 acceptance 1), stack A (mcp 1.x on httpx).

The real SDK with in-memory exporters (:mod:`tests.support.telemetry`), a real token endpoint and the
verifying FastMCP server behind the gate of :mod:`tests.support.authz_env`; the server-span test uses the
demo's HR server behind :class:`~mcpclient_auth.server.McpAuthMiddleware`. Stack B runs the same
scenario bodies in ``tests/stack_b/test_telemetry.py``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from mcpclient_auth import _telemetry
from mcpclient_auth.adapters.mcp_v1 import open_session
from mcpclient_auth.demo.hr import hr_app
from mcpclient_auth.demo.runner import demo_trust
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import Ledger
from mcpclient_auth.policy import McpActionPolicy
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import AgentRun
from tests.support.authz_env import AuthzEnv, authz_server
from tests.support.hooks_env import RecordingTransport, entries
from tests.support.telemetry import (
    McpStack,
    P,
    check_trace_in_ledger_and_ect,
    local_refusal_scenario,
    recorded,
    reobtain_scenario,
    retry_scenario,
    secrets_scenario,
    step_up_scenario,
    tools_call_scenario,
    trace_hex,
)

pytestmark = pytest.mark.e2e

STACK_A = McpStack("A", open_session, lambda result: bool(result.isError))
SEARCH = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "search", "arguments": {"query": "x"}}}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture(scope="module")
def env() -> Iterator[AuthzEnv]:
    with authz_server(["alice"]) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(env: AuthzEnv) -> None:
    env.reset()


async def test_a_tools_call_is_a_client_span_with_its_token_span_and_trace_id(
    env: AuthzEnv, tmp_path: Path
) -> None:
    await tools_call_scenario(STACK_A, env, tmp_path)


async def test_a_local_refusal_is_an_error_span_naming_the_missing_capability(
    env: AuthzEnv, tmp_path: Path
) -> None:
    await local_refusal_scenario(STACK_A, env, tmp_path)


async def test_a_401_re_obtain_is_one_span_with_a_fresh_token_span(env: AuthzEnv, tmp_path: Path) -> None:
    await reobtain_scenario(STACK_A, env, tmp_path)


async def test_a_403_step_up_is_one_span_with_a_step_up_token_span(env: AuthzEnv, tmp_path: Path) -> None:
    await step_up_scenario(STACK_A, env, tmp_path)


async def test_a_retried_token_request_is_counted_on_the_token_span(env: AuthzEnv, tmp_path: Path) -> None:
    await retry_scenario(STACK_A, env, tmp_path)


async def test_no_token_secret_or_key_in_any_exported_span_or_metric(env: AuthzEnv, tmp_path: Path) -> None:
    await secrets_scenario(STACK_A, env, tmp_path)


# --- without OpenTelemetry -------------------------------------------------------------------------------


async def _send_search(env: AuthzEnv, tmp_path: Path) -> tuple[bytes, Path]:
    """One tools/call through an installed httpx client; returns the body bytes that left."""
    path = tmp_path / "ledger.jsonl"
    transport = RecordingTransport()
    body = json.dumps(SEARCH).encode()
    async with (
        env.run("alice", path, token_source=env.exchange()) as run,
        httpx.AsyncClient(transport=transport, headers=MCP_HEADERS) as client,
    ):
        run.install(client)
        response = await asyncio.wait_for(client.post(env.url, content=body), 30)
        await response.aread()
    (exchange,) = [e for e in transport.exchanges if e.request.url.path == "/mcp"]
    return exchange.request.content, path


async def test_without_a_configured_provider_the_body_and_the_ect_are_unchanged(
    env: AuthzEnv, tmp_path: Path
) -> None:
    body = json.dumps(SEARCH).encode()
    assert not _telemetry.active()  # the API is installed, no provider is configured
    sent, path = await _send_search(env, tmp_path / "off")
    assert sent == body  # byte for byte: no params._meta
    (ect,) = entries(path, kind="ect")
    assert "trace" not in ect.meta
    assert ect.token is not None and "ect_ext" not in json.dumps(ect.token)
    from mcpclient_auth.ect import ExecutionContextToken

    assert "ect_ext" not in ExecutionContextToken.decode(ect.token).claims
    # The control: with a provider, the same request leaves stamped (and still verifies).
    with recorded() as rec:
        stamped, stamped_path = await _send_search(env, tmp_path / "on")
        span = rec.one("tools/call search")
    trace_id, span_id = trace_hex(span)
    assert stamped != body
    assert json.loads(stamped)["params"]["_meta"]["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
    assert {k: v for k, v in json.loads(stamped)["params"].items() if k != "_meta"} == SEARCH["params"]
    check_trace_in_ledger_and_ect(span, stamped_path)
    assert env.state.rejected == 0, env.state.errors()


def test_without_the_opentelemetry_api_nothing_is_recorded() -> None:
    """The package imports and runs its hooks' telemetry calls with ``opentelemetry`` missing."""
    script = """
import sys
sys.modules["opentelemetry"] = None  # as if the extra were not installed
import httpx
from mcpclient_auth import _telemetry
assert _telemetry._API is False and not _telemetry.active()
request = httpx.Request("POST", "http://127.0.0.1:9/mcp", content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
assert _telemetry.call_started(request) is None
assert _telemetry.describe(None, request, request.content, None, None) == request.content
with _telemetry.token_span(object()):
    pass
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_global_provider_set_after_import_is_picked_up() -> None:
    """The standard SDK wiring (``trace.set_tracer_provider``), done after the package was imported:
    the next call is traced (a subprocess, since the global provider can be set only once)."""
    script = """
import httpx
from mcpclient_auth import _telemetry
request = httpx.Request("POST", "http://127.0.0.1:9/mcp", content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
assert _telemetry.call_started(request) is None and not _telemetry.active()
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
request = httpx.Request("POST", "http://127.0.0.1:9/mcp", content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
telemetry = _telemetry.call_started(request)
assert telemetry is not None and _telemetry.active()
_telemetry.answered(telemetry, 200)
assert [s.name for s in exporter.get_finished_spans()] == ["mcp"]
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# --- the server span -------------------------------------------------------------------------------------


class SendsEverything(McpActionPolicy):
    """A client policy that lets a tool outside the mandate leave, so the *server* refuses it."""

    def requires_capability(self, call: Any, action: str) -> bool:
        return False


def test_the_server_span_is_a_child_of_the_client_span_with_the_verification_outcome(tmp_path: Path) -> None:
    """The demo's HR server behind McpAuthMiddleware: a verified tools/call, and one it rejects (403)."""
    maria = Identity.generate("ES256", name="maria")
    agent = Identity.generate("ES256", name="hr-agent")
    trust = demo_trust({"maria": maria}, agent)
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    salary = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "get_employee_salary"}}

    async def drive(run: AgentRun) -> int:
        async with run:
            async with open_session(run) as session:
                assert not (await session.call_tool("get_office_locations", {})).isError
            async with httpx.AsyncClient(headers=MCP_HEADERS) as client:
                run.install(client)
                response = await client.post(url, content=json.dumps(salary).encode())
                return response.status_code

    with recorded() as rec, running(hr_app(trust, audience=url), port):
        run = AgentRun(
            agent=agent,
            issuer=maria,
            purpose="offices",
            capabilities=["mcp.get_office_locations"],
            endpoint=url,
            ledger=Ledger(tmp_path / "ledger.jsonl"),
            principal=Principal(id="maria"),
            policy=SendsEverything(),
        )
        assert asyncio.run(drive(run)) == 403
        servers = [s for s in rec.spans() if s.kind == SpanKind.SERVER and s.name != "mcp GET"]
        clients = {s.context.span_id: s for s in rec.spans() if s.kind == SpanKind.CLIENT}

    (accepted,) = [s for s in servers if s.name == "tools/call get_office_locations"]
    attributes = dict(accepted.attributes or {})
    assert attributes[P + "verification"] == "verified"
    assert attributes[P + "principal.id"] == "maria"
    assert attributes[P + "exec_act"] == "mcp.get_office_locations"
    assert attributes["gen_ai.tool.name"] == "get_office_locations"
    # Its parent is the client's span, taken from params._meta of the (signed) body.
    assert accepted.parent is not None and accepted.parent.span_id in clients
    client = clients[accepted.parent.span_id]
    assert client.name == "tools/call get_office_locations"
    assert client.context.trace_id == accepted.context.trace_id
    assert attributes[P + "ect.jti"] == client.attributes[P + "ect.jti"]

    (refusal,) = [s for s in servers if (s.attributes or {}).get(P + "verification") == "rejected"]
    assert refusal.status.status_code == StatusCode.ERROR
    assert refusal.attributes["http.response.status_code"] == 403
    assert refusal.attributes["error.type"] == "capability_not_granted"
    assert refusal.parent is not None
    assert clients[refusal.parent.span_id].name == "tools/call get_employee_salary"
    assert clients[refusal.parent.span_id].attributes["error.type"] == "403"


def test_a_redirected_call_gets_a_span_per_hop_each_named_in_its_ledger_entry(tmp_path: Path) -> None:
    """A 307 from /mcp to /mcp/: each hop is its own ECT (and ledger entry), signed anew; each names
    the span of its own hop, and the ledger verifies (meta.trace = the ECT's trace)."""
    from mcpclient_auth.ledger import verify_ledger
    from tests.support.hooks_env import hr_server

    path = tmp_path / "ledger.jsonl"

    async def call(run: AgentRun) -> None:
        async with run, open_session(run) as session:
            assert not (await session.call_tool("search", {"query": "moved"})).isError

    with hr_server() as env, recorded() as rec:
        env.state.redirect_slash = True
        asyncio.run(call(env.run(path)))
        assert env.state.rejected == 0, env.state.errors()
        hops = rec.named("tools/call search")
    assert sorted(s.attributes["http.response.status_code"] for s in hops) == [200, 307]
    by_ect = {s.attributes[P + "ect.jti"]: s for s in hops}
    tool_ects = [e for e in entries(path, kind="ect") if e.meta.get("tool") == "search"]
    assert len(tool_ects) == 2 and {e.jti for e in tool_ects} == set(by_ect)
    for entry in tool_ects:
        assert entry.meta["trace"] == trace_hex(by_ect[entry.jti])[0]
    assert verify_ledger(path, env.trust).ok
