"""The real OpenTelemetry SDK with in-memory exporters, and the checks both MCP stacks share (#17).

    with recorded() as rec:                    # our instrumentation reports to these providers
        ... drive a run ...
    span = rec.one("tools/call search")
    check_tools_call(rec, span, run, ledger_path)
    rec.exported_text()                        # every span, event and metric point, as JSON text

Stack A (``tests/e2e/test_telemetry.py``, mcp 1.x) and stack B (``tests/stack_b/test_telemetry.py``,
mcp 2.x on httpx2) run the same scenarios through :class:`McpStack`, and assert with the same checks.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mcpclient_auth import _telemetry
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.errors import MandateDenied
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import verify_ledger
from mcpclient_auth.run import AgentRun
from tests.support.authz_env import AuthzEnv
from tests.support.hooks_env import entries

BOUND = 30.0
P = "mcpclient_auth."


class Recorder:
    """An SDK tracer provider and meter provider with in-memory exporters, used by our instrumentation."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.spans()])
        return found[0]

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.parent is not None and s.parent.span_id == span.context.span_id]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name -> [(attributes, value or histogram count)] of everything recorded so far."""
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count
                        out.setdefault(metric.name, []).append((dict(point.attributes), value))
        return out

    def total(self, name: str, **attributes: Any) -> Any:
        return sum(
            value
            for attrs, value in self.metrics().get(name, [])
            if all(attrs.get(k) == v for k, v in attributes.items())
        )

    def exported_text(self) -> str:
        """Every finished span (attributes, events, links, status) and every metric point, as text."""
        texts = [span.to_json() for span in self.spans()]
        data = self.reader.get_metrics_data()
        if data is not None:
            texts.append(data.to_json())
        return "\n".join(texts)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@contextmanager
def recorded() -> Iterator[Recorder]:
    """Our instrumentation reports to a fresh :class:`Recorder` inside the block (no global provider)."""
    recorder = Recorder()
    _telemetry.use_providers(recorder.tracer_provider, recorder.meter_provider)
    try:
        yield recorder
    finally:
        _telemetry.use_providers(None, None)
        recorder.shutdown()


@dataclass(frozen=True)
class McpStack:
    """How one MCP client stack opens a session for a run and calls a tool."""

    name: str
    open: Callable[[AgentRun], AbstractAsyncContextManager[Any]]
    is_error: Callable[[Any], bool]


# --- checks ------------------------------------------------------------------------------------------


def trace_hex(span: ReadableSpan) -> tuple[str, str]:
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def check_call_span(span: ReadableSpan, run: AgentRun, env: AuthzEnv, tool: str) -> None:
    """The CLIENT span of a tools/call: MCP semantic conventions plus our attributes."""
    attributes = dict(span.attributes or {})
    assert span.kind == SpanKind.CLIENT
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.tool.name"] == tool
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["jsonrpc.request.id"].isdigit()
    # The session the server saw this call in (mcp 2.x on the 2026-07-28 protocol has none).
    (seen,) = [s for s in env.gate.seen if s.ect_jti == attributes[P + "ect.jti"]]
    assert attributes.get("mcp.session.id") == seen.session_id
    assert seen.session_id or not env.gate.seen[0].session_id
    port = int(env.base.rsplit(":", 1)[1])
    assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", port)
    assert attributes[P + "run.id"] == run.id
    assert attributes[P + "principal.id"] == run.principal.id
    assert attributes[P + "mandate.jti"] == run.mandate.jti
    assert attributes[P + "exec_act"] == f"mcp.{tool}"


def check_trace_in_ledger_and_ect(span: ReadableSpan, path: Path) -> None:
    """The span's trace id is in the ledger's ``ect`` entry and in the ECT it holds (same call)."""
    trace_id, span_id = trace_hex(span)
    ect_jti = (span.attributes or {})[P + "ect.jti"]
    (entry,) = [e for e in entries(path, kind="ect") if e.jti == ect_jti]
    assert entry.meta["trace"] == trace_id
    assert entry.token is not None
    ect = ExecutionContextToken.decode(entry.token)
    assert ect.claims["ect_ext"]["trace"] == {"trace_id": trace_id, "span_id": span_id}


def check_token_span(span: ReadableSpan, *, cache: str, fetched: bool, reason: str) -> None:
    attributes = dict(span.attributes or {})
    assert span.name == "token TokenExchange"
    assert attributes[P + "token.source"] == "TokenExchange"
    assert attributes[P + "token.cache"] == cache
    assert attributes[P + "token.fetched"] is fetched
    assert attributes[P + "token.reason"] == reason
    assert attributes[P + "token.retries"] == 0
    assert span.status.status_code != StatusCode.ERROR


# --- scenarios (one body per scenario, run by both stacks) ---------------------------------------------


async def warm_up(stack: McpStack, session: Any, env: AuthzEnv) -> int:
    """One call so the session is set up and alice's token cached; returns that token's number."""
    result = await asyncio.wait_for(session.call_tool("search", {"query": "warm-up"}), BOUND)
    assert not stack.is_error(result)
    for _ in range(200):  # mcp opens its GET stream after initialize returns: let it settle
        if any(s.method == "GET" for s in env.gate.seen):
            break
        await asyncio.sleep(0.01)
    number = max(s.token_number or 0 for s in env.gate.seen)
    env.gate.seen.clear()
    return number


async def tools_call_scenario(stack: McpStack, env: AuthzEnv, tmp_path: Path) -> None:
    """A tools/call: its span, its token child span (a cache hit; the session's first was a miss),
    the trace id in the ledger entry and the ECT of that call, the server accepted the stamped body."""
    path = tmp_path / "ledger.jsonl"
    with recorded() as rec:
        async with env.run("alice", path, token_source=env.exchange()) as run, stack.open(run) as session:
            await warm_up(stack, session, env)
            result = await asyncio.wait_for(session.call_tool("search", {"query": "traced"}), BOUND)
            assert not stack.is_error(result)
        calls = rec.named("tools/call search")
        assert len(calls) == 2, [s.name for s in rec.spans()]
        span = calls[1]
        check_call_span(span, run, env, "search")
        assert span.status.status_code == StatusCode.UNSET
        assert span.attributes["http.response.status_code"] == 200
        check_trace_in_ledger_and_ect(span, path)
        (token,) = rec.children(span)
        check_token_span(token, cache="hit", fetched=False, reason="first")
        # The session's first token request: a miss that asked the identity provider.
        # (initialize on mcp 1.x, server/discover on mcp 2.x)
        first = min((s for s in rec.spans() if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time)
        (first_token,) = rec.children(first)
        check_token_span(first_token, cache="miss", fetched=True, reason="first")
        # What reached the server carried this span's context in params._meta (and verified).
        assert env.state.rejected == 0, env.state.errors()
        trace_id, span_id = trace_hex(span)
        (seen,) = [
            r for r in env.state.requests if r.ect is not None and r.ect.jti == span.attributes[P + "ect.jti"]
        ]
        meta = json.loads(seen.body)["params"]["_meta"]
        assert meta["traceparent"].startswith(f"00-{trace_id}-{span_id}-")
        # Metrics: one IdP request, hits and misses, every ledger line counted.
        assert rec.total("mcpclient_auth.token.fetches") == env.idp.count == 1
        assert rec.total("mcpclient_auth.token.cache.misses") == 1
        assert rec.total("mcpclient_auth.token.cache.hits") >= 2
        lines = len(path.read_bytes().splitlines())
        assert rec.total("mcpclient_auth.ledger.appends") == lines
        assert rec.total("mcpclient_auth.calls", **{"mcp.method.name": "tools/call"}) == 2
        assert rec.total("mcp.client.operation.duration", **{"mcp.method.name": "tools/call"}) == 2
        assert rec.total("mcpclient_auth.hook.duration", **{"mcp.method.name": "tools/call"}) == 2
    assert verify_ledger(path, env.trust).ok


async def local_refusal_scenario(stack: McpStack, env: AuthzEnv, tmp_path: Path) -> None:
    """A tool the mandate does not grant: refused locally, an error span with the refusal code and an
    event naming the capability; nothing sent, no ECT."""
    path = tmp_path / "ledger.jsonl"
    with recorded() as rec:
        async with env.run("alice", path, token_source=env.exchange()) as run, stack.open(run) as session:
            await warm_up(stack, session, env)
            with pytest.raises(MandateDenied) as denied:
                await asyncio.wait_for(session.call_tool("get_employee_salary", {"employee": "bob"}), BOUND)
        span = rec.one("tools/call get_employee_salary")
        attributes = dict(span.attributes or {})
        assert span.kind == SpanKind.CLIENT
        assert span.status.status_code == StatusCode.ERROR
        assert attributes["error.type"] == denied.value.code == attributes[P + "refusal.code"]
        assert attributes[P + "refusal.local"] is True
        assert attributes[P + "run.id"] == run.id
        assert P + "ect.jti" not in attributes  # nothing was minted, nothing sent
        (event,) = [e for e in span.events if e.name == P + "capability_missing"]
        assert event.attributes[P + "capability"] == "mcp.get_employee_salary"
        assert rec.children(span) == []  # refused before any token was asked for
        assert env.gate.calls("get_employee_salary") == []
        assert rec.total("mcpclient_auth.refusals", **{"error.type": denied.value.code}) == 1
    (denial,) = entries(path, kind="denial")
    assert denial.meta["code"] == denied.value.code


async def reobtain_scenario(stack: McpStack, env: AuthzEnv, tmp_path: Path) -> None:
    """A 401 invalid_token: one span for the call with a ``reobtain`` event, two token child spans (the
    cached token, then a miss that asked the IdP), both sends' ledger entries name the same trace."""
    path = tmp_path / "ledger.jsonl"
    with recorded() as rec:
        async with env.run("alice", path, token_source=env.exchange()) as run, stack.open(run) as session:
            number = await warm_up(stack, session, env)
            env.gate.revoked.add(number)
            result = await asyncio.wait_for(session.call_tool("search", {"query": "revoked"}), BOUND)
            assert not stack.is_error(result)
        first, second = env.gate.calls("search")
        assert (first.status, second.status) == (401, 200)
        span = rec.named("tools/call search")[-1]
        check_call_span(span, run, env, "search")
        attributes = dict(span.attributes or {})
        assert span.status.status_code == StatusCode.UNSET
        assert attributes[P + "attempts"] == 2
        assert attributes[P + "ect.jti"] == second.ect_jti
        (reobtain,) = [e for e in span.events if e.name == P + "reobtain"]
        assert reobtain.attributes["http.response.status_code"] == 401
        cached, fresh = sorted(rec.children(span), key=lambda s: s.start_time)
        check_token_span(cached, cache="hit", fetched=False, reason="first")
        check_token_span(fresh, cache="miss", fetched=True, reason="reobtain")
        trace_id, _ = trace_hex(span)
        ects = {e.jti: e for e in entries(path, kind="ect")}
        assert ects[first.ect_jti].meta["trace"] == ects[second.ect_jti].meta["trace"] == trace_id
        check_trace_in_ledger_and_ect(span, path)
        assert rec.total("mcpclient_auth.token.fetches") == env.idp.count == 2
    assert verify_ledger(path, env.trust).ok


async def step_up_scenario(stack: McpStack, env: AuthzEnv, tmp_path: Path) -> None:
    """A 403 insufficient_scope on the session's first request: one span with a ``step_up`` event and
    two token child spans (the first token, then the step-up's, both asked of the IdP)."""
    env.gate.required_scopes = frozenset({"mcp.read", "mcp.write"})
    source = env.exchange(scopes=["mcp.read"])
    path = tmp_path / "ledger.jsonl"
    with recorded() as rec:
        async with (
            env.run("alice", path, token_source=source, allowed_scopes=["mcp.read", "mcp.write"]) as run,
            stack.open(run) as session,
        ):
            result = await asyncio.wait_for(session.call_tool("search", {"query": "stepped"}), BOUND)
            assert not stack.is_error(result)
        (span,) = [s for s in rec.spans() if any(e.name == P + "step_up" for e in s.events)]
        (event,) = [e for e in span.events if e.name == P + "step_up"]
        assert event.attributes["http.response.status_code"] == 403
        assert span.status.status_code == StatusCode.UNSET
        assert span.attributes[P + "attempts"] == 2 and span.attributes["http.response.status_code"] == 200
        first, stepped = sorted(rec.children(span), key=lambda s: s.start_time)
        check_token_span(first, cache="miss", fetched=True, reason="first")
        check_token_span(stepped, cache="miss", fetched=True, reason="step_up")
        assert rec.total("mcpclient_auth.token.fetches") == env.idp.count == 2
    assert verify_ledger(path, env.trust).ok


async def retry_scenario(stack: McpStack, env: AuthzEnv, tmp_path: Path) -> None:
    """The identity provider answers 503 once: the session's first token span records one retry."""
    from tests.support.idp import Reply

    env.idp.queue(Reply.unavailable(503))
    path = tmp_path / "ledger.jsonl"
    with recorded() as rec:
        async with env.run("alice", path, token_source=env.exchange()) as run, stack.open(run) as session:
            assert not stack.is_error(await asyncio.wait_for(session.call_tool("search", {"query": "r"}), BOUND))
        first = min((s for s in rec.spans() if s.kind == SpanKind.CLIENT), key=lambda s: s.start_time)
        (token,) = rec.children(first)
        attributes = dict(token.attributes or {})
        assert attributes[P + "token.retries"] == 1 and attributes[P + "token.fetched"] is True
        assert token.status.status_code != StatusCode.ERROR
        assert env.idp.count == 2 and rec.total("mcpclient_auth.token.fetches") == 1  # one fetch, retried


def private_material(identity: Identity) -> list[str]:
    """The private JWK ``d`` and the PKCS#8 PEM body lines (as in tests/reliability/test_secrets.py,
    which stack B cannot import: it opens mcp 1.x sessions)."""
    d = identity.private_jwk()["d"]
    pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    raw_d = base64.urlsafe_b64decode(d + "=" * (-len(d) % 4))
    return [d, *body, base64.b64encode(raw_d).decode(), raw_d.hex()]


async def secrets_scenario(stack: McpStack, env: AuthzEnv, tmp_path: Path) -> None:
    """Sentinel scan: a traced call, a refusal and a 401 re-obtain; no subject token, client secret,
    access token or private key material in any exported span attribute, event or metric point."""
    from tests.support.authz_env import CLIENT_SECRET, subject_token

    path = tmp_path / "ledger.jsonl"
    with recorded() as rec:
        async with env.run("alice", path, token_source=env.exchange()) as run, stack.open(run) as session:
            number = await warm_up(stack, session, env)
            env.gate.revoked.add(number)
            assert not stack.is_error(await session.call_tool("search", {"query": "revoked"}))
            with pytest.raises(MandateDenied):
                await session.call_tool("get_employee_salary", {"employee": "bob"})
        text = rec.exported_text()
    assert "tools/call search" in text and P + "capability_missing" in text  # the control
    access_tokens = {r.authorization.removeprefix("Bearer ") for r in env.state.requests if r.authorization}
    assert len(access_tokens) >= 2  # the first token and the re-obtained one
    secrets = {
        "subject token": subject_token("alice"),
        "client secret": CLIENT_SECRET,
        **{f"access token {n}": t for n, t in enumerate(sorted(access_tokens))},
        **{f"agent key {n}": s for n, s in enumerate(private_material(env.agent))},
        **{f"user key {n}": s for n, s in enumerate(private_material(env.users["alice"]))},
        "mandate": run.mandate.token,
    }
    leaks = [name for name, secret in secrets.items() if secret in text]
    assert not leaks, leaks
