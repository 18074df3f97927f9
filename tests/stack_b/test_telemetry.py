"""OpenTelemetry for every accountable call (#17 acceptance 1), stack B (mcp 2.x on httpx2).

The same scenario bodies as ``tests/e2e/test_telemetry.py`` (:mod:`tests.support.telemetry`): the real
SDK with in-memory exporters, a real token endpoint, the verifying FastMCP 4 server behind the gate.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mcpclient_auth.adapters.mcp_v2 import open_client
from tests.support.authz_env import AuthzEnv, authz_server
from tests.support.telemetry import (
    McpStack,
    local_refusal_scenario,
    reobtain_scenario,
    secrets_scenario,
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


async def test_no_token_secret_or_key_in_any_exported_span_or_metric(env: AuthzEnv, tmp_path: Path) -> None:
    await secrets_scenario(STACK_B, env, tmp_path)
