"""Stack B (mcp 2.x, httpx2, fastmcp 4): every method inside the mandate, constraints, list filtering.

The same acceptance as ``tests/e2e/test_mandate_methods.py`` (issue 12, items 4-6) on the other MCP
stack: a fastmcp 4 server with tools, resources, a template and prompts behind ``McpAuthMiddleware``,
served in two configurations — the 2026-07-28 stateless protocol answering JSON, and the stateful
handshake answering SSE (a modern fastmcp 4 server answers these calls in JSON even without
``json_response``) — driven by a signed mcp 2.x ``Client`` (``open_client``); server-side
refusals by hand-crafted requests signed with the SDK's own signer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import FastMCP
from starlette.middleware import Middleware

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.adapters.mcp_v2 import open_client
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import ConstraintUnknown, ConstraintViolated, MandateDenied
from mcpclient_auth.httpsig import RequestSigner
from mcpclient_auth.jsonrpc import Call, parse
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.policy import McpActionPolicy
from mcpclient_auth.run import AgentRun
from mcpclient_auth.server import PROBLEM_TYPE_PREFIX, McpAuthMiddleware
from tests.stack_b.support import MODERN_VERSION, RecordingGuard, RequestLog
from tests.support.servers import serve
from tests.support.trust import trust_for

pytestmark = pytest.mark.e2e

AUDIENCE = "https://hr.example/mcp"
READ = "mcp.rpc.resources.read"
SALARIES = {"bob": 98_000, "carol": 105_000}
HANG_GUARD = 60  # seconds; only stops a hung test


def build_server(reads: dict[str, int]) -> FastMCP:
    mcp = FastMCP("stack-b-hr-everything")

    @mcp.tool
    def get_office_locations() -> list[str]:
        """List the company's offices."""
        return ["Berlin", "Lisbon", "Montreal"]

    @mcp.tool
    def get_employee_salary(employee: str) -> int:
        """An employee's salary (sensitive)."""
        reads[employee] = reads.get(employee, 0) + 1
        return SALARIES.get(employee, 0)

    @mcp.resource("hr://handbook")
    def handbook() -> str:
        """The HR handbook."""
        return "be nice"

    @mcp.resource("hr://salaries/all")
    def all_salaries() -> str:
        """Every salary (confidential)."""
        reads["all"] = reads.get("all", 0) + 1
        return json.dumps(SALARIES)

    @mcp.resource("hr://salaries/{employee}")
    def one_salary(employee: str) -> str:
        """One salary (confidential)."""
        return str(SALARIES.get(employee, 0))

    @mcp.prompt
    def welcome() -> str:
        """A harmless greeting."""
        return "Welcome to HR."

    @mcp.prompt
    def salary_report(employee: str) -> str:
        """Embeds a salary (confidential)."""
        reads[f"prompt:{employee}"] = reads.get(f"prompt:{employee}", 0) + 1
        return f"{employee} earns {SALARIES.get(employee, 0)}"

    return mcp


@dataclass(frozen=True)
class Config:
    name: str
    stateless: bool
    json_response: bool
    client_mode: str
    media: str


CONFIGS = {
    "modern-json": Config("modern-json", True, True, MODERN_VERSION, "application/json"),
    "legacy-sse": Config("legacy-sse", False, False, "legacy", "text/event-stream"),
}


@dataclass
class Env:
    config: Config
    url: str
    user: Identity
    agent: Identity
    trust: TrustStore
    ledger: Path
    log: RequestLog
    reads: dict[str, int]

    def run(self, path: Path, capabilities: list[Any]) -> AgentRun:
        return AgentRun(
            agent=self.agent,
            issuer=self.user,
            purpose="HR questions",
            capabilities=capabilities,
            endpoint=self.url,
            ledger=path,
            audience=AUDIENCE,
        )

    def mandate(self, caps: list[Any]) -> Mandate:
        return Mandate.issue(self.user, agent=self.agent, audience=AUDIENCE, purpose="HR", capabilities=caps)

    def signed(self, message: dict[str, Any], mandate: Mandate) -> httpx.Request:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        call = parse(body)
        assert isinstance(call, Call)
        ect = ExecutionContextToken.mint(
            self.agent,
            audience=[AUDIENCE],
            exec_act=McpActionPolicy().action_for(call),
            pred=[mandate.jti],
            wid=mandate.jti,
            inp_hash=sha256_b64url(body),
        )
        request = httpx.Request(
            "POST",
            self.url,
            content=body,
            headers={
                "content-type": "application/json",
                "accept": "application/json, text/event-stream",
                "act-mandate": mandate.token,
                "execution-context": ect.token,
            },
        )
        RequestSigner(self.agent, audience=AUDIENCE).sign(request)
        return request

    def media_of(self, method: str) -> list[str]:
        return [e.content_type or "" for e in self.log.entries() if e.rpc_method == method]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    config = CONFIGS[request.param]
    user = Identity.generate("ES256", name="maria")
    agent = Identity.generate("ES256", name="hr-agent")
    trust = trust_for(issuers=[user], agents=[agent])
    ledger = tmp_path_factory.mktemp(config.name) / "server.jsonl"
    reads: dict[str, int] = {}
    log = RequestLog()
    app = build_server(reads).http_app(
        path="/mcp",
        stateless_http=config.stateless,
        json_response=config.json_response,
        middleware=[
            Middleware(RecordingGuard, log=log),
            Middleware(McpAuthMiddleware, trust=trust, audience=AUDIENCE, ledger=str(ledger)),
        ],
    )
    with serve(app) as base:
        yield Env(config, base + "/mcp", user, agent, trust, ledger, log, reads)


def problem(response: httpx.Response, code: str) -> None:
    assert response.status_code == 403, response.text
    document = response.json()
    assert document["type"] == PROBLEM_TYPE_PREFIX + code and document["code"] == code


def ledger_entries(path: Path, kind: str) -> list[Any]:
    return list(Ledger.open(path).entries(kind=kind))


# --- acceptance 4 -------------------------------------------------------------------------------------------


async def test_resources_read_and_prompts_get_outside_the_mandate_are_refused_locally(
    env: Env, tmp_path: Path
) -> None:
    before = dict(env.reads)
    path = tmp_path / "client.jsonl"
    run = env.run(path, ["mcp.get_office_locations"])
    async with asyncio.timeout(HANG_GUARD), run, open_client(run, mode=env.config.client_mode) as client:
        with pytest.raises(MandateDenied) as read:
            await client.read_resource("hr://salaries/all")
        with pytest.raises(MandateDenied) as prompt:
            await client.get_prompt("salary_report", {"employee": "carol"})
        offices = await client.call_tool("get_office_locations", {})  # the session survived
    assert read.value.code == prompt.value.code == "mandate_denied"
    assert not offices.is_error
    assert env.reads == before
    denials = ledger_entries(path, "denial")
    assert [(d.meta["method"], d.meta["action"]) for d in denials] == [
        ("resources/read", READ),
        ("prompts/get", "mcp.prompt.salary_report"),
    ]
    sent = {e.rpc_method for e in env.log.entries()}
    assert "resources/read" not in sent and "prompts/get" not in sent  # nothing left the client
    assert verify_ledger(path, env.trust).ok


@pytest.mark.parametrize(
    ("message", "action"),
    [
        ({"id": 5, "method": "resources/read", "params": {"uri": "hr://salaries/all"}}, READ),
        (
            {
                "id": 6,
                "method": "prompts/get",
                "params": {"name": "salary_report", "arguments": {"employee": "c"}},
            },
            "mcp.prompt.salary_report",
        ),
    ],
)
def test_server_refuses_methods_outside_the_mandate_with_403(
    env: Env, message: dict[str, Any], action: str
) -> None:
    before = dict(env.reads)
    mandate = env.mandate(["mcp.get_office_locations"])
    with httpx.Client(timeout=10) as client:
        response = client.send(env.signed(message, mandate))
    problem(response, "capability_not_granted")
    assert action in response.json()["detail"] and env.reads == before


# --- acceptance 5 -------------------------------------------------------------------------------------------


async def test_lists_show_only_what_the_mandate_grants(env: Env, tmp_path: Path) -> None:
    env.log.clear()
    caps: list[Any] = [
        "mcp.get_office_locations",
        "mcp.prompt.welcome",
        {
            "action": READ,
            "constraints": {"args": {"uri": {"one_of": ["hr://handbook", "hr://salaries/bob"]}}},
        },
    ]
    path = tmp_path / "client.jsonl"
    run = env.run(path, caps)
    async with asyncio.timeout(HANG_GUARD), run, open_client(run, mode=env.config.client_mode) as client:
        tools = await client.list_tools()
        prompts = await client.list_prompts()
        resources = await client.list_resources()
        templates = await client.list_resource_templates()
        handbook = await client.read_resource("hr://handbook")
    assert [t.name for t in tools.tools] == ["get_office_locations"]
    assert [p.name for p in prompts.prompts] == ["welcome"]
    assert [str(r.uri) for r in resources.resources] == ["hr://handbook"]
    assert [t.uri_template for t in templates.resource_templates] == ["hr://salaries/{employee}"]
    assert handbook.contents[0].text == "be nice"  # type: ignore[union-attr]
    for method in ("tools/list", "prompts/list", "resources/list", "resources/templates/list"):
        media = env.media_of(method)
        assert media and all(m.startswith(env.config.media) for m in media), (method, media)
    assert verify_ledger(path, env.trust).ok


# --- acceptance 6 -------------------------------------------------------------------------------------------


async def test_argument_constraint_and_max_calls_on_the_client(env: Env, tmp_path: Path) -> None:
    before = dict(env.reads)
    salary = {
        "action": "mcp.get_employee_salary",
        "constraints": {"args": {"employee": {"one_of": ["bob"]}}, "max_calls": 1},
    }
    path = tmp_path / "client.jsonl"
    run = env.run(path, [salary])
    async with asyncio.timeout(HANG_GUARD), run, open_client(run, mode=env.config.client_mode) as client:
        with pytest.raises(ConstraintViolated):
            await client.call_tool("get_employee_salary", {"employee": "carol"})
        bob = await client.call_tool("get_employee_salary", {"employee": "bob"})
        with pytest.raises(ConstraintViolated):
            await client.call_tool("get_employee_salary", {"employee": "bob"})
    assert bob.structured_content == {"result": 98_000}
    assert env.reads.get("carol", 0) == before.get("carol", 0)
    assert env.reads.get("bob", 0) == before.get("bob", 0) + 1
    assert [d.meta["code"] for d in ledger_entries(path, "denial")] == ["constraint_violated"] * 2
    assert verify_ledger(path, env.trust).ok


def test_argument_constraint_and_max_calls_on_the_server(env: Env) -> None:
    salary = {
        "action": "mcp.get_employee_salary",
        "constraints": {"args": {"employee": {"one_of": ["bob"]}}, "max_calls": 1},
    }
    mandate = env.mandate([salary])

    def call(employee: str, request_id: int) -> dict[str, Any]:
        arguments = {"employee": employee}
        return {
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "get_employee_salary", "arguments": arguments},
        }

    with httpx.Client(timeout=10) as client:
        problem(client.send(env.signed(call("carol", 1), mandate)), "constraint_violated")
        assert client.send(env.signed(call("bob", 2), mandate)).status_code != 403
        problem(client.send(env.signed(call("bob", 3), mandate)), "constraint_violated")


def test_unknown_constraint_refused_at_run_creation_and_by_the_server(env: Env, tmp_path: Path) -> None:
    caps = [{"action": "mcp.get_employee_salary", "constraints": {"employee": "bob"}}]
    with pytest.raises(ConstraintUnknown):
        env.run(tmp_path / "client.jsonl", caps)
    with httpx.Client(timeout=10) as client:
        problem(client.send(env.signed({"id": 1, "method": "ping"}, env.mandate(caps))), "constraint_unknown")
