"""Realistic ledgers for the ledger tests: real keys, real tokens, the request path's entry shapes.

    actors = Actors.generate()
    with Ledger(path) as ledger:
        run = write_run(ledger, actors)          # mandate, session calls, 3 parallel tool calls
                                                 # (fan-out), a 4th joining them (fan-in),
                                                 # a denial, the record and the seal
    verify_ledger(path, actors.trust).ok

Entry meta follows docs/internals.md: ``ect`` {method, tool?, id, url, action, principal};
``response`` {status, out_hash, duration_ms, id, bytes}; ``denial`` {method, tool, id, action, code,
principal}.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import ExecutionRecord, Mandate
from mcpclient_auth.dag import Frontier
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, LedgerEntry
from tests.support.trust import trust_for

AUDIENCE = "http://127.0.0.1:8000/mcp"
URL = "http://127.0.0.1:8000/mcp"
SESSION_METHODS = ("initialize", "notifications/initialized", "tools/list")
#: The principals the ledger tests write runs for. The user key acts as a mandate service registered
#: for each of them (a run's entries name its mandate's principal, or verify_ledger refuses them).
SYNTHETIC_PRINCIPALS = (
    "alice",
    "bob",
    "crash",
    "maria",
    "erik",
    *(f"user{n}" for n in range(32)),
    *(f"{prefix}-{n}" for prefix in ("after", "after-crash", "crash") for n in range(200)),
)


@dataclass
class Actors:
    user: Identity
    agent: Identity

    @classmethod
    def generate(cls, alg: str = "ES256") -> Actors:
        return cls(Identity.generate(alg, name="alice"), Identity.generate(alg, name="agent-1"))

    @property
    def trust(self) -> TrustStore:
        principals = [self.user.name, *SYNTHETIC_PRINCIPALS]
        return trust_for(issuers=[(self.user, principals)], agents=[self.agent])

    def jwks(self) -> dict[str, Any]:
        return self.trust.to_jwks()

    def private_jwks(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """For handing the identities to another process (identities do not pickle)."""
        return self.user.private_jwk(), self.agent.private_jwk()

    @classmethod
    def from_private(cls, user: dict[str, Any], agent: dict[str, Any]) -> Actors:
        return cls(Identity.from_jwk(user), Identity.from_jwk(agent))


@dataclass
class WrittenRun:
    run: str
    mandate: Mandate
    session: list[str] = field(default_factory=list)
    parallel: list[str] = field(default_factory=list)
    join: str | None = None
    record: ExecutionRecord | None = None
    entries: list[LedgerEntry] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)  # ECT jti -> tool name


def _body(method: str, call_id: int, tool: str | None = None) -> bytes:
    params: dict[str, Any] = {"name": tool, "arguments": {"q": "x"}} if tool else {}
    return json.dumps({"jsonrpc": "2.0", "id": call_id, "method": method, "params": params}).encode()


def write_run(
    ledger: Ledger,
    actors: Actors,
    *,
    principal: str = "alice",
    purpose: str = "Answer HR questions",
    parallel_tools: Sequence[str] = ("search", "lookup", "fetch"),
    join_tool: str | None = "summarize",
    denied_tool: str | None = "delete_all",
    extra_caps: Sequence[str] = (),
    seal: bool = True,
    record: bool = True,
) -> WrittenRun:
    """Write one run the way the request path does and return what was written."""
    agent = actors.agent
    tools = [*parallel_tools, *([join_tool] if join_tool else [])]
    caps = [f"mcp.{t}" for t in dict.fromkeys([*tools, *extra_caps])]
    mandate = Mandate.issue(
        actors.user, agent=agent, audience=AUDIENCE, purpose=purpose, capabilities=caps, iss=principal
    )
    run = mandate.jti
    out = WrittenRun(run, mandate)

    def add(**kw: Any) -> LedgerEntry:
        entry = ledger.append(run=run, **kw)
        out.entries.append(entry)
        return entry

    add(kind="mandate", jti=run, token=mandate.token, meta={"principal": principal})
    call_id = 0
    frontier = Frontier(run)

    def call(method: str, tool: str | None, pred: list[str]) -> ExecutionContextToken:
        nonlocal call_id
        action = f"mcp.{tool}" if tool else "mcp.rpc." + method.replace("/", ".")
        body = _body(method, call_id, tool)
        ect = ExecutionContextToken.mint(
            agent, audience=AUDIENCE, exec_act=action, pred=pred, wid=run, inp_hash=sha256_b64url(body)
        )
        meta: dict[str, Any] = {
            "method": method,
            "id": call_id,
            "url": URL,
            "action": action,
            "principal": principal,
        }
        if tool:
            meta = {
                "method": method,
                "tool": tool,
                "id": call_id,
                "url": URL,
                "action": action,
                "principal": principal,
            }
            out.tools[ect.jti] = tool
        add(kind="ect", jti=ect.jti, token=ect.token, meta=meta)
        call_id += 1
        return ect

    def respond(ect: ExecutionContextToken, status: int = 200) -> None:
        payload = b'{"jsonrpc":"2.0","result":{}}'
        add(
            kind="response",
            jti=ect.jti,
            meta={
                "status": status,
                "out_hash": sha256_b64url(payload),
                "duration_ms": 3.25,
                "id": call_id,
                "bytes": len(payload),
            },
        )

    for method in SESSION_METHODS:
        ect = call(method, None, frontier.session_pred())
        respond(ect, 202 if method.startswith("notifications/") else 200)
        out.session.append(ect.jti)

    # Fan-out: all issued before any completes, so they share the mandate as pred.
    started = [(call("tools/call", tool, frontier.begin()), tool) for tool in parallel_tools]
    for ect, _tool in started:
        respond(ect)
        frontier.complete(ect.jti, ect.pred)
        out.parallel.append(ect.jti)
    last_action = f"mcp.{parallel_tools[-1]}" if parallel_tools else None
    if join_tool:
        joined = call("tools/call", join_tool, frontier.begin())  # fan-in: pred = the parallel calls
        respond(joined)
        frontier.complete(joined.jti, joined.pred)
        out.join = joined.jti
        last_action = f"mcp.{join_tool}"
    if denied_tool:
        add(
            kind="denial",
            meta={
                "method": "tools/call",
                "tool": denied_tool,
                "id": call_id,
                "action": f"mcp.{denied_tool}",
                "code": "mandate_denied",
                "principal": principal,
            },
        )
    if record:
        rec = ExecutionRecord.issue(
            agent,
            mandate,
            exec_act=last_action,
            pred=frontier.current(),
            out_hash=sha256_b64url(b"final answer"),
            status="completed",
        )
        out.record = rec
        add(kind="record", jti=run, token=rec.token, meta={"status": "completed"})
    if seal:
        out.entries.append(ledger.seal(run, agent))
    return out


def write_runs_in_process(
    path: str, user_jwk: dict[str, Any], agent_jwk: dict[str, Any], runs: int, barrier: Any, principal: str
) -> None:
    """A multiprocessing target: wait for the others, then write ``runs`` runs to ``path``."""
    actors = Actors.from_private(user_jwk, agent_jwk)
    ledger = Ledger(path, durability="none")
    barrier.wait(timeout=60)
    try:
        for _ in range(runs):
            write_run(ledger, actors, principal=principal)
    finally:
        ledger.close()


def lines_of(path: str | os.PathLike[str]) -> list[bytes]:
    with open(path, "rb") as f:
        return f.read().split(b"\n")[:-1]


def write_lines(path: str | os.PathLike[str], lines: Sequence[bytes], *, tail: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines) + tail)


def write_until_killed(path: str, user_jwk: dict[str, Any], agent_jwk: dict[str, Any], max_runs: int) -> None:
    """A multiprocessing target for crash tests: keep writing runs (bounded) until the parent kills it."""
    actors = Actors.from_private(user_jwk, agent_jwk)
    ledger = Ledger(path, durability="none")
    for _ in range(max_runs):
        write_run(ledger, actors, principal="crash")
    ledger.close()
