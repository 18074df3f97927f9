"""Target 1 (request-hook cost) and the hook half of target 6 (cost growth over a run).

    python -m benchmarks --only 1 6

Target 1 compares, in the same process and interleaved round by round:

* the SDK's ``RunHooks.on_request`` on a 1 KB ``tools/call`` (ECT mint, Content-Digest, RFC 9421
  signature, ``ect`` ledger line in ``flush`` mode);
* the crypto floor: two raw ES256 signatures (an ECT-sized JWS input and a signature-base-sized input)
  and the SHA-256 of the body, with ``cryptography`` and nothing else;
* the obvious alternative: PyJWT for the ECT, ``http_message_signatures`` for the signature (it adds
  Content-Digest itself) and a hand-written hash-chained JSONL line, flushed.

Target 6 (hook half) times each call of one long run and compares the median of the first 100 calls
with the median of the last 100 (responses are delivered, as in real use, so nothing stays in flight).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from mcpclient_auth._hooks import RunHooks
from mcpclient_auth.keys import Identity
from mcpclient_auth.run import AgentRun

from ._common import Config, Row
from .request_hook import HEADERS, URL, _body

__all__ = ["hook_growth", "request_hook_cost"]

_COVERED = (
    "@method", "@target-uri", "content-type", "content-digest", "act-mandate", "execution-context",
    "mcp-session-id", "mcp-protocol-version",
)  # fmt: skip


def _run(tmp: Path, name: str) -> AgentRun:
    user, agent = Identity.generate("ES256", name="alice"), Identity.generate("ES256", name="agent")
    return AgentRun(
        agent=agent,
        issuer=user,
        purpose="benchmark",
        capabilities=["mcp.search"],
        endpoint=URL,
        ledger=tmp / f"{name}.jsonl",
        durability="flush",
    )


async def _hook_round(hooks: RunHooks, calls: int, offset: int) -> float:
    """Median µs of ``on_request`` over ``calls`` fresh requests (built before timing)."""
    requests = [httpx.Request("POST", URL, content=_body(offset + i), headers=HEADERS) for i in range(calls)]
    samples = []
    clock = time.perf_counter_ns
    for request in requests:
        start = clock()
        await hooks.on_request(request)
        samples.append(clock() - start)
    return statistics.median(samples) / 1000


class _Floor:
    """Two raw ES256 signatures + SHA-256 of the body: the work no implementation can skip."""

    def __init__(self, jws_input: bytes, base: bytes) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.algorithm = ec.ECDSA(hashes.SHA256())
        self.jws_input, self.base = jws_input, base

    def once(self, body: bytes) -> None:
        hashlib.sha256(body).digest()
        self.key.sign(self.jws_input, self.algorithm)
        self.key.sign(self.base, self.algorithm)

    def round(self, calls: int, body: bytes) -> float:
        samples = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            start = clock()
            self.once(body)
            samples.append(clock() - start)
        return statistics.median(samples) / 1000


class _Composition:
    """What a user would write by hand: PyJWT ECT + http-message-signatures + a hash-chained JSONL line."""

    def __init__(self, agent: Identity, mandate: str, ledger: Path) -> None:
        self.agent, self.mandate = agent, mandate
        self.header = {"typ": "exec+jwt", "kid": agent.kid}
        self.signer = HTTPMessageSigner(
            signature_algorithm=algorithms.ECDSA_P256_SHA256,
            key_resolver=MappingKeyResolver(public_keys={}, private_keys={agent.kid: agent.private_key}),
        )
        self.file = open(ledger, "ab")  # noqa: SIM115 - closed in close()
        self.prev = "0" * 64
        self.seq = 0

    def close(self) -> None:
        self.file.close()

    def once(self, request: httpx.Request, body: bytes) -> None:
        now = int(time.time())
        jti = str(uuid.uuid4())
        claims = {
            "iss": "agent", "aud": [URL], "iat": now, "exp": now + 600, "jti": jti, "wid": "run",
            "exec_act": "mcp.search", "pred": ["run"],
            "inp_hash": pyjwt.utils.base64url_encode(hashlib.sha256(body).digest()).decode(),
        }  # fmt: skip
        ect = pyjwt.encode(claims, self.agent.private_key, algorithm="ES256", headers=self.header)
        request.headers["ACT-Mandate"] = self.mandate
        request.headers["Execution-Context"] = ect
        created = datetime.datetime.now(datetime.UTC)
        self.signer.sign(
            request,
            key_id=self.agent.kid,
            created=created,
            expires=created + datetime.timedelta(seconds=60),
            nonce=os.urandom(16).hex(),
            label="sig1",
            tag="mcp",
            include_alg=False,
            covered_component_ids=_COVERED,
            body=body,
        )
        self.seq += 1
        line = json.dumps(
            {"v": 1, "seq": self.seq, "ts": time.time(), "run": "run", "kind": "ect", "jti": jti,
             "token": ect, "meta": {"method": "tools/call", "tool": "search", "url": URL}, "prev": self.prev},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        self.prev = hashlib.sha256(line).hexdigest()
        self.file.write(line + b"\n")
        self.file.flush()

    def round(self, calls: int, offset: int) -> float:
        requests = [
            httpx.Request("POST", URL, content=_body(offset + i), headers=HEADERS) for i in range(calls)
        ]
        samples = []
        clock = time.perf_counter_ns
        for request in requests:
            body = request.content
            start = clock()
            self.once(request, body)
            samples.append(clock() - start)
        return statistics.median(samples) / 1000


def request_hook_cost(config: Config) -> list[Row]:
    """Target 1: medians (over rounds) of per-call medians; hook, floor and composition interleaved."""

    async def main() -> list[Row]:
        with tempfile.TemporaryDirectory() as tmp:
            run = _run(Path(tmp), "hook")
            hooks = RunHooks(run)
            probe = httpx.Request("POST", URL, content=_body(0), headers=HEADERS)
            await hooks.on_request(probe)
            jws_input = probe.headers["execution-context"].rsplit(".", 1)[0].encode()
            base = run.signer.sign(probe, body=probe.content).base
            floor = _Floor(jws_input, base)
            composition = _Composition(run.agent, run.mandate.token, Path(tmp) / "glue.jsonl")
            body = probe.content
            # warm-up, excluded
            await _hook_round(hooks, 100, 1)
            floor.round(100, body)
            composition.round(50, 1)
            ours, floors, glue = [], [], []
            for r in range(config.rounds):
                ours.append(await _hook_round(hooks, config.hook_calls, (r + 1) * 100_000))
                floors.append(floor.round(config.hook_calls, body))
                glue.append(composition.round(max(20, config.hook_calls // 4), r))
            composition.close()
            run.close()
        hook, fl, gl = statistics.median(ours), statistics.median(floors), statistics.median(glue)
        extra = {"rounds": config.rounds, "calls_per_round": config.hook_calls, "body_bytes": len(body)}
        return [
            Row("1", "request hook vs crypto floor", hook, "µs/call", "2x ES256 sign + SHA-256", fl, "<= 2.5", extra),
            Row("1", "request hook vs PyJWT + http-message-signatures", hook, "µs/call",
                "hand-written composition", gl, "<= 1.0", extra),
        ]  # fmt: skip

    return asyncio.run(main())


def _response(request: httpx.Request) -> httpx.Response:
    message = json.loads(request.content)
    result = {"content": [{"type": "text", "text": "ok"}], "isError": False}
    payload = json.dumps({"jsonrpc": "2.0", "id": message.get("id"), "result": result}).encode()
    # A stream, not content: the hooks hash and ledger the response as it is read, as on a network.
    return httpx.Response(200, headers={"content-type": "application/json"}, stream=httpx.ByteStream(payload))


async def drive_calls(run: AgentRun, calls: int, *, on_call: Any = None) -> list[float]:
    """``calls`` tools/call round trips through ``run``'s own httpx client and an in-process transport
    (no network: the transport answers at once, so only the client-side cost is timed). Returns the
    µs of each call; ``on_call(i)`` runs untimed after call ``i``."""
    samples: list[float] = []
    clock = time.perf_counter_ns
    transport = httpx.MockTransport(_response)  # stands in for the network only
    async with run.httpx_client_factory()(transport=transport, headers=HEADERS) as client:
        for i in range(calls):
            body = _body(i)
            start = clock()
            response = await client.post(URL, content=body)
            await response.aread()
            samples.append((clock() - start) / 1000)
            if on_call is not None:
                on_call(i)
    return samples


def hook_growth(config: Config) -> list[Row]:
    """Target 6 (hook): per-call cost of calls 1-100 vs the last 100 of a ``growth_calls`` run."""
    window = 100

    async def main() -> list[float]:
        with tempfile.TemporaryDirectory() as tmp:
            run = _run(Path(tmp), "growth")
            async with run:
                return await drive_calls(run, config.growth_calls + window)

    samples = asyncio.run(main())
    # the first `window` calls are warm-up; "100 calls in" is the next window
    early = statistics.median(samples[window : 2 * window])
    late = statistics.median(samples[-window:])
    extra = {"calls": config.growth_calls, "window": window, "transport": "in-process (httpx.MockTransport)"}
    return [
        Row("6", f"call cost at call {config.growth_calls:,} vs at call 100", late, "µs/call",
            "call cost at call 100", early, "<= 1.1", extra),
    ]  # fmt: skip
