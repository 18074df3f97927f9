"""Shared pieces for the request-path end-to-end tests (tests/e2e/test_hooks_*.py).

    with hr_server() as env:                       # FastMCP + guard on 127.0.0.1:<free port>
        run = env.run(tmp_path / "ledger.jsonl", capabilities=["mcp.search"])
        ...
        env.state.verified_ects, entries(tmp_path / "ledger.jsonl", kind="ect")
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mcpclient_auth._encoding import b64url_encode
from mcpclient_auth.act import Mandate
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, LedgerEntry
from mcpclient_auth.run import AgentRun
from tests.support.trust import trust_for

from .mcp_app import GuardState, build_app
from .servers import serve

ALL_TOOLS = ("search", "get_office_locations", "get_employee_salary", "slow_echo", "gather_point", "stepwise")
#: Principals other than the user's own name that runs of these tests act for.
OTHER_PRINCIPALS = ("bob",)
DEFAULT_CAPS = ("mcp.search", "mcp.get_office_locations", "mcp.slow_echo", "mcp.gather_point", "mcp.stepwise")


@dataclass
class Env:
    user: Identity
    agent: Identity
    trust: TrustStore
    state: GuardState
    base: str
    path: str = "/mcp"

    @property
    def url(self) -> str:
        return f"{self.base}{self.path}"

    def run(
        self, ledger: Path | Any, *, capabilities: Sequence[str] = DEFAULT_CAPS, **options: Any
    ) -> AgentRun:
        options.setdefault("endpoint", self.url)
        principal = options.get("principal")
        if principal is not None and principal.id != self.user.name:
            # A run acts only for its mandate's principal: the user key speaks for OTHER_PRINCIPALS too.
            mandate = Mandate.issue(
                self.user,
                agent=self.agent,
                audience=options["endpoint"],
                purpose="Answer HR questions",
                capabilities=list(capabilities),
                iss=principal.id,
            )
            return AgentRun(agent=self.agent, mandate=mandate.token, ledger=ledger, **options)
        return AgentRun(
            agent=self.agent,
            issuer=self.user,
            purpose="Answer HR questions",
            capabilities=list(capabilities),
            ledger=ledger,
            **options,
        )


def actors() -> tuple[Identity, Identity, TrustStore]:
    user = Identity.generate("ES256", name="alice")
    agent = Identity.generate("ES256", name="agent-1")
    return user, agent, trust_for(issuers=[(user, [user.name, *OTHER_PRINCIPALS])], agents=[agent])


@contextmanager
def hr_server(**app_options: Any) -> Iterator[Env]:
    """The HR FastMCP server behind the verifying guard; ``app_options`` go to ``build_app``."""
    user, agent, trust = actors()
    state = GuardState(trust)
    path = "/sse" if app_options.get("legacy_sse") else "/mcp"
    with serve(build_app(state, **app_options)) as base:
        state.audience = f"{base}{path}"
        yield Env(user, agent, trust, state, base, path)


def entries(path: Path, *, kind: str | None = None, run: str | None = None) -> list[LedgerEntry]:
    return list(Ledger.open(path).entries(kind=kind, run=run))


def sha256_b64url(data: bytes) -> str:
    return b64url_encode(hashlib.sha256(data).digest())


@dataclass
class Exchange:
    """One request a :class:`RecordingTransport` carried, and the response bytes pulled through it."""

    request: httpx.Request
    status: int = 0
    chunks: list[bytes] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class _RecordingStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, exchange: Exchange) -> None:
        self._inner = inner
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._exchange.chunks.append(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class RecordingTransport(httpx.AsyncBaseTransport):
    """A real network transport that also records what went out and which bytes came back."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange = Exchange(request)
        self.exchanges.append(exchange)
        response = await self.inner.handle_async_request(request)
        exchange.status = response.status_code
        response.stream = _RecordingStream(response.stream, exchange)  # type: ignore[arg-type]
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
