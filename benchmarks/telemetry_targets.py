"""Target 17 (issue #17, fleet): what OpenTelemetry and the shared token cache cost per call.

    python -m benchmarks --only 17

* **Instrumented hook**: ``RunHooks.on_request`` on a 1 KB ``tools/call`` with the OpenTelemetry SDK
  configured (a ``TracerProvider`` whose ``BatchSpanProcessor`` feeds an exporter that drops
  everything, and a ``MeterProvider`` with a reader) against the same hook with no provider configured
  (the API installed, as in most environments: our instrumentation is then one check per call).
  Rounds are interleaved, the same run's ledger and keys.  The instrumented side includes the span,
  the ``params._meta`` stamp (a JSON parse and dump of the body), the ECT ``ect_ext`` and the metrics.
* **Token cache hit through the pipeline's token span**: ``get_token`` inside the token span (what
  :func:`mcpclient_auth._calls.authorization` does) with the SDK configured, against the bare hit.
* **Shared token cache hit**: a hit with :class:`~mcpclient_auth.authz.RedisTokenStore` behind the
  cache (a real ``redis-server`` on 127.0.0.1), with the in-process layer and without it
  (``local=False``: every call reads and decrypts the Redis entry), each against the in-process hit of
  the same rounds (the measurement of target 3, reported here next to the telemetry cost).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from mcpclient_auth import _telemetry
from mcpclient_auth._hooks import RunHooks
from mcpclient_auth.authz import AccessToken, TokenExchange
from mcpclient_auth.keys import Identity
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import AgentRun

from ._common import Config, Row
from .request_hook import HEADERS, URL, _body

__all__ = ["telemetry_cost"]


class _DroppingExporter:
    """A span exporter that exports nothing (the SDK's work is measured, not an exporter's I/O)."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _providers() -> tuple[Any, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_DroppingExporter()))  # type: ignore[arg-type]
    return tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()])


async def _hook_round(hooks: RunHooks, calls: int, offset: int) -> float:
    requests = [httpx.Request("POST", URL, content=_body(offset + i), headers=HEADERS) for i in range(calls)]
    samples = []
    clock = time.perf_counter_ns
    for request in requests:
        start = clock()
        await hooks.on_request(request)
        samples.append(clock() - start)
    return statistics.median(samples) / 1000


async def _hooks_us(config: Config, tmp: Path) -> tuple[float, float]:
    """Median µs of ``on_request``: (instrumented, uninstrumented), interleaved rounds."""
    user, agent = Identity.generate("ES256", name="alice"), Identity.generate("ES256", name="agent")
    run = AgentRun(
        agent=agent, issuer=user, purpose="benchmark", capabilities=["mcp.search"], endpoint=URL,
        ledger=tmp / "ledger.jsonl", durability="flush",
    )  # fmt: skip
    hooks = RunHooks(run)
    tracer_provider, meter_provider = _providers()
    on: list[float] = []
    off: list[float] = []
    offset = 0
    try:
        for round_ in range(config.rounds + 1):  # the first round warms up
            for instrumented in (round_ % 2 == 0, round_ % 2 == 1):  # alternate which side goes first
                if instrumented:
                    _telemetry.use_providers(tracer_provider, meter_provider)
                else:
                    _telemetry.use_providers(None, None)
                median = await _hook_round(hooks, config.hook_calls, offset)
                offset += config.hook_calls
                (on if instrumented else off).append(median)
    finally:
        _telemetry.use_providers(None, None)
        tracer_provider.shutdown()
        meter_provider.shutdown()
        run.close()
    return statistics.median(on[1:]), statistics.median(off[1:])


async def _token_span_us(config: Config) -> tuple[float, float, float]:
    """Median µs of a cached ``get_token``: (inside the token span with the SDK on, inside it with no
    provider configured, bare: no token span at all)."""
    source = TokenExchange(
        "http://127.0.0.1:9/token", client_id="agent", client_secret="s3cret", audience="api://mcp",
        scopes=["mcp.read"],
    )  # fmt: skip  (never contacted: the entry is pre-filled)
    principal = Principal(id="alice", subject_token="alice-sso-token")
    key = source._key(principal, None, None)
    source.cache.put(key, AccessToken("issued", expires_at=time.time() + 3600, scopes=frozenset(key.scopes)))
    tracer_provider, meter_provider = _providers()
    calls = 1000 if config.quick else 10_000
    samples: dict[str, list[float]] = {"on": [], "off": [], "bare": []}
    clock = time.perf_counter_ns

    async def spanned() -> None:
        for _ in range(calls):
            with _telemetry.token_span(source):
                await source.get_token(principal)

    async def bare() -> None:
        for _ in range(calls):
            await source.get_token(principal)

    try:
        for _ in range(config.rounds + 1):  # the first round warms up
            for name in ("on", "off", "bare"):
                _telemetry.use_providers(*((tracer_provider, meter_provider) if name == "on" else (None, None)))
                start = clock()
                await (bare() if name == "bare" else spanned())
                samples[name].append((clock() - start) / calls / 1000)
    finally:
        _telemetry.use_providers(None, None)
        tracer_provider.shutdown()
        meter_provider.shutdown()
    on, off, plain = (statistics.median(samples[n][1:]) for n in ("on", "off", "bare"))
    return on, off, plain


def _shared_rows(config: Config) -> list[Row]:
    from tests.support.redis_server import RedisServer, redis_binary

    from .token_targets import _shared_hit_us as shared_hit_us

    binary = redis_binary()
    if binary is None:
        print("  redis-server not installed: shared token cache rows skipped", file=sys.stderr)
        return []
    server = RedisServer(binary).start()
    try:
        plain, layered, remote = asyncio.run(shared_hit_us(config, server.url))
    finally:
        server.close()
    note = {"store": "RedisTokenStore, AES-256-GCM, redis-server on 127.0.0.1"}
    return [
        Row("17", "Redis token cache hit, in-process layer in front", layered, "µs",
            "in-process token cache hit (µs)", plain, "", note),
        Row("17", "Redis token cache hit, Redis only (local=False)", remote, "µs",
            "in-process token cache hit (µs)", plain, "", note),
    ]  # fmt: skip


def telemetry_cost(config: Config) -> list[Row]:
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        print("  opentelemetry-sdk not installed: target 17 telemetry rows skipped", file=sys.stderr)
        return _shared_rows(config)
    with tempfile.TemporaryDirectory() as tmp:
        on, off = asyncio.run(_hooks_us(config, Path(tmp)))
    span, off_span, bare = asyncio.run(_token_span_us(config))
    sdk = {"sdk": "opentelemetry-sdk, BatchSpanProcessor + dropping exporter, MeterProvider + reader"}
    return [
        Row("17", "request hook, OpenTelemetry SDK configured", on, "µs",
            "request hook, no provider configured (µs)", off, "", sdk),
        Row("17", "token cache hit inside the token span, SDK configured", span, "µs",
            "the same, no provider configured (µs)", off_span, "", sdk),
        Row("17", "token cache hit inside the token span, no provider configured", off_span, "µs",
            "token cache hit without the token span (µs)", bare, ""),
        *_shared_rows(config),
    ]  # fmt: skip
