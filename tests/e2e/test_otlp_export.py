"""OTLP/HTTP export of a demo run to a real local receiver (#17 acceptance 2).

The receiver is a small HTTP server on 127.0.0.1 that decodes each ``POST /v1/traces`` body as an
``ExportTraceServiceRequest`` (the OpenTelemetry proto package) and answers as a collector does. The
demo (``mcpclient_auth.demo``: the LangGraph agent, the HR server behind ``McpAuthMiddleware``, two
users) runs with the standard SDK and its OTLP/HTTP span exporter pointed at it.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from mcpclient_auth import _telemetry
from mcpclient_auth.demo.runner import run_demo
from mcpclient_auth.ledger import Ledger

pytestmark = pytest.mark.e2e

P = "mcpclient_auth."


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP (protobuf) trace receiver: every decoded span, with its resource's service name."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[tuple[str, str, Any]] = []  # (service.name, scope name, Span)
        self.posts = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
            self.send_error(404)
            return
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            self.server.posts += 1
            for resource_spans in request.resource_spans:
                service = next(
                    (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"),
                    "",
                )
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.server.spans.append((service, scope_spans.scope.name, span))
        payload = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        out[attribute.key] = getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
    return out


def test_a_demo_run_is_exported_over_otlp_http_to_a_local_receiver(receiver: Receiver, tmp_path: Path) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "hr-demo"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.url, timeout=10)))
    _telemetry.use_providers(provider, None)
    try:
        result = run_demo(tmp_path / "demo")
    finally:
        _telemetry.use_providers(None, None)
        assert provider.force_flush(30_000)
        provider.shutdown()
    assert result.report.ok, result.report.failures[:3]

    assert receiver.posts >= 1
    spans = [(service, scope, span, _attributes(span)) for service, scope, span in receiver.spans]
    assert {service for service, *_ in spans} == {"hr-demo"}
    assert {scope for _, scope, *_ in spans} == {"mcpclient_auth"}
    names = {span.name for _, _, span, _ in spans}
    # maria's run: offices and the salary (her mandate grants both); erik's run: offices only.
    assert {"initialize", "tools/list", "tools/call get_office_locations", "tools/call get_employee_salary"} <= names
    client = [(s, a) for _, _, s, a in spans if s.kind == s.SPAN_KIND_CLIENT]
    server = [(s, a) for _, _, s, a in spans if s.kind == s.SPAN_KIND_SERVER]
    tool_calls = [(s, a) for s, a in client if a.get("mcp.method.name") == "tools/call"]
    assert {a[P + "principal.id"] for _, a in tool_calls} == {"maria", "erik"}
    assert {a[P + "run.id"] for _, a in tool_calls} == set(result.runs.values())
    # Every server span of a verified JSON-RPC message hangs under the client span that sent it (the
    # body-less GET stream and DELETE carry no params._meta: no MCP message, no client span).
    client_ids = {s.span_id for s, _ in client}
    verified = [(s, a) for s, a in server if a.get(P + "verification") == "verified"]
    messages = [(s, a) for s, a in verified if "mcp.method.name" in a]
    assert len(messages) >= len(tool_calls)
    assert all(s.parent_span_id in client_ids for s, _ in messages)
    # An auditor goes from every ``ect`` line of the ledger to its trace.
    exported_traces = {span.trace_id.hex() for _, _, span, _ in spans}
    ect_entries = list(Ledger.open(result.ledger).entries(kind="ect"))
    assert ect_entries and all(entry.meta["trace"] in exported_traces for entry in ect_entries)
    by_ect = {a[P + "ect.jti"]: s for s, a in client if P + "ect.jti" in a}
    for entry in ect_entries:
        assert by_ect[entry.jti].trace_id.hex() == entry.meta["trace"]
