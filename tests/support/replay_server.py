"""A FastMCP server behind ``McpAuthMiddleware`` for the replay-store and pre-auth-limit tests (issue 13).

In process (uvicorn in a thread, see :func:`tests.support.servers.serve`):

    app, calls = build_app(trust, audience=url, replay_store=store)
    calls.count                                  # how often the ``record`` tool ran

As a worker process of its own (what a deployment with several uvicorn workers runs):

    python -m tests.support.replay_server --port P --trust trust.json --audience URL \
        [--public-url ORIGIN] [--redis redis://...] [--max-pending-body-bytes N] [--body-timeout S]

``GET /_calls`` (not protected) answers ``{"calls": N, "pid": PID}``. :func:`signed_call` builds a
request exactly as ``AgentRun`` would send it (mandate, ECT, RFC 9421 signature), optionally with a
wrong ``exec_act`` (a request that passes the signature and fails a later check).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastmcp import FastMCP
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.httpsig import RequestSigner
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.replay import ReplayStore
from mcpclient_auth.server import McpAuthMiddleware, RequestLimits

ACCEPT = "application/json, text/event-stream"
CALLS_PATH = "/_calls"


@dataclass
class Calls:
    count: int = 0


def build_app(
    trust: TrustStore,
    *,
    audience: str,
    public_url: str | None = None,
    replay_store: ReplayStore | None = None,
    limits: RequestLimits | None = None,
) -> tuple[Any, Calls]:
    """The stateless JSON FastMCP app at ``/mcp`` with one counting tool, verified by the middleware."""
    calls = Calls()
    mcp = FastMCP("replay-test")

    @mcp.tool
    def record(note: str) -> str:
        """Count an execution (the side effect the tests look for)."""
        calls.count += 1
        return f"recorded {note}"

    @mcp.custom_route(CALLS_PATH, methods=["GET"])
    async def count(request: Request) -> JSONResponse:
        return JSONResponse({"calls": calls.count, "pid": os.getpid()})

    middleware = Middleware(
        McpAuthMiddleware,
        trust=trust,
        audience=audience,
        public_url=public_url,
        replay_store=replay_store,
        limits=limits,
    )
    app = mcp.http_app(path="/mcp", middleware=[middleware], json_response=True, stateless_http=True)
    return app, calls


def tool_body(note: str, request_id: int = 1) -> bytes:
    message = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "record", "arguments": {"note": note}},
    }
    return json.dumps(message).encode()


def signed_call(
    url: str,
    mandate: Mandate,
    agent: Identity,
    note: str,
    *,
    exec_act: str = "mcp.record",
    ect: ExecutionContextToken | None = None,
) -> httpx.Request:
    """A signed ``tools/call record`` to ``url`` (the audience); ``exec_act`` other than ``mcp.record``
    makes a request that fails ``exec_act_mismatch`` after the signature verified."""
    body = tool_body(note)
    if ect is None:
        ect = ExecutionContextToken.mint(
            agent,
            audience=[url],
            exec_act=exec_act,
            pred=[mandate.jti],
            wid=mandate.jti,
            inp_hash=sha256_b64url(body),
        )
    request = httpx.Request(
        "POST",
        url,
        content=body,
        headers={
            "content-type": "application/json",
            "accept": ACCEPT,
            "act-mandate": mandate.token,
            "execution-context": ect.token,
        },
    )
    RequestSigner(agent).sign(request)
    return request


def send_to(client: httpx.Client, request: httpx.Request, base: str) -> httpx.Response:
    """Send ``request`` byte-for-byte (same headers, same body) to another origin ``base``."""
    target = httpx.URL(base).join(request.url.raw_path.decode("ascii"))
    headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"host"]
    headers.append((b"host", request.headers["host"].encode("ascii")))
    return client.send(httpx.Request(request.method, target, headers=headers, content=request.content))


def rss_of(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --- worker processes ------------------------------------------------------------------------------------


@dataclass
class Worker:
    base: str
    process: subprocess.Popen[bytes]

    def calls(self) -> int:
        return int(httpx.get(self.base + CALLS_PATH, timeout=10).json()["calls"])

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def worker_process(
    port: int, trust_file: Path, *, audience: str, extra: list[str] | None = None, timeout: float = 30
) -> Iterator[Worker]:
    """``python -m tests.support.replay_server`` on ``port``; waits (bounded) until it answers."""
    command = [
        sys.executable,
        "-m",
        "tests.support.replay_server",
        "--port",
        str(port),
        "--trust",
        str(trust_file),
        "--audience",
        audience,
        *(extra or []),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"worker on port {port} exited: {error[-2000:]}")
            try:
                if httpx.get(base + CALLS_PATH, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker on port {port} did not start within {timeout} s")
            time.sleep(0.1)
        yield Worker(base, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - never hang the suite
            process.kill()
            process.wait(timeout=5)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m tests.support.replay_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--trust", type=Path, required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--public-url")
    parser.add_argument("--redis", help="share replay ids through this Redis (default: in memory)")
    parser.add_argument("--max-pending-body-bytes", type=int)
    parser.add_argument("--body-timeout", type=float)
    args = parser.parse_args(argv)
    store: ReplayStore | None = None
    if args.redis:
        from mcpclient_auth.replay_redis import RedisReplayStore

        store = RedisReplayStore(args.redis)
    options: dict[str, Any] = {}
    if args.max_pending_body_bytes:
        options["max_pending_body_bytes"] = args.max_pending_body_bytes
    if args.body_timeout:
        options["body_timeout"] = args.body_timeout
    app, _ = build_app(
        TrustStore.from_jwks(args.trust),
        audience=args.audience,
        public_url=args.public_url,
        replay_store=store,
        limits=RequestLimits(**options),
    )
    logging.getLogger("mcp").setLevel(logging.CRITICAL)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", backlog=1024)


if __name__ == "__main__":
    main()
