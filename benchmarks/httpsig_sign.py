"""µs per RFC 9421 signature of one MCP POST: the SDK's RequestSigner against pyauth's HTTPMessageSigner.

    python benchmarks/httpsig_sign.py [--requests 3000] [--rounds 5]

The request: a 1 KB JSON-RPC body with Content-Type, Authorization, ACT-Mandate, Execution-Context,
Mcp-Session-Id and Mcp-Protocol-Version headers (an ``httpx.Request``). Rows: one raw ES256 signature
over a signature-base-sized input (the floor), SHA-256 of the body, ``RequestSigner.sign`` (profile
``mcp``: Content-Digest + base + ES256 + headers), ``HTTPMessageSigner.sign`` over the same components
(it cannot add ``wimse-aud``, so it does slightly less), and ``RequestVerifier.verify`` for reference.
A row with the ECDSA step stubbed out shows the signer's own Python work. Note that ES256 in a tight
loop (the floor row) runs with warm CPU caches; interleaved with other work it costs more, so the
signer's total exceeds floor + own work.
Each row is the best of ``--rounds`` runs (best-of damps noise from other processes); single thread.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import timeit
from collections.abc import Callable

import httpx
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from mcpclient_auth.httpsig import MCP_TAG, RequestSigner, RequestVerifier
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.replay import MemoryReplayStore

URL = "http://127.0.0.1:8000/mcp"
COVERED = (
    "@method", "@target-uri", "content-type", "content-digest", "authorization", "act-mandate",
    "execution-context", "mcp-session-id", "mcp-protocol-version",
)  # fmt: skip


class _NoCrypto(Identity):
    """The same identity with the ECDSA step stubbed out: what is left is the signer's own work."""

    __slots__ = ()

    def sign(self, data: bytes) -> bytes:
        return bytes(64)


def _request() -> tuple[httpx.Request, bytes]:
    arguments = {"query": "x" * 900, "limit": 10}
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "search", "arguments": arguments},
        },
        separators=(",", ":"),
    ).encode()
    body += b" " * max(0, 1024 - len(body))
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Authorization": "Bearer " + "u" * 900,
        "ACT-Mandate": "eyJ" + "m" * 600,
        "Execution-Context": "eyJ" + "e" * 450,
        "Mcp-Session-Id": "5f1c9a3e2b7d4c0e8a6f1b2c3d4e5f60",
        "Mcp-Protocol-Version": "2025-11-25",
    }
    return httpx.Request("POST", URL, headers=headers, content=body), body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    agent = Identity.generate("ES256", name="agent-1")
    ours = RequestSigner(agent)
    request, body = _request()
    assert len(body) == 1024
    base_sized = ours.sign(request).base

    theirs = HTTPMessageSigner(
        signature_algorithm=algorithms.ECDSA_P256_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={agent.kid: agent.private_key}),
    )
    pyauth_request, _ = _request()

    def pyauth_sign() -> None:
        # The library refuses to replace a Content-Digest unless told to; start each run without one.
        del pyauth_request.headers["Content-Digest"]
        now = datetime.datetime.now(datetime.UTC)
        theirs.sign(
            pyauth_request,
            key_id=agent.kid,
            created=now,
            expires=now + datetime.timedelta(seconds=60),
            nonce="0123456789abcdefghijkl",
            label="sig1",
            tag=MCP_TAG,
            include_alg=False,
            covered_component_ids=COVERED,
            body=body,
        )

    pyauth_request.headers["Content-Digest"] = "placeholder"
    stubbed = RequestSigner(_NoCrypto(agent.private_key, name="agent-1"))
    stubbed_request, _ = _request()
    verifier = RequestVerifier(TrustStore([agent]), nonce_cache=MemoryReplayStore())
    verify_request, _ = _request()

    def sign_and_verify() -> None:
        ours.sign(verify_request)
        verifier.verify(verify_request, body=body)

    rows: list[tuple[str, Callable[[], object]]] = [
        (f"ES256 signature only, {len(base_sized)}-byte base (floor)", lambda: agent.sign(base_sized)),
        ("SHA-256 of the 1 KB body", lambda: hashlib.sha256(body).digest()),
        ("mcpclient_auth RequestSigner.sign", lambda: ours.sign(request, body=body)),
        (
            "  of which the signer's own work (ES256 stubbed out)",
            lambda: stubbed.sign(stubbed_request, body=body),
        ),
        ("http_message_signatures HTTPMessageSigner.sign", pyauth_sign),
        ("mcpclient_auth sign + RequestVerifier.verify", sign_and_verify),
    ]
    print(f"{'operation':<58} {'µs/op':>8}")
    for label, fn in rows:
        best = min(timeit.repeat(fn, number=args.requests, repeat=args.rounds)) / args.requests
        print(f"{label:<58} {best * 1e6:8.1f}")


if __name__ == "__main__":
    main()
