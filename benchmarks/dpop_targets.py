"""DPoP (RFC 9449, issue #15): what a proof costs, and what DPoP adds to the request hook.

    python -m benchmarks --only dpop

Two figures, each a ratio against a baseline measured in the same process, interleaved round by round:

* ``DPoP.proof`` (claims, JSON, one signature, base64url) against the crypto floor: one raw ES256
  signature over an input of the same size with ``cryptography`` and nothing else;
* ``RunHooks.on_request`` on a 1 KB ``tools/call`` with a DPoP-bound token (proof, ``DPoP`` header
  covered by the signature, ``dpop_jti`` in the ledger line) against the same hook with a bearer token
  from the same kind of source: DPoP's share of the per-call client cost.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from mcpclient_auth._hooks import RunHooks
from mcpclient_auth.authz import AccessToken, DPoP
from mcpclient_auth.keys import Identity
from mcpclient_auth.principal import Principal
from mcpclient_auth.run import AgentRun

from ._common import Config, Row
from .request_hook import HEADERS, URL, _body

__all__ = ["dpop_costs"]

_TOKEN = "at." + "x" * 600  # about the size of a real JWT access token


class _Source:
    """A token source with one cached token (the token endpoint is not what is timed)."""

    scopes: tuple[str, ...] = ()

    def __init__(self, dpop: DPoP | None) -> None:
        self.dpop = dpop
        self._token = AccessToken(_TOKEN, token_type="DPoP" if dpop is not None else "Bearer")

    async def get_token(
        self, principal: Principal, audience: str | None = None, scopes: Sequence[str] | None = None
    ) -> AccessToken:
        return self._token

    def invalidate(self, *args: Any, **kwargs: Any) -> None:
        return None


def _run(tmp: Path, name: str, agent: Identity, user: Identity, dpop: DPoP | None) -> AgentRun:
    return AgentRun(
        agent=agent,
        issuer=user,
        purpose="benchmark",
        capabilities=["mcp.search"],
        endpoint=URL,
        ledger=tmp / f"{name}.jsonl",
        durability="flush",
        token_source=_Source(dpop),
    )


def _median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000


def _proof_round(dpop: DPoP, calls: int) -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        start = clock()
        dpop.proof("POST", URL, access_token=_TOKEN)
        samples.append(clock() - start)
    return _median_us(samples)


def _floor_round(key: ec.EllipticCurvePrivateKey, data: bytes, calls: int) -> float:
    algorithm = ec.ECDSA(hashes.SHA256())
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        start = clock()
        key.sign(data, algorithm)
        samples.append(clock() - start)
    return _median_us(samples)


async def _hook_round(hooks: RunHooks, calls: int, offset: int) -> float:
    requests = [httpx.Request("POST", URL, content=_body(offset + i), headers=HEADERS) for i in range(calls)]
    clock = time.perf_counter_ns
    samples = []
    for request in requests:
        start = clock()
        await hooks.on_request(request)
        samples.append(clock() - start)
    return _median_us(samples)


def dpop_costs(config: Config) -> list[Row]:
    async def main() -> list[Row]:
        agent, user = Identity.generate("ES256", name="agent"), Identity.generate("ES256", name="alice")
        dpop = DPoP(agent)
        sample = dpop.proof("POST", URL, access_token=_TOKEN).token.rsplit(".", 1)[0].encode()
        floor_key = ec.generate_private_key(ec.SECP256R1())
        with tempfile.TemporaryDirectory() as tmp:
            bound = RunHooks(_run(Path(tmp), "dpop", agent, user, dpop))
            bearer = RunHooks(_run(Path(tmp), "bearer", agent, user, None))
            probe = httpx.Request("POST", URL, content=_body(0), headers=HEADERS)
            await bound.on_request(probe)
            assert probe.headers["authorization"].startswith("DPoP ") and "dpop" in probe.headers
            _proof_round(dpop, 100)  # warm-up, excluded
            _floor_round(floor_key, sample, 100)
            await _hook_round(bound, 100, 1)
            await _hook_round(bearer, 100, 1)
            proofs, floors, with_dpop, without = [], [], [], []
            for r in range(config.rounds):
                proofs.append(_proof_round(dpop, config.hook_calls))
                floors.append(_floor_round(floor_key, sample, config.hook_calls))
                with_dpop.append(await _hook_round(bound, config.hook_calls, (r + 1) * 100_000))
                without.append(await _hook_round(bearer, config.hook_calls, (r + 1) * 100_000))
            for hooks in (bound, bearer):
                assert hooks.run is not None
                hooks.run.close()
        extra = {"rounds": config.rounds, "calls_per_round": config.hook_calls}
        proof, floor = statistics.median(proofs), statistics.median(floors)
        hook_dpop, hook_bearer = statistics.median(with_dpop), statistics.median(without)
        return [
            Row("dpop", "DPoP proof vs one raw ES256 signature", proof, "µs/proof",
                "ES256 sign, same input size", floor, "<= 1.5", extra),
            Row("dpop", "request hook, DPoP-bound vs bearer token", hook_dpop, "µs/call",
                "same hook, bearer token", hook_bearer, "<= 1.6", extra),
        ]  # fmt: skip

    return asyncio.run(main())
