"""OpenTelemetry for every accountable call (#17 acceptance 1), stack B (mcp 2.x on httpx2).

The same scenario bodies as ``tests/e2e/test_telemetry.py`` (:mod:`tests.support.telemetry`): the real
SDK with in-memory exporters, a real token endpoint, the verifying FastMCP 4 server behind the gate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from mcpclient_auth.adapters.mcp_v2 import open_client
from mcpclient_auth.policy import McpActionPolicy
from tests.stack_b.signing import verified_server
from tests.support.authz_env import AuthzEnv, authz_server
from tests.support.telemetry import (
    McpStack,
    P,
    local_refusal_scenario,
    recorded,
    reobtain_scenario,
    retry_scenario,
    secrets_scenario,
    step_up_scenario,
    tools_call_scenario,
)

STACK_B = McpStack("B", open_client, lambda result: bool(result.is_error))


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
    await tools_call_scenario(STACK_B, env, tmp_path)


async def test_a_local_refusal_is_an_error_span_naming_the_missing_capability(
    env: AuthzEnv, tmp_path: Path
) -> None:
    await local_refusal_scenario(STACK_B, env, tmp_path)


async def test_a_401_re_obtain_is_one_span_with_a_fresh_token_span(env: AuthzEnv, tmp_path: Path) -> None:
    await reobtain_scenario(STACK_B, env, tmp_path)


async def test_a_403_step_up_is_one_span_with_a_step_up_token_span(env: AuthzEnv, tmp_path: Path) -> None:
    await step_up_scenario(STACK_B, env, tmp_path)


async def test_a_retried_token_request_is_counted_on_the_token_span(env: AuthzEnv, tmp_path: Path) -> None:
    await retry_scenario(STACK_B, env, tmp_path)


async def test_no_token_secret_or_key_in_any_exported_span_or_metric(env: AuthzEnv, tmp_path: Path) -> None:
    await secrets_scenario(STACK_B, env, tmp_path)


# --- the server span (McpAuthMiddleware in front of fastmcp 4) ------------------------------------------


class SendsEverything(McpActionPolicy):
    """A client policy that lets a tool outside the mandate leave, so the *server* refuses it."""

    def requires_capability(self, call: Any, action: str) -> bool:
        return False


@pytest.mark.parametrize("mode", ["stateless", "legacy"])
async def test_the_server_span_is_a_child_of_the_client_span_with_the_verification_outcome(
    mode: str, tmp_path: Path
) -> None:
    with verified_server(mode, tmp_path) as server, recorded() as rec:
        run = server.run(tmp_path / "client.jsonl", capabilities=["mcp.search"], policy=SendsEverything())
        async with asyncio.timeout(60), run, open_client(run) as client:
            assert not (await client.call_tool("search", {"query": "traced"})).is_error
            with pytest.raises(Exception):
                await client.call_tool("get_employee_salary", {"employee": "bob"})
        spans = rec.spans()
    clients = {s.context.span_id: s for s in spans if s.kind == SpanKind.CLIENT}
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    (accepted,) = [s for s in servers if s.name == "tools/call search"]
    assert accepted.attributes[P + "verification"] == "verified"
    assert accepted.attributes[P + "principal.id"] == "alice"
    assert accepted.attributes[P + "exec_act"] == "mcp.search"
    assert accepted.parent is not None and accepted.parent.span_id in clients
    client = clients[accepted.parent.span_id]
    assert client.name == "tools/call search" and client.context.trace_id == accepted.context.trace_id
    assert accepted.attributes[P + "ect.jti"] == client.attributes[P + "ect.jti"]
    rejected = [s for s in servers if (s.attributes or {}).get(P + "verification") == "rejected"]
    assert rejected and all(s.status.status_code == StatusCode.ERROR for s in rejected)
    assert {s.attributes["error.type"] for s in rejected} == {"capability_not_granted"}
    assert all(clients[s.parent.span_id].name == "tools/call get_employee_salary" for s in rejected if s.parent)
