"""The sample HR MCP server: FastMCP behind the verifying middleware (``mcpclient_auth.server``).

    python samples/hr_server.py --jwks keys/jwks.json [--port 8000] [--ledger server-ledger.jsonl]
        [--ledger-key keys/server.jwk]     # signs the audit ledger's checkpoints

Every request to ``/mcp`` must carry a mandate for this server, signed by a key the trust file
registers as issuer for the mandate's ``iss``, an ECT and an RFC 9421 signature by the agent key the
mandate binds; ``get_office_locations`` is open to any such mandate, ``get_employee_salary`` only to
mandates whose ``cap`` holds ``mcp.get_employee_salary``. ``--jwks`` is a trust file as written by
``mcpclient-auth keys init`` (or given roles with ``mcpclient-auth keys trust``). The tools live in
``mcpclient_auth.demo.hr``; other samples start the server in-process with :func:`running_hr_server`:

    with running_hr_server(trust) as url:     # trust: a TrustStore with roles; "http://127.0.0.1:<port>/mcp"
        ...
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from mcpclient_auth.demo.hr import hr_app
from mcpclient_auth.demo.serving import free_port, running
from mcpclient_auth.errors import McpClientAuthError
from mcpclient_auth.keys import Identity, TrustStore


@contextmanager
def running_hr_server(trust: TrustStore, *, ledger: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """Serve the HR server on a free 127.0.0.1 port for the duration of the block; yields its MCP URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with running(hr_app(trust, audience=url, ledger=ledger), port):
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the sample HR MCP server on 127.0.0.1.")
    parser.add_argument("--jwks", type=Path, required=True, help="trust file: public keys and their roles")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--ledger", type=Path, default=None, help="the server's audit ledger (optional)")
    parser.add_argument(
        "--ledger-key", type=Path, default=None, help="key signing ledger checkpoints"
    )
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}/mcp"
    try:
        key = Identity.load(args.ledger_key) if args.ledger_key is not None else None
        app = hr_app(TrustStore.from_jwks(args.jwks), audience=url, ledger=args.ledger, ledger_key=key)
    except McpClientAuthError as exc:  # e.g. a JWKS without roles: say how to add them
        raise SystemExit(f"error: {exc.code}: {exc}") from None
    print(f"HR MCP server at {url}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
