"""Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread (for the demo and the samples).

    port = free_port()
    with running(app, port):
        ...                      # http://127.0.0.1:{port}/...

Start-up and shut-down are bounded in time, so a broken app fails fast instead of hanging.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

__all__ = ["free_port", "running"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # not the main thread: signals stay with the caller
        pass


@contextmanager
def running(app: Any, port: int, *, startup_timeout: float = 15.0, **config: Any) -> Iterator[None]:
    """Serve ``app`` on ``127.0.0.1:port`` for the duration of the block.

    ``config`` overrides :class:`uvicorn.Config` options (``log_level``, ``lifespan``, ...).
    """
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "auto", "timeout_graceful_shutdown": 2}
    options.update(config)
    server = _ThreadServer(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on 127.0.0.1:{port} did not start")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():  # pragma: no cover - never hang the caller on a stuck server
            server.force_exit = True
            thread.join(timeout=5)
