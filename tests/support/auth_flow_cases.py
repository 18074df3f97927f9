"""The one 401 / 403 flow, end to end, as one body of test code for every client kind.

Each case takes the HTTP library module (``httpx`` on stack A, ``httpx2`` on stack B) and the client
kind (``"async"``: the run's client factory; ``"sync"``: a ``Client`` with ``run.install(...,
answer_locally=True)``, driven from a worker thread as sync code would be), and runs against the
real token endpoint and the verifying FastMCP server of :mod:`tests.support.authz_env`.
``tests/e2e/test_auth_flow_clients.py`` (stack A) and ``tests/stack_b/test_auth_flow_clients.py``
(stack B) call them.

The MCP client here is deliberately bare (:class:`RawMcp`: initialize, then ``tools/call`` over POST,
JSON or SSE answers) because mcp has no sync client; what is under test is the HTTP client's auth
flow, request hook and transport, which a real mcp client drives the same way (the async mcp-client
cases are in ``test_authz_retry.py`` of each stack).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from mcpclient_auth.errors import InsufficientScope, ScopeNotAllowed
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.refusal import REFUSAL_CODE
from mcpclient_auth.run import AgentRun

from .authz_env import AuthzEnv
from .hooks_env import entries

KINDS = ("async", "sync")
HANG_GUARD = 60
_ACCEPT = "application/json, text/event-stream"


class RawMcp:
    """Initialize and call tools over one httpx/httpx2 client (async, or sync run in a thread)."""

    def __init__(self, client: Any, url: str, *, sync: bool) -> None:
        self.client, self.url, self.sync = client, url, sync
        self.session: str | None = None
        self.version: str | None = None
        self.next_id = 1

    async def post(self, message: dict[str, Any]) -> Any:
        headers = {"accept": _ACCEPT, "content-type": "application/json"}
        if self.session is not None:
            headers["mcp-session-id"] = self.session
        if self.version is not None:
            headers["mcp-protocol-version"] = self.version
        content = json.dumps(message).encode()
        if self.sync:
            return await asyncio.to_thread(self.client.post, self.url, content=content, headers=headers)
        return await self.client.post(self.url, content=content, headers=headers)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        ident, self.next_id = self.next_id, self.next_id + 1
        response = await self.post({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
        if response.status_code != 200:
            return {"http_status": response.status_code}
        if self.session is None:
            self.session = response.headers.get("mcp-session-id")
        return _answer(response.text, ident)

    async def initialize(self) -> None:
        answer = await self.request(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
        )
        self.version = answer["result"]["protocolVersion"]
        await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return await self.request("tools/call", {"name": name, "arguments": arguments})


def _answer(text: str, ident: int) -> dict[str, Any]:
    """The JSON-RPC message answering ``ident`` in a JSON body or an SSE stream."""
    candidates = [text] if text.lstrip().startswith("{") else [
        line[5:].strip() for line in text.splitlines() if line.startswith("data:")
    ]
    for candidate in candidates:
        try:
            message = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("id") == ident:
            return message
    raise AssertionError(f"no JSON-RPC answer for id {ident} in {text[:200]!r}")


def succeeded(answer: dict[str, Any]) -> bool:
    return "result" in answer and not answer["result"].get("isError")


def refusal_code(answer: dict[str, Any]) -> str | None:
    """``error.data.code`` of a local -32003 refusal, else ``None``."""
    error = answer.get("error")
    if not isinstance(error, dict) or error.get("code") != REFUSAL_CODE:
        return None
    return str(error["data"]["code"])


@asynccontextmanager
async def mcp_client(lib: ModuleType, kind: str, run: AgentRun) -> AsyncIterator[RawMcp]:
    """An initialized :class:`RawMcp` over the run's client of ``kind``, closed afterwards."""
    if kind == "async":
        from mcpclient_auth.factory import httpx2_client_factory, httpx_client_factory

        factory = httpx_client_factory if lib.__name__ == "httpx" else httpx2_client_factory
        client = factory(run)()
    else:
        client = lib.Client(timeout=30)
        run.install(client, answer_locally=True)
    raw = RawMcp(client, run.endpoints[0], sync=kind == "sync")
    try:
        await raw.initialize()
        yield raw
    finally:
        if kind == "async":
            await client.aclose()
        else:
            client.close()


async def settled(raw: RawMcp, env: AuthzEnv) -> int:
    """One warm-up call; returns the issue number of the token the client uses."""
    assert succeeded(await raw.call_tool("search", {"query": "warm-up"}))
    number = max(s.token_number or 0 for s in env.gate.seen)
    env.gate.seen.clear()
    return number


# --- the cases ------------------------------------------------------------------------------------------


async def re_obtains_once_on_401(lib: ModuleType, kind: str, env: AuthzEnv, tmp_path: Path) -> None:
    """401 invalid_token -> that token dropped, one re-obtain, one freshly signed resend that succeeds."""
    path = tmp_path / "l.jsonl"
    async with (
        asyncio.timeout(HANG_GUARD),
        env.run("alice", path, token_source=env.exchange()) as run,
        mcp_client(lib, kind, run) as raw,
    ):
        number = await settled(raw, env)
        env.gate.revoked.add(number)  # the server revokes the token the client has been using
        answer = await raw.call_tool("search", {"query": "revoked"})
        assert env.idp.count == 2  # one re-obtain
    assert succeeded(answer), answer
    first, second = env.gate.calls("search")
    assert (first.token_number, first.status) == (number, 401)
    assert second.token_number not in (None, number) and second.status == 200
    assert first.ect_jti and second.ect_jti and first.ect_jti != second.ect_jti
    assert first.signature_input != second.signature_input
    assert env.state.rejected == 0, env.state.errors()
    statuses = {e.jti: e.meta["status"] for e in entries(path, kind="response")}
    assert statuses[first.ect_jti] == 401 and statuses[second.ect_jti] == 200
    assert verify_ledger(path, env.trust).ok


async def second_401_is_a_typed_refusal(lib: ModuleType, kind: str, env: AuthzEnv, tmp_path: Path) -> None:
    """A 401 to the resend is final: a local -32003 refusal ``upstream_unauthorized``, one resend only."""
    path = tmp_path / "l.jsonl"
    async with (
        asyncio.timeout(HANG_GUARD),
        env.run("alice", path, token_source=env.exchange()) as run,
        mcp_client(lib, kind, run) as raw,
    ):
        await settled(raw, env)
        env.gate.revoked_users.add("alice")
        answer = await raw.call_tool("search", {"query": "twice"})
        assert [c.status for c in env.gate.calls()] == [401, 401]
        env.gate.revoked_users.clear()
        assert succeeded(await raw.call_tool("search", {"query": "again"}))  # the session survives
    assert refusal_code(answer) == "upstream_unauthorized"
    assert [d.meta["code"] for d in entries(path, kind="denial")] == ["upstream_unauthorized"]
    assert verify_ledger(path, env.trust).ok


async def steps_up_once_on_403(lib: ModuleType, kind: str, env: AuthzEnv, tmp_path: Path) -> None:
    """403 insufficient_scope -> one step-up for the union; the run asks for it from then on."""
    env.gate.required_scopes = frozenset({"mcp.read", "mcp.write"})
    source = env.exchange(scopes=["mcp.read"])
    allowed = ["mcp.read", "mcp.write"]
    path = tmp_path / "l.jsonl"
    async with (
        asyncio.timeout(HANG_GUARD),
        env.run("alice", path, token_source=source, allowed_scopes=allowed) as run,
        mcp_client(lib, kind, run) as raw,
    ):
        first = await raw.call_tool("search", {"query": "one"})
        second = await raw.call_tool("search", {"query": "two"})
    assert succeeded(first) and succeeded(second)
    asked = [r.form.get("scope") for r in env.idp.requests]
    assert asked == [["mcp.read"], ["mcp.read mcp.write"]]  # one step-up, with the union
    assert [s.status for s in env.gate.seen if s.status == 403] == [403]
    assert verify_ledger(path, env.trust).ok


async def second_403_is_a_typed_refusal(lib: ModuleType, kind: str, env: AuthzEnv, tmp_path: Path) -> None:
    """A 403 to the stepped-up resend is final: ``insufficient_scope``, nothing more asked."""
    source = env.exchange(scopes=["mcp.read"])
    path = tmp_path / "l.jsonl"
    allowed = ["mcp.read", "mcp.write", "mcp.admin"]
    async with (
        asyncio.timeout(HANG_GUARD),
        env.run("alice", path, token_source=source, allowed_scopes=allowed) as run,
        mcp_client(lib, kind, run) as raw,
    ):
        await settled(raw, env)
        # the server needs mcp.admin too, but its challenge only names mcp.write
        env.gate.required_scopes = frozenset({"mcp.write", "mcp.admin"})
        env.gate.challenge_scopes = frozenset({"mcp.write"})
        answer = await raw.call_tool("search", {"query": "admin"})
        assert [c.status for c in env.gate.calls()] == [403, 403]
    assert refusal_code(answer) == InsufficientScope.code
    assert [r.form.get("scope") for r in env.idp.requests] == [["mcp.read"], ["mcp.read mcp.write"]]
    assert [d.meta["code"] for d in entries(path, kind="denial")] == ["insufficient_scope"]


async def first_challenge_chooses_the_scope(
    lib: ModuleType, kind: str, env: AuthzEnv, tmp_path: Path
) -> None:
    """``initial_scope="challenge"`` (SEP-835): the first request goes without the user's token (still
    signed), its 401 names the resource metadata and the scope; the token is asked for that scope and
    that resource, the request is resent once, and later requests carry the token from the start."""
    env.idp.metadata = {
        "resource": env.url,
        "authorization_servers": [env.idp.base_url],
        "scopes_supported": ["mcp.read", "mcp.write"],
    }
    env.gate.resource_metadata = f"{env.idp.base_url}/.well-known/oauth-protected-resource/mcp"
    env.gate.challenge_anonymous = True
    env.gate.required_scopes = frozenset({"mcp.read"})
    path = tmp_path / "l.jsonl"
    run = env.run("alice", path, token_source=env.exchange(), initial_scope="challenge")
    async with asyncio.timeout(HANG_GUARD), run, mcp_client(lib, kind, run) as raw:
        first = await raw.call_tool("search", {"query": "one"})
        second = await raw.call_tool("search", {"query": "two"})
    assert succeeded(first) and succeeded(second)
    initialize, resend, *rest = env.gate.seen
    assert (initialize.rpc_method, initialize.token_number, initialize.status) == ("initialize", None, 401)
    assert initialize.ect_jti is not None  # without the token, but signed and in the ledger
    assert (resend.rpc_method, resend.status) == ("initialize", 200) and resend.token_number is not None
    assert all(s.token_number is not None for s in rest)  # the endpoint has challenged: token from the start
    assert [r.form.get("scope") for r in env.idp.requests] == [["mcp.read"]]  # the 401's scope=
    assert [r.form.get("audience") for r in env.idp.requests] == [[env.url]]  # the metadata's resource
    (headers,) = env.idp.metadata_requests  # fetched once, anonymously
    assert "authorization" not in headers and "signature" not in headers
    assert env.state.rejected == 0, env.state.errors()
    assert verify_ledger(path, env.trust).ok


async def first_challenge_outside_the_allowlist_is_refused(
    lib: ModuleType, kind: str, env: AuthzEnv, tmp_path: Path
) -> None:
    """With ``allowed_scopes``, a first challenge naming anything else asks the identity provider for
    nothing: the call is refused locally (``scope_not_allowed``) and journalled."""
    env.gate.challenge_anonymous = True
    env.gate.challenge_scopes = frozenset({"mcp.admin"})
    path = tmp_path / "l.jsonl"
    run = env.run(
        "alice", path, token_source=env.exchange(), initial_scope="challenge", allowed_scopes=["mcp.read"]
    )
    async with asyncio.timeout(HANG_GUARD), run:
        if kind == "async":
            from mcpclient_auth.factory import httpx2_client_factory, httpx_client_factory

            factory = httpx_client_factory if lib.__name__ == "httpx" else httpx2_client_factory
            client: Any = factory(run)()
        else:
            client = lib.Client(timeout=30)
            run.install(client, answer_locally=True)
        raw = RawMcp(client, run.endpoints[0], sync=kind == "sync")
        try:
            answer = await raw.request(
                "initialize",
                {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "r", "version": "0"}},
            )
        finally:
            await client.aclose() if kind == "async" else client.close()
    assert refusal_code(answer) == ScopeNotAllowed.code
    assert env.idp.count == 0
    assert [s.status for s in env.gate.seen] == [401]  # the anonymous send; no resend
    assert [d.meta["code"] for d in entries(path, kind="denial")] == ["scope_not_allowed"]


async def sync_and_async_clients_share_one_token_request(
    lib: ModuleType, kind: str, env: AuthzEnv, tmp_path: Path
) -> None:
    """A sync and an async client of one run miss the token cache at the same time: one token request
    (the sync client's token work joins the async client's request in flight, or the reverse)."""
    from .idp import Reply

    other = "async" if kind == "sync" else "sync"
    env.idp.queue(Reply.slow(0.5))  # long enough for both misses to meet
    path = tmp_path / "l.jsonl"
    async with asyncio.timeout(HANG_GUARD), env.run("alice", path, token_source=env.exchange()) as run:
        clients = [_client(lib, k, run) for k in (kind, other)]
        raws = [RawMcp(c, run.endpoints[0], sync=k == "sync") for c, k in zip(clients, (kind, other), strict=True)]
        try:
            await asyncio.gather(*(raw.initialize() for raw in raws))
            answers = await asyncio.gather(*(raw.call_tool("search", {"query": "q"}) for raw in raws))
        finally:
            for client, k in zip(clients, (kind, other), strict=True):
                await client.aclose() if k == "async" else client.close()
    assert all(succeeded(a) for a in answers)
    assert env.idp.count == 1  # single-flight across the sync and the async caller
    assert len({s.token_number for s in env.gate.seen}) == 1
    assert verify_ledger(path, env.trust).ok


def _client(lib: ModuleType, kind: str, run: AgentRun) -> Any:
    if kind == "async":
        from mcpclient_auth.factory import httpx2_client_factory, httpx_client_factory

        factory = httpx_client_factory if lib.__name__ == "httpx" else httpx2_client_factory
        return factory(run)()
    client = lib.Client(timeout=30)
    run.install(client, answer_locally=True)
    return client


async def dpop_proves_every_send_and_answers_the_nonce_once(
    lib: ModuleType, kind: str, env: AuthzEnv, tmp_path: Path
) -> None:
    """DPoP (RFC 9449): ``Authorization: DPoP`` and a fresh proof on every send, checked by the gate with
    PyJWT + joserfc; the MCP server's ``use_dpop_nonce`` costs one resend (same token, new proof), then
    the nonce is used from the start; each call's proof ``jti`` is in its ledger entry."""
    from mcpclient_auth.authz import DPoP

    env.gate.dpop_nonce = "rs-nonce-cases"
    path = tmp_path / "l.jsonl"
    dpop = DPoP()
    async with (
        asyncio.timeout(HANG_GUARD),
        env.run("alice", path, token_source=env.exchange(dpop=dpop), dpop=dpop) as run,
        mcp_client(lib, kind, run) as raw,
    ):
        for i in range(2):
            assert succeeded(await raw.call_tool("search", {"query": f"q{i}"}))
    seen = [s for s in env.gate.seen if s.path.rstrip("/") == "/mcp"]
    assert [s.dpop_error for s in seen if s.status == 401] == ["nonce"]  # once, on the first send
    accepted = [s for s in seen if s.status == 200 or s.status == 202]
    assert accepted and all(s.scheme == "DPoP" and s.dpop_claims for s in accepted)
    claims = [s.dpop_claims for s in accepted if s.dpop_claims]
    assert all(c["nonce"] == "rs-nonce-cases" for c in claims)
    assert len({c["jti"] for c in claims}) == len(claims) and len({c["ath"] for c in claims}) == 1
    assert env.state.rejected == 0, env.state.errors()
    by_ect = {s.ect_jti: s.dpop_claims["jti"] for s in accepted if s.ect_jti and s.dpop_claims}
    calls = [e for e in entries(path, kind="ect") if e.jti in by_ect]
    assert calls and all(e.meta["dpop_jti"] == by_ect[e.jti] for e in calls)
    assert verify_ledger(path, env.trust).ok
