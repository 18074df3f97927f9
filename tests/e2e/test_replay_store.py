"""Replay protection under attack (issue 13, finding 1): flood, several workers, a store that goes away.

Real components only: FastMCP under uvicorn behind ``McpAuthMiddleware``, a real ``redis-server``
(fixture ``redis_server``), worker *processes* for the cross-worker replay. Requests are built as
``AgentRun`` sends them (``tests.support.replay_server.signed_call``) and replayed byte for byte.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mcpclient_auth.act import Mandate
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.replay import MemoryReplayStore, ReplayStore
from mcpclient_auth.replay_redis import RedisReplayStore
from mcpclient_auth.server import PROBLEM_TYPE_PREFIX
from tests.support.redis_server import RedisServer
from tests.support.replay_server import Calls, build_app, send_to, signed_call, worker_process
from tests.support.trust import trust_for

pytestmark = pytest.mark.e2e


@dataclass
class People:
    maria: Identity
    maria_agent: Identity
    erik: Identity
    erik_agent: Identity
    trust: TrustStore

    def mandate(self, url: str, *, flooder: bool = False) -> Mandate:
        user, agent = (self.erik, self.erik_agent) if flooder else (self.maria, self.maria_agent)
        return Mandate.issue(user, capabilities=["mcp.record"], agent=agent, audience=url, purpose="test")


@pytest.fixture(scope="module")
def people() -> People:
    maria, erik = Identity.generate("ES256", name="maria"), Identity.generate("ES256", name="erik")
    maria_agent = Identity.generate("ES256", name="maria-agent")
    erik_agent = Identity.generate("ES256", name="erik-agent")
    trust = trust_for(issuers=[maria, erik], agents=[maria_agent, erik_agent])
    return People(maria, maria_agent, erik, erik_agent, trust)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as plain:  # no hooks: sends exactly what a test built
        yield plain


def code_of(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    document = json.loads(response.text)
    assert document["type"] == PROBLEM_TYPE_PREFIX + document["code"]
    return str(document["code"])


def make_store(kind: str, request: pytest.FixtureRequest) -> ReplayStore:
    if kind == "memory":
        # Small on purpose: 4 ids per key (two requests), 32 in all.
        return MemoryReplayStore(max_entries=32, max_entries_per_key=4)
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    return RedisReplayStore(redis_server.url, prefix=f"test:{time.time_ns()}:")


@contextmanager
def hr_server(people: People, store: ReplayStore) -> Iterator[tuple[str, Calls]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    app, calls = build_app(people.trust, audience=url, replay_store=store)
    with running(app, port):
        yield url, calls


# --- acceptance 1: the flood ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_flood_of_rejected_requests_cannot_push_a_captured_request_back_in(
    kind: str, people: People, client: httpx.Client, request: pytest.FixtureRequest
) -> None:
    store = make_store(kind, request)
    with hr_server(people, store) as (url, calls):
        victim = people.mandate(url)
        captured = signed_call(url, victim, people.maria_agent, "salary review")
        assert client.send(captured).status_code == 200
        assert calls.count == 1

        # A key holder floods requests that pass the signature and fail a later check. Before issue
        # 13 each of them took two slots (nonce, ECT jti) and a full cache evicted the oldest ids.
        flood = people.mandate(url, flooder=True)
        for i in range(40):
            wrong = signed_call(url, flood, people.erik_agent, f"flood {i}", exec_act="mcp.other")
            response = client.send(wrong)
            assert (response.status_code, code_of(response)) == (401, "exec_act_mismatch")

        replayed = client.send(captured)
        assert (replayed.status_code, code_of(replayed)) == (401, "nonce_replayed")
        assert calls.count == 1  # the tool did not run again

        # Requests that pass every check do store their ids. The memory store's per-key share then
        # runs out for the flooder alone: 503 replay_store_full, retryable; nothing forgotten.
        outcomes = []
        for i in range(4):
            response = client.send(signed_call(url, flood, people.erik_agent, f"valid {i}"))
            outcomes.append(response.status_code)
            if response.status_code == 503:
                assert code_of(response) == "replay_store_full"
                assert int(response.headers["retry-after"]) >= 1
                assert json.loads(response.text)["retryable"] is True
        if kind == "memory":
            assert outcomes == [200, 200, 503, 503]
        else:
            assert outcomes == [200, 200, 200, 200]  # Redis has no per-key quota (maxmemory is yours)
        assert calls.count == 1 + outcomes.count(200)

        replayed = client.send(captured)
        assert (replayed.status_code, code_of(replayed)) == (401, "nonce_replayed")
        # The victim's own share is untouched: fresh requests go on.
        assert client.send(signed_call(url, victim, people.maria_agent, "next")).status_code == 200


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_concurrent_identical_requests_run_the_tool_once(
    kind: str, people: People, request: pytest.FixtureRequest
) -> None:
    import concurrent.futures

    store = make_store(kind, request)
    with hr_server(people, store) as (url, calls):
        captured = signed_call(url, people.mandate(url), people.maria_agent, "once")
        with httpx.Client(timeout=10) as one, concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: one.send(captured).status_code, range(8)))
        assert sorted(statuses) == [200] + [401] * 7
        assert calls.count == 1


# --- acceptance 1: two worker processes, one Redis -------------------------------------------------------


@pytest.mark.parametrize(("shared", "replay_status"), [(True, 401), (False, 200)], ids=["redis", "memory"])
def test_replay_to_another_worker_is_refused_when_they_share_redis(
    shared: bool, replay_status: int, people: People, client: httpx.Client, tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    # Two uvicorn processes behind one public origin (what a load balancer gives the client). The
    # memory-store run is the control: without a shared store the replay gets through.
    trust_file = people.trust.save(tmp_path / "trust.json")
    port_a, port_b = free_port(), free_port()
    origin = f"http://127.0.0.1:{port_a}"
    url = f"{origin}/mcp"
    extra = ["--public-url", origin] + (["--redis", redis_server.url] if shared else [])
    with (
        worker_process(port_a, trust_file, audience=url, extra=extra) as a,
        worker_process(port_b, trust_file, audience=url, extra=extra) as b,
    ):
        assert a.pid != b.pid
        mandate = people.mandate(url)
        captured = signed_call(url, mandate, people.maria_agent, "to worker A")
        assert send_to(client, captured, a.base).status_code == 200
        replayed = send_to(client, captured, b.base)
        assert replayed.status_code == replay_status, replayed.text
        if shared:
            assert code_of(replayed) == "nonce_replayed"
            # A fresh signature around the same ECT: the ECT's jti is shared too.
            first_ect = captured.headers["execution-context"]
            from mcpclient_auth.ect import ExecutionContextToken

            again = signed_call(
                url, mandate, people.maria_agent, "to worker A", ect=ExecutionContextToken.decode(first_ect)
            )
            response = send_to(client, again, b.base)
            assert (response.status_code, code_of(response)) == (401, "replay_detected")
        assert (a.calls(), b.calls()) == (1, 0 if shared else 1)


# --- acceptance 1: Redis goes away ------------------------------------------------------------------------


def test_redis_stopped_mid_test_is_503_and_nothing_runs(
    people: People, client: httpx.Client, redis_server: RedisServer
) -> None:
    store = RedisReplayStore(redis_server.url, timeout=0.25)
    with hr_server(people, store) as (url, calls):
        mandate = people.mandate(url)
        assert client.send(signed_call(url, mandate, people.maria_agent, "before")).status_code == 200
        redis_server.stop()
        started = time.monotonic()
        response = client.send(signed_call(url, mandate, people.maria_agent, "while down"))
        elapsed = time.monotonic() - started
        assert (response.status_code, code_of(response)) == (503, "replay_store_unavailable")
        assert response.headers["retry-after"] == "1"
        assert calls.count == 1  # the tool did not run
        assert elapsed < 5  # generous: bounded by the store's 0.25 s timeouts, no retries
        redis_server.start()
        assert client.send(signed_call(url, mandate, people.maria_agent, "after")).status_code == 200
        assert calls.count == 2
