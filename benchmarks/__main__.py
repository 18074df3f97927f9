"""``python -m benchmarks [--quick] [--only N ...] [--output PATH]``: run the suite, print a table,
write ``results.json`` (machine description, config, one record per figure)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ._common import Config, Row, machine

_DEFAULT_OUTPUT = Path(__file__).with_name("results.json")


def _targets() -> list[tuple[str, Callable[[Config], list[Row]]]]:
    from .audit_targets import ledger_audit
    from .dpop_targets import dpop_costs
    from .e2e_targets import loopback_throughput
    from .hook_targets import hook_growth, request_hook_cost
    from .ledger_targets import ledger_append, ledger_verify
    from .memory_targets import memory
    from .policy_targets import policy_costs
    from .replay_targets import replay_store_cost
    from .session_targets import held_sessions
    from .split_targets import split_process
    from .telemetry_targets import telemetry_cost
    from .token_targets import token_cache

    return [
        ("5", memory),  # first: RSS growth is only meaningful before other targets grow the heap
        ("1", request_hook_cost),
        ("2", loopback_throughput),
        ("3", token_cache),
        ("4", ledger_append),
        ("4", ledger_verify),  # also reports the verify half of target 6
        ("6", hook_growth),
        ("7", replay_store_cost),
        ("8", policy_costs),
        ("9", held_sessions),
        ("13", ledger_audit),
        ("16", split_process),
        ("17", telemetry_cost),
        ("dpop", dpop_costs),  # issue #15: DPoP proof cost and its share of the request hook
    ]


def _verdict(row: Row) -> str:
    ratio = {True: "met", False: "MISSED", None: "-"}[row.ok]
    return f"{ratio}; {row.absolute}" if row.absolute else ratio


def format_table(rows: list[Row]) -> str:
    head = f"{'#':<2} {'figure':<58} {'value':>12} {'baseline':>12} {'ratio':>8} {'goal':>7}  verdict"
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row.target:<2} {row.name[:58]:<58} {row.value:>12,.1f} {row.baseline:>12,.1f} "
            f"{row.ratio:>8.3f} {row.goal or '':>7}  {_verdict(row)}  [{row.unit}; baseline: {row.baseline_name}]"
        )
    return "\n".join(lines)


def format_markdown(rows: list[Row], result: dict[str, object]) -> str:
    """The results as a Markdown table (what docs/performance.md embeds)."""
    machine_info = result["machine"]
    assert isinstance(machine_info, dict)
    lines = [
        f"Run {result['started']} ({'quick' if result['quick'] else 'full'} mode, {result['seconds']} s): "
        f"{machine_info['nproc']} CPUs, {machine_info['cpu_model']}, Python {machine_info['python']} "
        f"({machine_info['platform']}).",
        "",
        "| # | figure | value | baseline (same run) | ratio | goal | verdict |",
        "|---|---|---:|---|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.target} | {row.name} | {row.value:,.1f} {row.unit} | {row.baseline_name}: "
            f"{row.baseline:,.1f} | {row.ratio:.3f} | {row.goal or '-'} | {_verdict(row)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a sanity run in well under a minute"
    )
    parser.add_argument("--only", nargs="+", metavar="N", help="run only these targets (1-9, 13, 16, 17, dpop)")
    parser.add_argument("--output", type=Path, default=_DEFAULT_OUTPUT, help="where to write results.json")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    parser.add_argument(
        "--render", type=Path, metavar="RESULTS_JSON", help="run nothing: print (and --markdown) a saved run"
    )
    args = parser.parse_args(argv)
    # mcp logs a harmless ClosedResourceError when a session's GET stream is torn down.
    logging.getLogger("mcp").setLevel(logging.CRITICAL)
    if args.render is not None:
        saved = json.loads(args.render.read_text(encoding="utf-8"))
        saved_rows = [Row.from_json(item) for item in saved["results"]]
        print(format_table(saved_rows))
        if args.markdown is not None:
            args.markdown.write_text(format_markdown(saved_rows, saved), encoding="utf-8")
        return 0
    config = Config.quick_config() if args.quick else Config()
    rows: list[Row] = []
    started = time.time()
    for target, fn in _targets():
        wanted = (
            args.only is None or target in args.only or (fn.__name__ == "ledger_verify" and "6" in args.only)
        )
        if not wanted:
            continue
        print(f"running {fn.__name__} ...", file=sys.stderr, flush=True)
        rows.extend(fn(config))
    print(format_table(rows))
    result = {
        "suite": "mcpclient-auth benchmarks",
        "quick": config.quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": machine(),
        "config": dataclasses.asdict(config),
        "results": [row.to_json() for row in rows],
    }
    args.output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}", file=sys.stderr)
    if args.markdown is not None:
        args.markdown.write_text(format_markdown(rows, result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
