"""Acceptance 1 (issue 9): many users, many concurrent runs, many tool calls, one local server.

50 users x 20 concurrent runs x 10 tool calls (scale with ``MCPCA_LOAD_USERS`` / ``MCPCA_LOAD_RUNS`` /
``MCPCA_LOAD_CALLS``). The users go in waves of ``MCPCA_LOAD_WAVE`` users, all their runs at once;
every run has its own client from ``run.httpx_client_factory()`` and takes the user's token from one
shared :class:`StaticTokens`. The server (another process) verifies every request with the guard and
checks the bearer token against the mandate's issuer. Afterwards:

- no lost ledger line: every ``ect`` has exactly one ``response`` or ``error``;
- zero cross-user tokens at the server, zero rejections, one verified ECT per call;
- every run verifies and is sealed;
- memory is flat: no run (nor, so, any in-flight call or hook pointing to it) and no client
  survives its wave, and the client process's RSS after the last wave is within a bound of its RSS
  after the first (warm-up) wave.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcpclient_auth.authz import StaticTokens
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import AgentRun
from tests.support.trust import trust_for

from .support import ServerProcess, env_int, rss_bytes, server_process

pytestmark = pytest.mark.e2e

USERS = env_int("LOAD_USERS", 50)
RUNS = env_int("LOAD_RUNS", 20)
CALLS = env_int("LOAD_CALLS", 10)
WAVE = env_int("LOAD_WAVE", 10)
#: RSS growth allowed between the end of the first wave and the end of the last one. The ledger
#: files, caches and pools are warm after one wave; a leak of one object per call (10 000 calls)
#: of even a few hundred bytes would show up beyond allocator noise.
RSS_SLACK = 24 * 1024 * 1024
HEADERS = {"accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def users() -> list[Identity]:
    return [Identity.generate("ES256", name=f"user{n:02d}") for n in range(USERS)]


@pytest.fixture(scope="module")
def agent() -> Identity:
    return Identity.generate("ES256", name="agent-load")


@pytest.fixture(scope="module")
def server(users: list[Identity], agent: Identity) -> Iterator[ServerProcess]:
    with server_process(trust_for(issuers=users, agents=[agent])) as running:
        yield running


def _body(n: int, query: str) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": n,
        "method": "tools/call",
        "params": {"name": "search", "arguments": {"query": query}},
    }


async def _one_run(
    user: Identity,
    agent: Identity,
    url: str,
    ledger: Ledger,
    source: StaticTokens,
    index: int,
    tracked: list[weakref.ref[Any]],
) -> str:
    run = AgentRun(
        agent=agent,
        issuer=user,
        purpose=f"load run {index} of {user.name}",
        capabilities=["mcp.search"],
        endpoint=url,
        ledger=ledger,
        principal=Principal(id=user.name),
        token_source=source,
    )
    async with run, run.httpx_client_factory()(headers=HEADERS) as client:
        tracked += [weakref.ref(run), weakref.ref(client)]
        for n in range(CALLS):
            response = await client.post(url, json=_body(n, f"{user.name}-{index}-{n}"))
            assert response.status_code == 200, response.text
            assert "result" in response.json()
    return run.id


async def test_many_users_many_concurrent_runs(
    server: ServerProcess, users: list[Identity], agent: Identity, tmp_path: Path
) -> None:
    source = StaticTokens({user.name: f"tok-{user.name}" for user in users})
    trust = trust_for(issuers=users, agents=[agent])
    paths = {user.name: tmp_path / f"{user.name}.jsonl" for user in users}
    run_ids: dict[str, list[str]] = {}
    rss: list[int] = []
    started = time.perf_counter()
    for first in range(0, USERS, WAVE):
        wave = users[first : first + WAVE]
        tracked: list[weakref.ref[Any]] = []
        ledgers = {user.name: Ledger(paths[user.name], durability="none") for user in wave}
        try:
            jobs = [
                _one_run(user, agent, server.url, ledgers[user.name], source, index, tracked)
                for user in wave
                for index in range(RUNS)
            ]
            done = await asyncio.wait_for(asyncio.gather(*jobs), timeout=300)
        finally:
            for ledger in ledgers.values():
                ledger.close()
        for user, run_id in zip([u for u in wave for _ in range(RUNS)], done, strict=True):
            run_ids.setdefault(user.name, []).append(run_id)
        del jobs, done, ledgers
        gc.collect()
        # Nothing of a finished run survives it: not the run (which every in-flight call, hook and
        # stream wrapper points to), not its client.
        assert len(tracked) == 2 * len(wave) * RUNS
        assert [ref for ref in tracked if ref() is not None] == []
        rss.append(rss_bytes())
    elapsed = time.perf_counter() - started

    total_calls = USERS * RUNS * CALLS
    stats = server.stats()
    assert stats["cross_user"] == 0 and stats["missing_token"] == 0
    assert stats["rejected"] == 0
    assert stats["verified_ects"] == total_calls
    assert stats["bound"] == total_calls

    for user in users:
        reader = Ledger.open(paths[user.name])
        kinds: Counter[str] = Counter()
        answered: Counter[str] = Counter()
        ects: set[str] = set()
        for entry in reader.entries():
            kinds[entry.kind] += 1
            if entry.kind == "ect":
                ects.add(str(entry.jti))
            elif entry.kind in ("response", "error"):
                answered[str(entry.jti)] += 1
        assert len(ects) == RUNS * CALLS
        assert set(answered) == ects and set(answered.values()) == {1}  # no lost line, none twice
        assert kinds["error"] == 0 and kinds["denial"] == 0
        assert kinds["seal"] == kinds["record"] == kinds["mandate"] == RUNS
        report = verify_ledger(paths[user.name], trust)
        assert report.ok, report.failures[:3]
        assert sorted(report.runs) == sorted(run_ids[user.name])
        assert all(summary.sealed and summary.verified for summary in report.runs.values())
        assert f"tok-{user.name}" not in paths[user.name].read_text()

    growth = rss[-1] - rss[0]
    print(
        f"\nload: {USERS} users x {RUNS} runs x {CALLS} calls = {total_calls} calls in {elapsed:.1f} s "
        f"({total_calls / elapsed:.0f} calls/s); RSS after waves (MiB): "
        f"{[round(r / 2**20, 1) for r in rss]}; growth {growth / 2**20:.1f} MiB"
    )
    if len(rss) > 1:
        assert growth < RSS_SLACK
