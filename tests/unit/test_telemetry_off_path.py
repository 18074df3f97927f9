"""With OpenTelemetry installed but no provider configured, each telemetry event is one check: the
API's provider getters (which read an environment variable on every call) are never asked."""

from __future__ import annotations

import sys

import httpx
import pytest

from mcpclient_auth import _telemetry

pytest.importorskip("opentelemetry.trace")
from opentelemetry import metrics, trace


def test_no_provider_getter_runs_per_event_while_nothing_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def getter(name: str) -> object:
        def ask() -> object:
            asked.append(name)
            raise AssertionError(f"{name} asked on the off path")

        return ask

    monkeypatch.setattr(_telemetry._state, "override_tracer", None)
    monkeypatch.setattr(_telemetry._state, "override_meter", None)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(sys.modules["opentelemetry.metrics._internal"], "_METER_PROVIDER", None)
    monkeypatch.setattr(trace, "get_tracer_provider", getter("tracer"))
    monkeypatch.setattr(metrics, "get_meter_provider", getter("meter"))
    request = httpx.Request("POST", "http://127.0.0.1:9/mcp", content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}')
    for _ in range(3):
        assert _telemetry.call_started(request) is None
        assert not _telemetry.active()
        _telemetry.ledger_appended("ect")
        with _telemetry.token_span(object()):
            pass
        with _telemetry.server_span("tools/call", b"{}", {}):
            pass
    assert asked == []
    # A global provider set later is seen at the next event (the getter is asked then).
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", object())
    with pytest.raises(AssertionError):
        _telemetry.call_started(request)
    assert asked == ["tracer"]
