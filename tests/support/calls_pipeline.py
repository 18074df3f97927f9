"""The per-call pipeline (``mcpclient_auth._calls``) on bare requests of one HTTP library, no network.

One body of test code for httpx (``tests/unit/test_calls.py``) and httpx2
(``tests/stack_b/test_calls.py``): each test takes the library module and builds its ``Request``.
The requests are checked by the server's own pure verifier (``McpRequestVerifier``), so "the ECT
and the signature are present" means "a server accepts them".
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

from mcpclient_auth._calls import Admitted, Refusal, admit, authorization, check_open, prepare
from mcpclient_auth._context import acting_for
from mcpclient_auth._journal import InFlight
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import MandateDenied, PrincipalMismatch, RunClosed
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import Ledger
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server.verify import IncomingHeaders, IncomingRequest, McpRequestVerifier, Rejection
from tests.support.trust import trust_for

URL = "http://127.0.0.1:9/mcp"  # never contacted
USER = Identity.generate("ES256", name="alice")
AGENT = Identity.generate("EdDSA", name="agent-1")


def make_run(tmp_path: Path) -> AgentRun:
    return AgentRun(
        agent=AGENT,
        issuer=USER,
        purpose="p",
        capabilities=["mcp.search"],
        endpoint=URL,
        ledger=tmp_path / "l.jsonl",
    )


def body_of(method: str, ident: int, **params: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": ident, "method": method, "params": params}).encode()


def tool_call(ident: int, name: str = "search") -> bytes:
    return body_of("tools/call", ident, name=name, arguments={"q": "x"})


async def send(
    lib: ModuleType, run: AgentRun, body: bytes
) -> tuple[Any, Admitted | Refusal, InFlight | None]:
    """Run the whole pipeline on a bare ``lib.Request``; journal it as sent when admitted."""
    request = lib.Request("POST", URL, content=body, headers={"content-type": "application/json"})
    endpoint = run.endpoint_set.endpoints[0]
    check_open(run)
    admitted = admit(run, request.method, body, request.headers.get("content-type"))
    if isinstance(admitted, Refusal):
        return request, admitted, None
    header = await authorization(run, admitted.call, endpoint, None)
    assert not isinstance(header, Refusal)
    prepared = prepare(run, request, body, endpoint, admitted, header)
    assert prepared.inflight is not None
    run.journal.sent(prepared.inflight)
    return request, admitted, prepared.inflight


def server_view(request: Any, body: bytes) -> IncomingRequest:
    return IncomingRequest(
        method=request.method,
        url=str(request.url),
        headers=IncomingHeaders(list(request.headers.items())),
        content=body,
    )


def verifier() -> McpRequestVerifier:
    return McpRequestVerifier(trust_for(issuers=[USER], agents=[AGENT]), audience=URL)


async def check_admitted_call_is_signed_chained_and_journalled(lib: ModuleType, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    server = verifier()
    body = tool_call(1)
    request, admitted, inflight = await send(lib, run, body)
    assert isinstance(admitted, Admitted) and admitted.action == "mcp.search"
    verified = server.verify(server_view(request, body))  # signature, mandate, ECT, policy: all pass
    assert verified.action == "mcp.search" and verified.principal == "alice"
    ect = ExecutionContextToken.decode(request.headers["Execution-Context"])
    assert ect.pred == [run.id] and ect.wid == run.id  # the first tool call hangs off the mandate
    entry = next(Ledger.open(tmp_path / "l.jsonl").entries(kind="ect"))
    assert entry.jti == ect.jti and entry.meta["tool"] == "search" and entry.meta["url"] == URL
    # The answer arrives: the call joins the frontier, the next call names it as its predecessor.
    assert inflight is not None
    run.journal.response(inflight, status=200, out_hash="h", nbytes=2, completed=True)
    second = tool_call(2)
    request2, _, _ = await send(lib, run, second)
    assert ExecutionContextToken.decode(request2.headers["Execution-Context"]).pred == [ect.jti]
    # A tampered body does not verify (Content-Digest / inp_hash); the request as sent does.
    tampered = tool_call(2, name="search2")
    assert isinstance(server.check(server_view(request2, tampered)), Rejection)
    server.verify(server_view(request2, second))
    run.close()


async def check_refusals_are_journalled_and_nothing_is_signed(lib: ModuleType, tmp_path: Path) -> None:
    run = make_run(tmp_path)
    request, refused, _ = await send(lib, run, tool_call(1, name="delete_everything"))
    assert isinstance(refused, Refusal) and isinstance(refused.error, MandateDenied)
    assert "Signature" not in request.headers and "Execution-Context" not in request.headers
    with acting_for("bob"):
        _, mismatch, _ = await send(lib, run, tool_call(2))
    assert isinstance(mismatch, Refusal) and isinstance(mismatch.error, PrincipalMismatch)
    denials = list(Ledger.open(tmp_path / "l.jsonl").entries(kind="denial"))
    assert [d.meta["code"] for d in denials] == [refused.error.code, "principal_mismatch"]
    assert list(Ledger.open(tmp_path / "l.jsonl").entries(kind="ect")) == []
    run.close()
    try:
        check_open(run)
    except RunClosed:
        pass
    else:
        raise AssertionError("a closed run admitted a call")


class BoundSource:
    """A token source whose one token is DPoP-bound to ``dpop`` (the token endpoint is not the point)."""

    scopes: tuple[str, ...] = ()

    def __init__(self, dpop: Any, token: str) -> None:
        self.dpop = dpop
        self.token = token

    async def get_token(self, principal: Any, audience: Any = None, scopes: Any = None) -> Any:
        from mcpclient_auth.authz import AccessToken

        return AccessToken(self.token, token_type="DPoP")

    def invalidate(self, principal: Any, audience: Any = None, scopes: Any = None, *, token: Any = None) -> None:
        return None


async def check_dpop_proof_is_signed_and_a_tampered_proof_fails(lib: ModuleType, tmp_path: Path) -> None:
    """RFC 9449 + RFC 9421: the DPoP proof is covered by our signature, so another proof (even a valid
    one of the same key), or none, fails the server's verification; the ledger records its jti."""
    from mcpclient_auth.authz import DPoP
    from mcpclient_auth.authz.dpop import access_token_hash
    from mcpclient_auth.errors import SignatureError
    from tests.support.dpop_check import check_proof

    token = "at-SENTINEL-bound-5c1d"
    dpop = DPoP(AGENT)
    run = AgentRun(
        agent=AGENT,
        issuer=USER,
        purpose="p",
        capabilities=["mcp.search"],
        endpoint=URL,
        ledger=tmp_path / "l.jsonl",
        token_source=BoundSource(dpop, token),  # type: ignore[arg-type]
        dpop=dpop,
    )
    server = verifier()
    body = tool_call(1)
    request, _, inflight = await send(lib, run, body)
    assert request.headers["Authorization"] == f"DPoP {token}"
    claims, jkt = check_proof(request.headers["DPoP"], "POST", URL, set(), access_token=token)
    assert jkt == dpop.thumbprint and claims["ath"] == access_token_hash(token)
    assert "dpop" in request.headers["Signature-Input"]
    server.verify(server_view(request, body))  # as sent: accepted
    assert inflight is not None and inflight.dpop_jti == claims["jti"]
    entry = next(Ledger.open(tmp_path / "l.jsonl").entries(kind="ect"))
    assert entry.meta["dpop_jti"] == claims["jti"]
    assert token not in (tmp_path / "l.jsonl").read_text()
    # Swap in another proof of the same key for the same request: still a valid DPoP proof, but
    # not the one the agent signed.
    swapped = dpop.proof("POST", URL, access_token=token).token
    tampered = lib.Request("POST", URL, content=body, headers=dict(request.headers))
    tampered.headers["DPoP"] = swapped
    rejected = server.check(server_view(tampered, body))
    assert isinstance(rejected, Rejection) and isinstance(rejected.error, SignatureError)
    stripped = lib.Request("POST", URL, content=body, headers=dict(request.headers))
    del stripped.headers["DPoP"]
    rejected = server.check(server_view(stripped, body))
    assert isinstance(rejected, Rejection) and isinstance(rejected.error, SignatureError)
    run.close()


def _token_run(tmp_path: Path, **options: Any) -> AgentRun:
    from mcpclient_auth.authz import StaticTokens

    return AgentRun(
        agent=AGENT,
        issuer=USER,
        purpose="p",
        capabilities=["mcp.search"],
        endpoint=URL,
        ledger=tmp_path / "t.jsonl",
        token_source=StaticTokens({"alice": "user-token-alice"}),
        **options,
    )


async def check_the_users_token_is_sent_signed_async_and_sync(lib: ModuleType, tmp_path: Path) -> None:
    """With a token source: ``Authorization`` carries the user's token and the signature covers it;
    the sync path (the same coroutine, waited for on the token loop) gives the same header, and the
    attempt records the token it used; an unknown user is a journalled refusal, nothing signed."""
    from mcpclient_auth._calls import authorization_sync
    from mcpclient_auth._hooks.auth import Attempt
    from mcpclient_auth.authz._blocking import run_blocking

    run = _token_run(tmp_path)
    endpoint = run.endpoint_set.endpoints[0]
    server = verifier()
    for sync in (False, True):
        body = tool_call(10 + sync)
        request = lib.Request("POST", URL, content=body, headers={"content-type": "application/json"})
        admitted = admit(run, "POST", body, "application/json")
        assert isinstance(admitted, Admitted)
        attempt = Attempt()
        if sync:
            credential = authorization_sync(run, admitted.call, endpoint, attempt, run_blocking)
        else:
            credential = await authorization(run, admitted.call, endpoint, attempt)
        assert credential is not None and not isinstance(credential, Refusal)
        prepare(run, request, body, endpoint, admitted, credential)
        assert request.headers["Authorization"] == "Bearer user-token-alice"
        assert "authorization" in request.headers["Signature-Input"]  # covered by the signature
        server.verify(server_view(request, body))
        assert attempt.token is not None and attempt.token.token == "user-token-alice"
    with acting_for("bob"):  # the run refuses another principal before any token is asked for
        refused = authorization_sync(run, None, endpoint, None, run_blocking)
    assert isinstance(refused, Refusal) and isinstance(refused.error, PrincipalMismatch)
    run.close()


async def check_a_first_challenge_run_sends_no_token_but_signs(lib: ModuleType, tmp_path: Path) -> None:
    """``initial_scope="challenge"``: until the endpoint challenges, a send carries no user token (the
    attempt marks it anonymous) but the mandate, the ECT and the signature, which a server accepts;
    once the run remembers the endpoint's scopes, the token goes from the start."""
    from mcpclient_auth._hooks.auth import OBTAIN, Attempt, verdict

    run = _token_run(tmp_path, initial_scope="challenge")
    endpoint = run.endpoint_set.endpoints[0]
    body = tool_call(1)
    request = lib.Request("POST", URL, content=body, headers={"content-type": "application/json"})
    admitted = admit(run, "POST", body, "application/json")
    assert isinstance(admitted, Admitted)
    attempt = Attempt()
    assert await authorization(run, admitted.call, endpoint, attempt) is None
    assert attempt.anonymous and attempt.token is None
    prepare(run, request, body, endpoint, admitted, None)
    assert "Authorization" not in request.headers and "Execution-Context" in request.headers
    verified = verifier().verify(server_view(request, body))
    assert verified.action == "mcp.search"
    challenge = lib.Response(401, headers={"www-authenticate": 'Bearer scope="mcp.read"'}, request=request)
    assert verdict(attempt, challenge)[0] == OBTAIN
    run.remember_scopes(endpoint, run.token_source, ["mcp.read"])  # what a passing resend leaves behind
    later = Attempt()
    assert await authorization(run, admitted.call, endpoint, later) is not None and not later.anonymous
    assert later.asked_scopes == ("mcp.read",)
    run.close()


async def check_a_body_less_request_is_signed_without_an_ect(lib: ModuleType, tmp_path: Path) -> None:
    """GET (the SSE stream) and DELETE (session end) carry the mandate and a signature, no ECT, and
    write no ``ect`` entry: they are not calls."""
    run = make_run(tmp_path)
    endpoint = run.endpoint_set.endpoints[0]
    for method in ("GET", "DELETE"):
        request = lib.Request(method, URL)
        admitted = admit(run, method, b"", None)
        assert admitted == Admitted(None, None)
        prepared = prepare(run, request, b"", endpoint, admitted, None)
        assert prepared.inflight is None and "Execution-Context" not in request.headers
        assert "Signature" in request.headers and "ACT-Mandate" in request.headers
        assert "Content-Digest" not in request.headers
    assert list(Ledger.open(tmp_path / "l.jsonl").entries(kind="ect")) == []
    run.close()
