"""Server-side session binding and DAG shape, without a network (issue 12, finding 6).

End-to-end versions against a real FastMCP server: tests/e2e/test_endpoint_guard.py.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import ClaimsInvalid, DagError, SessionNotYours, SessionUnknown
from mcpclient_auth.httpsig import RequestSigner
from mcpclient_auth.keys import Identity
from mcpclient_auth.server import (
    IncomingHeaders,
    IncomingRequest,
    McpRequestVerifier,
    Rejection,
    http_status_for,
)
from mcpclient_auth.server._dagshape import RunShapes
from mcpclient_auth.server._sessions import Caller, SessionBindings
from tests.support.trust import trust_for

URL = "https://hr.example/mcp"
USER = Identity.generate("ES256", name="maria")
AGENT = Identity.generate("ES256", name="hr-agent")
TRUST = trust_for(issuers=[USER], agents=[AGENT])
MARIA = Caller("maria", "hr-agent", "kid-1")
ERIK = Caller("erik", "other-agent", "kid-2")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- session bindings ---------------------------------------------------------------------------------


def test_the_opener_owns_the_session_and_nobody_else() -> None:
    sessions = SessionBindings()
    assert sessions.admit(None, MARIA) is None  # no session named: nothing to check
    sessions.bind("s1", MARIA)
    assert sessions.admit("s1", MARIA) is None
    for other in (
        ERIK,
        Caller("maria", "hr-agent", "kid-2"),
        Caller("maria", "other", "kid-1"),
        Caller("erik", "hr-agent", "kid-1"),
    ):
        refusal = sessions.admit("s1", other)
        assert isinstance(refusal, SessionNotYours) and http_status_for(refusal) == 403
    sessions.bind("s1", ERIK)  # a second "opening" never hands the session over
    assert sessions.owner("s1") == MARIA


def test_unknown_and_expired_sessions_are_refused_404() -> None:
    clock = Clock()
    sessions = SessionBindings(idle_timeout=60, clock=clock)
    refusal = sessions.admit("never-opened", MARIA)
    assert isinstance(refusal, SessionUnknown) and http_status_for(refusal) == 404
    sessions.bind("s1", MARIA)
    clock.now += 59
    assert sessions.admit("s1", MARIA) is None  # use refreshes the binding
    clock.now += 59
    assert sessions.admit("s1", MARIA) is None
    clock.now += 61
    assert isinstance(sessions.admit("s1", MARIA), SessionUnknown)  # idle too long: gone, not open
    assert isinstance(sessions.admit("s1", ERIK), SessionUnknown)
    assert len(sessions) == 0


def test_memory_is_bounded_least_recently_used_first() -> None:
    sessions = SessionBindings(max_sessions=3)
    for i in range(3):
        sessions.bind(f"s{i}", MARIA)
    assert sessions.admit("s0", MARIA) is None  # s0 used: s1 is now the least recent
    sessions.bind("s3", MARIA)
    assert len(sessions) == 3
    assert isinstance(sessions.admit("s1", MARIA), SessionUnknown)
    assert sessions.owner("s0") == MARIA and sessions.owner("s3") == MARIA


async def test_the_response_binds_and_a_successful_delete_forgets() -> None:
    sessions = SessionBindings()
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    start = {"type": "http.response.start", "status": 200, "headers": [(b"Mcp-Session-Id", b"s9")]}
    await sessions.watch(send, "POST", None, MARIA)(start)
    assert sessions.owner("s9") == MARIA and sent == [start]
    await sessions.watch(send, "DELETE", "s9", ERIK)(
        {"type": "http.response.start", "status": 405, "headers": []}
    )
    assert sessions.owner("s9") == MARIA
    await sessions.watch(send, "DELETE", "s9", MARIA)(
        {"type": "http.response.start", "status": 200, "headers": []}
    )
    assert sessions.owner("s9") is None
    failed = {"type": "http.response.start", "status": 400, "headers": [(b"mcp-session-id", b"s10")]}
    await sessions.watch(send, "POST", None, MARIA)(failed)
    assert sessions.owner("s10") is None


# --- DAG shape ------------------------------------------------------------------------------------------


def mandate() -> Mandate:
    return Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=[])


def ect_for(m: Mandate, *, wid: str | None, pred: list[str]) -> ExecutionContextToken:
    return ExecutionContextToken.mint(
        AGENT, audience=[URL], exec_act="mcp.rpc.ping", pred=pred, wid=wid, inp_hash=sha256_b64url(b"")
    )


def test_wid_is_required_and_must_be_the_run() -> None:
    m = mandate()
    shapes = RunShapes()
    with pytest.raises(ClaimsInvalid) as missing:
        shapes.check(m, ect_for(m, wid=None, pred=[m.jti]))
    assert missing.value.code == "ect_wid_missing"
    with pytest.raises(ClaimsInvalid) as other:
        shapes.check(m, ect_for(m, wid=str(uuid.uuid4()), pred=[m.jti]))
    assert other.value.code == "ect_run_mismatch"


def test_pred_must_be_the_mandate_or_an_accepted_ect_of_the_same_run() -> None:
    m, n = mandate(), mandate()
    shapes = RunShapes()
    first = ect_for(m, wid=m.jti, pred=[m.jti])
    shapes.check(m, first)
    with pytest.raises(DagError) as unseen:
        shapes.check(m, ect_for(m, wid=m.jti, pred=[first.jti]))  # checked, but not accepted yet
    assert unseen.value.code == "pred_unknown"
    shapes.accept(m, first)
    shapes.check(m, ect_for(m, wid=m.jti, pred=[first.jti, m.jti]))
    with pytest.raises(DagError):
        shapes.check(n, ect_for(n, wid=n.jti, pred=[first.jti]))  # another run's node
    RunShapes(multi_server_runs=True).check(n, ect_for(n, wid=n.jti, pred=[str(uuid.uuid4())]))


def test_dag_memory_is_bounded_and_forgetting_refuses() -> None:
    clock = Clock()
    shapes = RunShapes(max_runs=2, max_nodes_per_run=2, clock=clock)
    m = mandate()
    nodes = [ect_for(m, wid=m.jti, pred=[m.jti]) for _ in range(3)]
    for node in nodes:
        shapes.accept(m, node)
    with pytest.raises(DagError):
        shapes.check(m, ect_for(m, wid=m.jti, pred=[nodes[0].jti]))  # the oldest node was dropped
    shapes.check(m, ect_for(m, wid=m.jti, pred=[nodes[2].jti]))
    others = [mandate() for _ in range(2)]
    for other in others:
        shapes.accept(other, ect_for(other, wid=other.jti, pred=[other.jti]))
    assert len(shapes) == 2
    with pytest.raises(DagError):
        shapes.check(m, ect_for(m, wid=m.jti, pred=[nodes[2].jti]))  # the least recent run was dropped
    clock.now = others[1].exp + 1_000
    latest = Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=[], ttl=86_400)
    shapes.accept(latest, ect_for(latest, wid=latest.jti, pred=[latest.jti]))
    assert len(shapes) == 1  # expired runs are pruned


# --- the verifier applies both ------------------------------------------------------------------------------


def signed(m: Mandate, *, wid: str | None, pred: list[str]) -> IncomingRequest:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    ect = ExecutionContextToken.mint(
        AGENT, audience=[URL], exec_act="mcp.rpc.ping", pred=pred, wid=wid, inp_hash=sha256_b64url(body)
    )
    request = httpx.Request(
        "POST",
        URL,
        content=body,
        headers={"content-type": "application/json", "act-mandate": m.token, "execution-context": ect.token},
    )
    RequestSigner(AGENT).sign(request)
    return IncomingRequest(
        request.method, str(request.url), IncomingHeaders(request.headers.raw), request.content
    )


@pytest.mark.parametrize("multi_server_runs", [False, True])
def test_verifier_requires_wid_and_known_preds(multi_server_runs: bool) -> None:
    verifier = McpRequestVerifier(TRUST, audience=URL, multi_server_runs=multi_server_runs)
    m = mandate()
    no_wid = verifier.check(signed(m, wid=None, pred=[m.jti]))
    assert isinstance(no_wid, Rejection) and no_wid.error.code == "ect_wid_missing" and no_wid.status == 401
    unseen = verifier.check(signed(m, wid=m.jti, pred=[str(uuid.uuid4())]))
    if multi_server_runs:
        assert not isinstance(unseen, Rejection)  # another server may have accepted that predecessor
    else:
        assert isinstance(unseen, Rejection) and unseen.error.code == "pred_unknown"
    first = verifier.check(signed(m, wid=m.jti, pred=[m.jti]))
    assert not isinstance(first, Rejection) and first.ect is not None
    assert not isinstance(verifier.check(signed(m, wid=m.jti, pred=[first.ect.jti])), Rejection)
