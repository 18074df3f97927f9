"""Cache-hit latency of ``TokenExchange.get_token`` (the per-call cost once a user's token is cached).

    python benchmarks/authz_cache_hit.py [--calls 100000]

Prints the median and p99 in microseconds of one ``await source.get_token(principal)`` that hits the
cache (default audience and scopes, and with explicit scopes). No network: the cache is pre-filled.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from mcpclient_auth.authz import AccessToken, TokenExchange
from mcpclient_auth.principal import Principal


async def _measure(calls: int, scopes: list[str] | None) -> list[float]:
    source = TokenExchange(
        "https://idp.example.com/token",
        client_id="agent",
        client_secret="s",
        audience="api://mcp",
        scopes=["mcp.read", "mcp.write"],
    )
    principal = Principal(id="alice", subject_token="user-token-" + "x" * 800)
    key = source._key(principal, None, scopes)
    source.cache.put(key, AccessToken("issued", expires_at=time.time() + 3600, scopes=frozenset(key.scopes)))
    assert (await source.get_token(principal, scopes=scopes)).token == "issued"
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        await source.get_token(principal, scopes=scopes)
        samples.append((clock() - start) / 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    for label, scopes in (("default scopes", None), ("explicit scopes", ["mcp.write", "mcp.read"])):
        samples = sorted(asyncio.run(_measure(args.calls, scopes)))
        p99 = samples[int(len(samples) * 0.99)]
        print(f"get_token cache hit ({label}): median {statistics.median(samples):.2f} us, p99 {p99:.2f} us")


if __name__ == "__main__":
    main()
