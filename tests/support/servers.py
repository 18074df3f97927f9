"""Run real ASGI apps under uvicorn on 127.0.0.1 with a free port, for end-to-end tests.

    with serve(app) as base_url:          # e.g. "http://127.0.0.1:54321"
        ...

The server runs in a background thread with its own event loop, so both sync and async tests can use
it; startup and shutdown are bounded in time.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # running in a thread: leave signals to pytest
        pass


@contextmanager
def serve(app: Any, *, startup_timeout: float = 15.0, **config: Any) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1:<free port>; yields the base URL (no trailing slash)."""
    port = free_port()
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "auto", "timeout_graceful_shutdown": 2}
    options.update(config)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"test server on port {port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():  # pragma: no cover - a stuck server must not hang the suite
            server.force_exit = True
            thread.join(timeout=5)
