"""The tamper-evident JSONL ledger: format, writer, reader, verifier and renderers.

    with Ledger("ledger.jsonl") as ledger:              # writer (0600, O_APPEND, flock per line)
        ledger.append(run=run_id, kind="ect", jti=ect.jti, token=ect.token, meta={...})
        ledger.seal(run_id, agent)
    for entry in Ledger.open("ledger.jsonl").entries():  # reader
        ...
    report = verify_ledger("ledger.jsonl", trust)       # verifier: .ok, .exit_code, .failures, .runs
    Ledger("l.jsonl", key=agent, anchor=FileAnchor("anchors.jsonl"))   # signed recoveries, anchoring

See ``docs/internals.md`` ("Ledger") and DESIGN §5 and §6 for the format and the checks.
"""

from __future__ import annotations

from .anchor import Anchor, AnchorPoint, FileAnchor
from .format import GENESIS_PREV, KINDS, LedgerEntry, encode_line, line_hash, parse_line
from .reader import LedgerReader, LineProblem, RawLine, RunSummary, TornTail
from .verify import CHECKS, EXIT_UNSEALED_TAIL, TAIL_CHECKS, Failure, Recovery, Report, Tail, verify_ledger
from .writer import DURABILITY, Ledger, LedgerSection

__all__ = [
    "CHECKS",
    "DURABILITY",
    "EXIT_UNSEALED_TAIL",
    "GENESIS_PREV",
    "KINDS",
    "TAIL_CHECKS",
    "Anchor",
    "AnchorPoint",
    "Failure",
    "FileAnchor",
    "Ledger",
    "LedgerEntry",
    "LedgerReader",
    "LedgerSection",
    "LineProblem",
    "RawLine",
    "Recovery",
    "Report",
    "RunSummary",
    "Tail",
    "TornTail",
    "encode_line",
    "line_hash",
    "parse_line",
    "verify_ledger",
]
