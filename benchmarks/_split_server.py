"""The server process of the split-process benchmark (target 16): the HR sample under uvicorn.

    python -m benchmarks._split_server --port 8123 --mode signed --trust trust.json \\
        --audience http://127.0.0.1:8123/mcp --ledger server.jsonl [--phases phases.json]

``--mode unsigned`` serves the same FastMCP tools (``mcpclient_auth.demo.hr.build_hr_server``) without
the middleware. ``--phases`` times the middleware's phases (``benchmarks._phases``) and writes their
totals as JSON when the server stops (SIGINT/SIGTERM). Runs under stack A or stack B alike.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import signal
from pathlib import Path
from typing import Any

import uvicorn

from mcpclient_auth.demo.hr import build_hr_server, hr_app
from mcpclient_auth.keys import TrustStore

from ._phases import PhaseClock, install_server_phases


def _app(args: argparse.Namespace) -> Any:
    if args.mode == "unsigned":
        return build_hr_server().http_app(path="/mcp")
    trust = TrustStore.from_jwks(args.trust)
    return hr_app(trust, audience=args.audience, ledger=args.ledger)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("signed", "unsigned"), required=True)
    parser.add_argument("--trust", type=Path)
    parser.add_argument("--audience")
    parser.add_argument("--ledger", type=Path)
    parser.add_argument("--phases", type=Path)
    parser.add_argument("--cprofile", type=Path, help="write a cProfile of the whole server here at exit")
    args = parser.parse_args()
    logging.getLogger("mcp").setLevel(logging.CRITICAL)
    clock = PhaseClock() if args.phases is not None else None
    if clock is not None:
        install_server_phases(clock)
        # The driver resets the totals after its warm-up, so only the measured calls count.
        signal.signal(signal.SIGUSR1, lambda *_: clock.reset())
    profile = cProfile.Profile() if args.cprofile is not None else None
    if profile is not None:
        profile.enable()
        signal.signal(signal.SIGUSR2, lambda *_: profile.clear())  # after the driver's warm-up
    uvicorn.run(_app(args), host="127.0.0.1", port=args.port, log_level="error", lifespan="on")
    if profile is not None:
        profile.disable()
        profile.dump_stats(str(args.cprofile))
    if clock is not None:
        args.phases.write_text(json.dumps(clock.snapshot()), encoding="utf-8")


if __name__ == "__main__":
    main()
