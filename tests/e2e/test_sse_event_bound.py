"""Issue 13, finding 5: the SSE response watcher holds no event larger than its bound.

A real FastMCP server streams a tool answer as one SSE event larger than the watcher's bound
(lowered for the test to 256 KiB; the default is 16 MiB, sse.MAX_EVENT_BYTES). The watcher drops it
instead of holding it, the client ledger's ``response`` entry records ``event_too_large``, and the
call does not join the DAG: the next call's ECT does not name it as a predecessor. A small answer in
the same session still completes and joins. The run's ledger verifies.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcpclient_auth import sse
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.ledger import verify_ledger
from tests.support.hooks_env import DEFAULT_CAPS, Env, entries, hr_server
from tests.support.mcp_app import build_mcp

pytestmark = pytest.mark.e2e

LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    mcp = build_mcp()

    @mcp.tool
    def big_report(size: int) -> str:
        """A report of ``size`` characters."""
        return "x" * size

    with hr_server(mcp=mcp) as server:
        yield server


async def test_an_oversize_event_is_flagged_and_does_not_join_the_dag(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", LIMIT)
    path = tmp_path / "ledger.jsonl"
    run = env.run(path, capabilities=[*DEFAULT_CAPS, "mcp.big_report"])
    async with (
        run,
        run.httpx_client_factory()() as http,
        streamable_http_client(env.url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        small = await session.call_tool("get_office_locations", {})
        big = await session.call_tool("big_report", {"size": 4 * LIMIT})
        after = await session.call_tool("get_office_locations", {})
    assert not small.isError and not after.isError
    assert not big.isError  # the transport still delivered it; only the ledger could not inspect it
    ects = {e.meta.get("tool"): e for e in entries(path, kind="ect") if e.meta.get("tool")}
    responses = {e.jti: e for e in entries(path, kind="response")}
    big_jti = next(e.jti for e in entries(path, kind="ect") if e.meta.get("tool") == "big_report")
    assert responses[big_jti].meta["code"] == "event_too_large"
    assert responses[big_jti].meta["bytes"] <= 2 * LIMIT  # recorded when the bound was crossed
    small_jtis = [e.jti for e in entries(path, kind="ect") if e.meta.get("tool") == "get_office_locations"]
    assert "code" not in responses[small_jtis[0]].meta
    # The last call builds on the first small one, not on the oversize one.
    last = ExecutionContextToken.decode(ects["get_office_locations"].token or "")
    assert small_jtis[0] in last.pred and big_jti not in last.pred
    assert verify_ledger(path, env.trust).ok
