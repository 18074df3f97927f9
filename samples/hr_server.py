"""A small HR MCP server (FastMCP) for the samples, served on 127.0.0.1 in a background thread.

with running_hr_server() as url:        # e.g. "http://127.0.0.1:54321/mcp"
    ...

python samples/hr_server.py --port 8000     # or serve it on its own
"""

from __future__ import annotations

import argparse
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastmcp import FastMCP

mcp = FastMCP("hr")


class _QuietShutdown(logging.Filter):
    # mcp's server logs a traceback when a client ends its session while the server's standalone SSE
    # stream is still open; it is harmless at shutdown and would only clutter the samples' output.
    def filter(self, record: logging.LogRecord) -> bool:
        return "standalone SSE writer" not in record.getMessage()


logging.getLogger("mcp.server.streamable_http").addFilter(_QuietShutdown())


@mcp.tool
def get_office_locations() -> list[str]:
    """List the company's offices."""
    return ["Berlin", "Lisbon", "Toronto"]


@mcp.tool
def search(query: str) -> str:
    """Search the HR handbook."""
    return f"3 handbook pages mention {query!r}"


@mcp.tool
def get_employee_salary(employee: str) -> int:
    """An employee's salary (sensitive: not in the samples' mandates)."""
    return 100_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # runs in a thread
        pass


@contextmanager
def running_hr_server() -> Iterator[str]:
    """Serve the HR server on a free local port for the duration of the block; yields its MCP URL."""
    port = _free_port()
    server = _Server(
        uvicorn.Config(mcp.http_app(path="/mcp"), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the HR server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the sample HR MCP server.")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    mcp.run(transport="http", host="127.0.0.1", port=args.port, path="/mcp")
