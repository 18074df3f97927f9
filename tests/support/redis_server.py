"""A real ``redis-server`` on 127.0.0.1 for tests of the shared stores (replay, tokens).

    def test_x(redis_server):            # the fixture from tests/conftest.py
        url = redis_server.url           # "redis://127.0.0.1:54321/0"
        redis_server.stop()              # e.g. to test fail-closed behaviour; .start() brings it back

The server is the Debian package's binary (``.ci/run`` installs it with apt-get). Without it the tests
that need it are skipped on a developer machine and fail under CI (``CI=true``), so a missing install
step cannot hide behind a green run. No persistence, no fakes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from mcpclient_auth.demo.serving import free_port

__all__ = ["RedisServer", "redis_binary"]


def redis_binary() -> str | None:
    """The ``redis-server`` executable, or ``None`` when it is not installed."""
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)), None
    )


class RedisServer:
    """One ``redis-server`` process on a free loopback port; start/stop bounded in time."""

    def __init__(self, binary: str, *, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="mcpclient-auth-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self.running:
            return self
        self._process = subprocess.Popen(
            [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir,
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port} within {timeout} s")

    def ping(self) -> bool:
        """``True`` when the server answers ``PING`` (raw RESP, no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL); the port stays reserved for :meth:`start`."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def flush(self) -> None:
        """Drop every key (between tests that share one server)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
            conn.sendall(b"FLUSHALL\r\n")
            conn.recv(16)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running})"
