"""Ledger benchmark: append rate per durability mode, and verification throughput on a large ledger
compared with the raw ES256 verification rate measured in the same run.

    python -m benchmarks.ledger_bench                   # defaults: about a minute
    python -m benchmarks.ledger_bench --entries 50000 --append 100000 --fsync 2000 --jobs 1 2

Append: one realistic ``ect`` line (~750 bytes: a real ES256 ECT and request meta) per call, one
process, one thread. Verify: a ledger of realistic runs (mandate, 3 session calls, 8 tool calls in
two fan-outs of 4, a denial, responses, record, seal), fully verified by ``verify_ledger``. The raw
rate is ``cryptography``'s ECDSA P-256 verify of precomputed DER signatures over token-sized inputs —
the floor no verifier can beat per core. Ratios: tokens verified per second by ``verify_ledger``
divided by that raw rate (1.0 = as fast as bare signature checks; >1 is possible with ``--jobs``),
and entries per second divided by the same rate (about half the entries carry no token).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import ExecutionRecord, Mandate
from mcpclient_auth.dag import Frontier
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, verify_ledger

AUDIENCE = "http://127.0.0.1:8000/mcp"
SESSION = ("initialize", "notifications/initialized", "tools/list")
TOOLS = ("search", "lookup", "fetch", "rank", "summarize", "translate", "cite", "answer")


def _ect(agent: Identity, run: str, action: str, pred: list[str]) -> ExecutionContextToken:
    return ExecutionContextToken.mint(
        agent, audience=AUDIENCE, exec_act=action, pred=pred, wid=run, inp_hash=sha256_b64url(action.encode())
    )


#: The principals benchmark runs act for; the user key is registered as their issuer.
BENCH_PRINCIPALS = [f"user{n}" for n in range(50)]


def write_run(ledger: Ledger, user: Identity, agent: Identity, principal: str) -> int:
    """One realistic run; returns the number of entries written (25)."""
    mandate = Mandate.issue(
        user,
        agent=agent,
        audience=AUDIENCE,
        purpose="Benchmark run",
        capabilities=[f"mcp.{t}" for t in TOOLS],
        iss=principal,  # the user key speaks for the benchmark's principals (see BENCH_PRINCIPALS)
    )
    run = mandate.jti
    ledger.append(run=run, kind="mandate", jti=run, token=mandate.token, meta={"principal": principal})
    written = 1
    for call_id, method in enumerate(SESSION):
        ect = _ect(agent, run, "mcp.rpc." + method.replace("/", "."), [run])
        ledger.append(
            run=run,
            kind="ect",
            jti=ect.jti,
            token=ect.token,
            meta={
                "method": method,
                "id": call_id,
                "url": AUDIENCE,
                "action": ect.exec_act,
                "principal": principal,
            },
        )
        ledger.append(
            run=run,
            kind="response",
            jti=ect.jti,
            meta={"status": 200, "out_hash": ect.inp_hash, "duration_ms": 2.5, "id": call_id, "bytes": 90},
        )
        written += 2
    frontier = Frontier(run)
    for batch in (TOOLS[:4], TOOLS[4:]):  # two fan-outs of four; the second joins the first
        started = []
        for tool in batch:
            ect = _ect(agent, run, f"mcp.{tool}", frontier.begin())
            ledger.append(
                run=run,
                kind="ect",
                jti=ect.jti,
                token=ect.token,
                meta={
                    "method": "tools/call",
                    "tool": tool,
                    "id": 9,
                    "url": AUDIENCE,
                    "action": ect.exec_act,
                    "principal": principal,
                },
            )
            started.append(ect)
        for ect in started:
            ledger.append(
                run=run,
                kind="response",
                jti=ect.jti,
                meta={"status": 200, "out_hash": ect.inp_hash, "duration_ms": 12.0, "id": 9, "bytes": 400},
            )
            frontier.complete(ect.jti, ect.pred)
        written += 2 * len(batch)
    ledger.append(
        run=run,
        kind="denial",
        meta={
            "method": "tools/call",
            "tool": "delete_all",
            "id": 20,
            "action": "mcp.delete_all",
            "code": "mandate_denied",
            "principal": principal,
        },
    )
    record = ExecutionRecord.issue(
        agent,
        mandate,
        exec_act="mcp.answer",
        pred=frontier.current(),
        out_hash=sha256_b64url(b"answer"),
        status="completed",
    )
    ledger.append(run=run, kind="record", jti=run, token=record.token, meta={"status": "completed"})
    ledger.seal(run, agent)
    return written + 3


def bench_append(directory: Path, mode: str, count: int, agent: Identity) -> float:
    path = directory / f"append-{mode}.jsonl"
    ect = _ect(agent, "run", "mcp.search", ["run"])
    meta = {
        "method": "tools/call",
        "tool": "search",
        "id": 3,
        "url": AUDIENCE,
        "action": "mcp.search",
        "principal": "alice",
    }
    with Ledger(path, durability=mode) as ledger:
        start = time.perf_counter()
        for _ in range(count):
            ledger.append(run="run", kind="ect", jti=ect.jti, token=ect.token, meta=meta)
        elapsed = time.perf_counter() - start
    path.unlink()
    return count / elapsed


def raw_es256_rate(count: int, *, clock: Callable[[], float] = time.perf_counter) -> float:
    """ECDSA P-256 / SHA-256 verifications per second with ``cryptography``, nothing else
    (``clock=time.process_time``: per second of this process's CPU, i.e. per core)."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    algorithm = ec.ECDSA(hashes.SHA256())
    samples = []
    for index in range(64):
        data = os.urandom(400) + index.to_bytes(2, "big")  # a token's signing input is ~400-600 bytes
        samples.append((data, key.sign(data, algorithm)))
    start = clock()
    for index in range(count):
        data, signature = samples[index % 64]
        public.verify(signature, data, algorithm)
    return count / (clock() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=50_000, help="size of the ledger to verify")
    parser.add_argument("--append", type=int, default=100_000, help="lines appended in none/flush modes")
    parser.add_argument("--fsync", type=int, default=2_000, help="lines appended in fsync mode")
    parser.add_argument("--raw", type=int, default=20_000, help="raw ES256 verifications to time")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="verify with these --jobs values")
    args = parser.parse_args()

    user, agent = Identity.generate("ES256", name="user"), Identity.generate("ES256", name="agent")
    trust = TrustStore()  # roles: the user key issues mandates for its name, the agent key acts
    trust.add_issuer(user, principals=BENCH_PRINCIPALS)
    trust.add_agent(agent)
    print(f"ledger benchmark (pid {os.getpid()}, {os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        print("\nappend (one process, one thread, ~750-byte ECT lines)")
        for mode, count in (("none", args.append), ("flush", args.append), ("fsync", args.fsync)):
            rate = bench_append(directory, mode, count, agent)
            print(f"  {mode:<6} {rate:>10,.0f} lines/s   ({count:,} lines)")

        path = directory / "ledger.jsonl"
        start = time.perf_counter()
        entries = runs = 0
        with Ledger(path, durability="none") as ledger:
            while entries < args.entries:
                entries += write_run(ledger, user, agent, principal=f"user{runs % 50}")
                runs += 1
        print(
            f"\nbuilt a {entries:,}-entry ledger ({runs:,} runs, {path.stat().st_size / 1e6:.1f} MB) "
            f"in {time.perf_counter() - start:.1f} s"
        )

        raw = raw_es256_rate(args.raw)
        print(f"raw ES256 verify (cryptography): {raw:,.0f} signatures/s per core")

        print("\nverify_ledger")
        for jobs in args.jobs:
            start = time.perf_counter()
            report = verify_ledger(path, trust, jobs=jobs)
            elapsed = time.perf_counter() - start
            assert report.ok, report.failures[:3]
            tokens = report.tokens_verified / elapsed
            entries_rate = report.entries / elapsed
            print(
                f"  --jobs {jobs}: {elapsed:6.2f} s  {entries_rate:>9,.0f} entries/s "
                f"(x{entries_rate / raw:.2f} raw)  {tokens:>8,.0f} tokens/s (x{tokens / raw:.2f} raw)  "
                f"[{report.tokens_verified:,} tokens]"
            )


if __name__ == "__main__":
    main()
