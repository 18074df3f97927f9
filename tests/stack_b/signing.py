"""Signed stack-B fixtures: actors, runs, and fastmcp 4 servers that verify with the SDK's own verifiers.

    with verified_server("stateless") as env:       # guard (RequestVerifier) + McpAuthMiddleware + fastmcp 4
        run = env.run(tmp_path / "client.jsonl", capabilities=["mcp.search"])
        async with run, open_client(run, mode="auto") as client:
            await client.call_tool("search", {"query": "q"})
        env.accepted()                               # every request reached the app (< 400)

Two independent server-side checks run on every request: the recording guard's ``signature_verifier``
(``RequestVerifier``: the RFC 9421 signature, its covered components land in ``recorded.verified``)
and, inside it, the reference ``McpAuthMiddleware`` (signature, mandate, ECT, policy) writing the
server's own ledger. The audience is a stable server id rather than the URL, because the app (and its
middleware) is built before the free port is known.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastmcp import FastMCP
from starlette.middleware import Middleware

from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, LedgerEntry
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import McpAuthMiddleware
from tests.stack_b.support import (
    RecordedRequest,
    RunningServer,
    build_mcp_server,
    running_server,
    signature_verifier,
)
from tests.support.trust import trust_for

AUDIENCE = "https://hr.example/mcp"
DEFAULT_CAPS = ("mcp.search", "mcp.get_office_locations", "mcp.slow_echo", "mcp.gather_point")
#: Bounded wait of the ``gather_point`` tool: 2000 x 10 ms.
_GATHER_POLLS = 2000
SIGNED_HEADERS = ("signature", "signature-input", "act-mandate")


@dataclass
class Actors:
    users: dict[str, Identity]
    agent: Identity
    trust: TrustStore

    @classmethod
    def generate(cls, *names: str) -> Actors:
        users = {name: Identity.generate("ES256", name=name) for name in names or ("alice",)}
        agent = Identity.generate("ES256", name="agent-1")
        return cls(users, agent, trust_for(issuers=users.values(), agents=[agent]))

    def jwks_file(self, directory: Path) -> Path:
        path = directory / "jwks.json"
        path.write_text(json.dumps(self.trust.to_jwks()))
        return path


@dataclass
class SignedEnv:
    actors: Actors
    server: RunningServer
    server_ledger: Path

    @property
    def url(self) -> str:
        return self.server.url

    def run(
        self,
        ledger: Path | Ledger,
        *,
        user: str = "alice",
        capabilities: Sequence[str] = DEFAULT_CAPS,
        **options: Any,
    ) -> AgentRun:
        options.setdefault("endpoint", self.url)
        return AgentRun(
            agent=self.actors.agent,
            issuer=self.actors.users[user],
            purpose="Answer HR questions",
            capabilities=list(capabilities),
            ledger=ledger,
            audience=AUDIENCE,
            **options,
        )

    def requests(self) -> list[RecordedRequest]:
        return self.server.log.entries()

    def rejected(self) -> list[RecordedRequest]:
        """Requests refused by a verifier (the guard's or the middleware's)."""
        return [e for e in self.requests() if e.rejected is not None or e.status in (401, 403)]

    def server_entries(self, kind: str | None = None) -> list[LedgerEntry]:
        if not self.server_ledger.exists():
            return []
        return list(Ledger.open(self.server_ledger).entries(kind=kind))


@contextmanager
def verified_server(
    mode: str, directory: Path, actors: Actors | None = None, *, server: FastMCP | None = None
) -> Iterator[SignedEnv]:
    """A fastmcp 4 server in ``mode`` behind both verifiers; its ledger is ``directory/server.jsonl``."""
    actors = actors or Actors.generate("alice", "bob")
    server_ledger = directory / "server.jsonl"
    with running_server(
        mode,
        server=server,
        verifier=signature_verifier(actors.trust, audience=AUDIENCE),
        middleware=[
            Middleware(McpAuthMiddleware, trust=actors.trust, audience=AUDIENCE, ledger=str(server_ledger))
        ],
    ) as server:
        yield SignedEnv(actors, server, server_ledger)


def entries(path: Path, *, kind: str | None = None, run: str | None = None) -> list[LedgerEntry]:
    return list(Ledger.open(path).entries(kind=kind, run=run))


def ect_of(entry: LedgerEntry) -> ExecutionContextToken:
    assert entry.token is not None
    return ExecutionContextToken.decode(entry.token)


def dag_server() -> FastMCP:
    """The HR server plus ``gather_point(group, size)``: answers only once ``size`` calls of ``group``
    have arrived, so parallel calls are provably in flight together (their hooks all ran first)."""
    mcp = build_mcp_server()
    arrived: dict[str, int] = {}

    @mcp.tool
    async def gather_point(group: str, size: int) -> int:
        """Wait (bounded) until ``size`` calls of ``group`` have arrived; returns the count seen."""
        arrived[group] = arrived.get(group, 0) + 1
        for _ in range(_GATHER_POLLS):
            if arrived[group] >= size:
                break
            await asyncio.sleep(0.01)
        return arrived[group]

    return mcp
