"""McpRequestVerifier and the replay store (issue 13): ids are claimed last, all-or-nothing, once."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import ReplayStoreFull, ReplayStoreUnavailable
from mcpclient_auth.httpsig import RequestSigner
from mcpclient_auth.keys import Identity
from mcpclient_auth.replay import MemoryReplayStore
from mcpclient_auth.replay_redis import RedisReplayStore
from mcpclient_auth.server import (
    IncomingHeaders,
    IncomingRequest,
    McpRequestVerifier,
    PendingRequest,
    Rejection,
    VerifiedRequest,
    http_status_for,
)
from tests.support.redis_server import RedisServer
from tests.support.trust import trust_for

URL = "https://hr.example/mcp"
USER = Identity.generate("ES256", name="maria")
AGENT = Identity.generate("ES256", name="hr-agent")
TRUST = trust_for(issuers=[USER], agents=[AGENT])


@pytest.fixture
def mandate() -> Mandate:
    # Issued per test, not at import: a long randomly ordered suite must not outlive its lifetime.
    return Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=["mcp.search"])


def call(
    mandate: Mandate, *, exec_act: str = "mcp.search", ect: ExecutionContextToken | None = None
) -> IncomingRequest:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {}}}
    ).encode()
    ect = ect or ExecutionContextToken.mint(
        AGENT, audience=[URL], exec_act=exec_act, pred=[mandate.jti], wid=mandate.jti, inp_hash=sha256_b64url(body)
    )
    headers = {"content-type": "application/json", "act-mandate": mandate.token, "execution-context": ect.token}
    request = httpx.Request("POST", URL, content=body, headers=headers)
    RequestSigner(AGENT).sign(request)
    return IncomingRequest("POST", URL, IncomingHeaders(request.headers.raw), request.content)


def verifier(store: MemoryReplayStore) -> McpRequestVerifier:
    return McpRequestVerifier(TRUST, audience=URL, replay_store=store)


def test_a_request_refused_by_a_later_check_takes_no_room(mandate: Mandate) -> None:
    store = MemoryReplayStore()
    checks = verifier(store)
    for _ in range(5):
        rejection = checks.check(call(mandate, exec_act="mcp.other"))
        assert isinstance(rejection, Rejection) and rejection.error.code == "exec_act_mismatch"
    assert len(store) == 0  # before issue 13 the nonce and the jti were both stored here


def test_check_unclaimed_stores_nothing_and_commit_stores_both_ids_once(mandate: Mandate) -> None:
    store = MemoryReplayStore()
    checks = verifier(store)
    request = call(mandate)
    pending = checks.check_unclaimed(request)
    assert isinstance(pending, PendingRequest) and not isinstance(pending, VerifiedRequest)
    assert len(store) == 0 and {c.kind for c in pending.claims} == {"nonce", "ect"}
    assert {c.partition for c in pending.claims} == {AGENT.public.thumbprint}
    verified = checks.commit(pending)
    assert isinstance(verified, VerifiedRequest) and len(store) == 2
    again = checks.commit(pending)
    assert isinstance(again, Rejection) and again.error.code == "nonce_replayed" and again.status == 401
    replayed = checks.check(request)
    assert isinstance(replayed, Rejection) and replayed.error.code == "nonce_replayed"


def test_a_used_ect_under_a_fresh_signature_is_a_replay(mandate: Mandate) -> None:
    checks = verifier(MemoryReplayStore())
    first = call(mandate)
    assert isinstance(checks.check(first), VerifiedRequest)
    ect = ExecutionContextToken.decode(first.headers["execution-context"])
    second = checks.check(call(mandate, ect=ect))
    assert isinstance(second, Rejection) and second.error.code == "replay_detected"


def test_a_full_store_is_a_retryable_503_that_still_names_the_run(mandate: Mandate) -> None:
    store = MemoryReplayStore(max_entries=10, max_entries_per_key=2)
    checks = verifier(store)
    assert isinstance(checks.check(call(mandate)), VerifiedRequest)
    refused = checks.check(call(mandate))
    assert isinstance(refused, Rejection) and isinstance(refused.error, ReplayStoreFull)
    assert http_status_for(refused.error) == refused.status == 503 and refused.error.retryable
    assert refused.mandate is not None and refused.mandate.jti == mandate.jti  # filed under the run


async def test_acommit_is_the_same_claim(mandate: Mandate) -> None:
    checks = verifier(MemoryReplayStore())
    pending = checks.check_unclaimed(call(mandate))
    assert isinstance(pending, PendingRequest)
    assert isinstance(await checks.acommit(pending), VerifiedRequest)
    again = await checks.acommit(pending)
    assert isinstance(again, Rejection) and again.error.code == "nonce_replayed"


@pytest.mark.parametrize("threads", [8])
def test_racing_identical_requests_let_exactly_one_through(threads: int, mandate: Mandate) -> None:
    checks = verifier(MemoryReplayStore())
    request = call(mandate)
    barrier = threading.Barrier(threads)
    results: list[object] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=10)
        outcome = checks.check(request)
        with lock:
            results.append(outcome)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=30)
    assert sum(isinstance(r, VerifiedRequest) for r in results) == 1
    assert sum(isinstance(r, Rejection) and r.error.code == "nonce_replayed" for r in results) == threads - 1


def test_the_sync_verifier_path_with_redis_fails_closed_too(mandate: Mandate, redis_server: RedisServer) -> None:
    checks = McpRequestVerifier(TRUST, audience=URL, replay_store=RedisReplayStore(redis_server.url))
    request = call(mandate)
    assert isinstance(checks.check(request), VerifiedRequest)
    replayed = checks.check(request)
    assert isinstance(replayed, Rejection) and replayed.error.code == "nonce_replayed"
    redis_server.stop()
    down = checks.check(call(mandate))
    assert isinstance(down, Rejection) and (down.status, down.error.code) == (503, "replay_store_unavailable")
    with pytest.raises(ReplayStoreUnavailable):
        checks.verify(call(mandate))
