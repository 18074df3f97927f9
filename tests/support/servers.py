"""Run real ASGI apps under uvicorn on 127.0.0.1 with a free port, for end-to-end tests.

    with serve(app) as base_url:          # e.g. "http://127.0.0.1:54321"
        ...

A thin wrapper over the demo's :mod:`mcpclient_auth.demo.serving` (a background thread with its own
event loop, so sync and async tests can use it; start-up and shut-down bounded in time).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mcpclient_auth.demo.serving import free_port, running

__all__ = ["free_port", "serve"]


@contextmanager
def serve(app: Any, *, startup_timeout: float = 15.0, **config: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1:<free port>; yields the base URL (no trailing slash)."""
    port = free_port()
    with running(app, port, startup_timeout=startup_timeout, **config):
        yield f"http://127.0.0.1:{port}"
