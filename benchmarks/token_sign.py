"""µs per ES256 token: the SDK's signer against joserfc and PyJWT, for an ECT-sized claim set.

    python benchmarks/token_sign.py [--tokens 3000] [--rounds 5]

Rows: the raw ES256 signature alone (the floor), ``jose.encode`` (cached protected header, direct
``Identity.sign``), ``ExecutionContextToken.mint`` (claims built and checked per call, fresh jti),
joserfc ``jwt.encode`` and PyJWT ``jwt.encode`` on the same claims, and verification for reference.
Each row is the best of ``--rounds`` runs of ``--tokens`` tokens (best-of, to damp noise from other
processes); CPU-bound, single thread.
"""

from __future__ import annotations

import argparse
import time
import timeit
import uuid
from collections.abc import Callable

import jwt as pyjwt
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import ECKey

from mcpclient_auth import jose
from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.keys import Identity, TrustStore

AUD = "http://127.0.0.1:8000/mcp"
BODY = b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    agent = Identity.generate("ES256", name="agent-1")
    root = str(uuid.uuid4())
    inp_hash = sha256_b64url(BODY)
    iat = int(time.time())
    claims = {
        "iss": agent.name, "aud": [AUD], "iat": iat, "exp": iat + 600, "jti": str(uuid.uuid4()),
        "wid": root, "exec_act": "mcp.search", "pred": [root], "inp_hash": inp_hash,
    }  # fmt: skip
    header = {"alg": "ES256", "typ": jose.ECT_TYP, "kid": agent.kid}
    joserfc_key = ECKey.import_key(agent.private_jwk())
    signing_input = jose.encode(agent, jose.ECT_TYP, claims).rsplit(".", 1)[0].encode()
    token = jose.encode(agent, jose.ECT_TYP, claims)
    trust = TrustStore([agent])

    rows: list[tuple[str, Callable[[], object]]] = [
        ("ES256 signature only (floor)", lambda: agent.sign(signing_input)),
        ("mcpclient_auth jose.encode", lambda: jose.encode(agent, jose.ECT_TYP, claims)),
        (
            "mcpclient_auth ExecutionContextToken.mint",
            lambda: ExecutionContextToken.mint(
                agent, audience=AUD, exec_act="mcp.search", pred=[root], wid=root, inp_hash=inp_hash
            ),
        ),
        ("joserfc jwt.encode", lambda: joserfc_jwt.encode(header, claims, joserfc_key)),
        (
            "PyJWT jwt.encode",
            lambda: pyjwt.encode(claims, agent.private_key, algorithm="ES256", headers=header),
        ),
        ("mcpclient_auth jose.verify", lambda: jose.verify(token, trust, typs={jose.ECT_TYP})),
        ("mcpclient_auth ExecutionContextToken.verify", lambda: ExecutionContextToken.verify(token, trust)),
    ]
    print(f"{'':45s} µs/token (best of {args.rounds} x {args.tokens})")
    for name, call in rows:
        for _ in range(200):  # warm-up
            call()
        best = min(timeit.repeat(call, number=args.tokens, repeat=args.rounds)) / args.tokens
        print(f"{name:45s} {best * 1e6:8.1f}")


if __name__ == "__main__":
    main()
