"""One agent worker process for the shared token cache tests (tests/e2e/test_shared_token_cache.py).

    python -m tests.support.token_worker --redis URL --token-url URL --key HEX [--calls 50] ...

Builds a :class:`TokenExchange` whose cache sits in front of a :class:`RedisTokenStore`, prints
``ready``, then obeys one command per stdin line:

- ``go``: ``--calls`` concurrent ``get_token`` calls for alice; prints one JSON line
  ``{"ok": true, "tokens": [...distinct tokens...], "expires_at": ..., "seconds": ...}`` or
  ``{"ok": false, "error": "<code>", "seconds": ...}``.
- ``quit``: exit.

The event loop lives for the whole process, so the worker's in-process layer persists across rounds
(as in a real agent worker).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from mcpclient_auth.authz import RedisTokenStore, TokenCache, TokenExchange
from mcpclient_auth.errors import McpClientAuthError
from mcpclient_auth.principal import Principal


def _emit(document: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


async def _round(source: TokenExchange, calls: int) -> dict[str, object]:
    principal = Principal(id="alice", subject_token="alice-sso-token")
    start = time.monotonic()
    try:
        tokens = await asyncio.gather(*(source.get_token(principal) for _ in range(calls)))
    except McpClientAuthError as exc:
        return {"ok": False, "error": exc.code, "seconds": time.monotonic() - start}
    return {
        "ok": True,
        "tokens": sorted({t.token for t in tokens}),
        "expires_at": tokens[0].expires_at,
        "seconds": time.monotonic() - start,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--token-url", required=True)
    parser.add_argument("--key", required=True, help="hex of the 32-byte encryption key")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--skew", type=float, default=30.0)
    parser.add_argument("--lease-ttl", type=float, default=5.0)
    parser.add_argument("--wait-timeout", type=float, default=30.0)
    args = parser.parse_args()
    store = RedisTokenStore(
        args.redis,
        encryption_key=bytes.fromhex(args.key),
        lease_ttl=args.lease_ttl,
        wait_timeout=args.wait_timeout,
    )
    source = TokenExchange(
        args.token_url,
        client_id="agent",
        client_secret="s3cret",
        audience="api://mcp",
        scopes=["mcp.read"],
        cache=TokenCache(store=store, skew=args.skew),
    )
    loop = asyncio.get_running_loop()
    _emit({"ready": True})
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command == "go":
            _emit(await _round(source, args.calls))
        elif command in ("quit", ""):  # "" = stdin closed: the test is gone
            break
    await source.aclose()
    await store.aclose()


if __name__ == "__main__":
    asyncio.run(main())
