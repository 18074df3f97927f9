"""``mcpclient-auth ledger ...``: verify, show, summarise and draw ledgers.

    mcpclient-auth ledger verify ledger.jsonl --jwks keys/jwks.json [--json] [--jobs 4] [--allow-unsealed]
        [--allow-unsealed-tail] [--anchor anchors.jsonl [--anchor-ledger NAME]]
    mcpclient-auth ledger show ledger.jsonl [--run R] [--kind ect] [--tool search]
    mcpclient-auth ledger show ledger.jsonl --tree [--expand-sessions]       # a tree per run
    mcpclient-auth ledger runs ledger.jsonl [--jwks keys/jwks.json]
    mcpclient-auth ledger graph ledger.jsonl [--run R] --format html -o dag.html [--jwks keys/jwks.json]

``graph`` and ``show --tree`` draw each MCP session's plumbing (initialize, tools/list ...) as one
node; ``--expand-sessions`` shows every session call.

Exit codes: 0 ok, 1 a check failed (``verify``, or ``runs --jwks``), 2 usage errors (missing file,
unreadable JWKS or anchor file, a JWKS without trust roles, unknown kind), 3 only the tail failed:
lines after the last seal or checkpoint (or a torn last line) that no signature covers
(``unsealed_tail`` / ``torn_tail``) — a crashed or still-running writer, or something appended by
hand; ``--allow-unsealed-tail`` accepts it. ``--run`` takes a run id or a unique-enough prefix of one.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..errors import KeyFormatError, LedgerError
from ..keys import TrustStore
from ..ledger.anchor import AnchorPoint, FileAnchor
from ..ledger.format import KINDS
from ..ledger.reader import LedgerReader
from ..ledger.render import (
    Row,
    TreeItem,
    build_graphs,
    run_line,
    run_trees,
    table_rows,
    to_dot,
    to_html,
    to_mermaid,
    verdicts_from,
)
from ..ledger.verify import Report, verify_ledger
from .keys import roles_hint

__all__ = ["app"]

app = typer.Typer(help="Verify, show and draw ledgers.", no_args_is_help=True)


class GraphFormat(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    html = "html"


_RENDERERS = {GraphFormat.mermaid: to_mermaid, GraphFormat.dot: to_dot}


def _usage_error(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _reader(path: Path) -> LedgerReader:
    if not path.is_file():
        raise _usage_error(f"no ledger file at {os.fspath(path)!r}")
    return LedgerReader(path)


def _trust(path: Path) -> TrustStore:
    try:
        trust = TrustStore.from_directory(path) if path.is_dir() else TrustStore.from_jwks(path)
    except KeyFormatError as exc:
        raise _usage_error(f"{exc.code}: {exc}") from None
    if not trust.has_roles:
        raise _usage_error(roles_hint(path))
    return trust


def _console() -> Console:
    console = Console()
    # Piped into a file or a grep: do not squeeze the table into 80 columns.
    return console if console.is_terminal else Console(width=200)


def _print_report(report: Report, path: Path) -> None:
    typer.echo(
        f"{os.fspath(path)}: {report.entries} entries, {len(report.runs)} runs, "
        f"{report.tokens_verified} tokens verified"
    )
    for summary in report.runs.values():
        typer.echo("  " + run_line(summary))
    for recovery in report.recoveries:
        signed = "signed" if recovery.signed else "unsigned"
        typer.echo(
            f"  recovered: line {recovery.line} ({recovery.torn_bytes} bytes, torn) was closed by "
            f"the {signed} recovery record at seq {recovery.seq}"
        )
    if report.torn_tail is not None:
        torn = report.torn_tail
        typer.echo(f"  torn tail: {torn.length} bytes at offset {torn.offset} (line {torn.number})")
    if report.tail is not None:
        tail = report.tail
        typer.echo(
            f"  unsealed tail: {tail.lines} line(s) from line {tail.first_line} after seq "
            f"{tail.after_seq}, {len(tail.runs)} run(s) open there"
        )
    if report.anchored:
        typer.echo(f"  anchored: {report.anchored} seal/checkpoint hash(es) found as anchored")
    for failure in report.failures:
        where = (
            f"seq {failure.seq}"
            if failure.seq is not None
            else (f"line {failure.line}" if failure.line is not None else "run")
        )
        subject = f" jti {failure.jti}" if failure.jti else ""
        run = f" run {failure.run[:8]}" if failure.run else ""
        typer.echo(f"  FAIL {failure.check} at {where}{run}{subject}: {failure.reason}")
    if report.ok:
        typer.echo("OK: every check holds")
    else:
        counts = ", ".join(f"{name} {count}" for name, count in sorted(report.checks().items()))
        typer.echo(f"FAILED: {len(report.failures)} failures ({counts})")


@app.command("verify")
def verify(
    files: list[Path] = typer.Argument(
        ..., help="The ledger (JSONL); several files (one per worker) are verified one after the other."
    ),
    jwks: Path = typer.Option(..., "--jwks", help="Trusted public keys: a JWKS file or a directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Processes for signature verification."),
    allow_unsealed: bool = typer.Option(
        False, "--allow-unsealed", help="Accept runs without their own seal (server ledgers, crashed runs)."
    ),
    allow_unsealed_tail: bool = typer.Option(
        False,
        "--allow-unsealed-tail",
        help="Accept lines after the last seal/checkpoint (a live or crashed writer).",
    ),
    anchor: Path | None = typer.Option(
        None, "--anchor", help="Anchor file (JSONL of {ledger, seq, hash, ts}): anchored lines must be there."
    ),
    anchor_ledger: str | None = typer.Option(
        None,
        "--anchor-ledger",
        help="The ledger's name in the anchor file (default: its only one).",
    ),
    skew: int = typer.Option(60, "--skew", min=0, help="Clock skew tolerance in seconds."),
) -> None:
    """Check every line, token and run; exit 0 only when everything holds (3: only the tail failed).

    With several files each is a ledger of its own (a worker's); the exit code is the worst one: 1 if
    any check failed anywhere, else 3 if only tails failed, else 0. ``--json`` then prints
    ``{"files": [{"file": ..., "report": ...}], "exit_code": ...}``.
    """
    if len(files) > 1 and anchor_ledger is not None:
        raise _usage_error("--anchor-ledger names one ledger: verify that file on its own")
    readers = [(file, _reader(file)) for file in files]  # every file exists before any work starts
    trust = _trust(jwks)
    reports: list[tuple[Path, Report]] = []
    for file, reader in readers:
        points = _anchor_points(anchor, anchor_ledger, file) if anchor is not None else None
        try:
            report = verify_ledger(
                reader,
                trust,
                skew=skew,
                jobs=jobs,
                allow_unsealed=allow_unsealed,
                allow_unsealed_tail=allow_unsealed_tail,
                anchor=points,
            )
        except LedgerError as exc:
            raise _usage_error(f"{os.fspath(file)}: {exc.code}: {exc}") from None
        reports.append((file, report))
    codes = {report.exit_code for _, report in reports}
    exit_code = 1 if 1 in codes else (3 if 3 in codes else 0)
    if as_json and len(reports) == 1:
        typer.echo(json.dumps(reports[0][1].to_dict(), indent=2))
    elif as_json:
        listed = [{"file": os.fspath(file), "report": report.to_dict()} for file, report in reports]
        typer.echo(json.dumps({"files": listed, "exit_code": exit_code}, indent=2))
    else:
        for file, report in reports:
            _print_report(report, file)
        if len(reports) > 1:
            failing = sum(1 for _, report in reports if not report.ok)
            typer.echo(f"{len(reports)} ledgers, {failing} failing")
    raise typer.Exit(exit_code)


def _anchor_points(path: Path, name: str | None, ledger: Path) -> list[AnchorPoint]:
    """The anchor file's points for this ledger: ``name``, else the file's only ledger, else the
    ledger's absolute path (the writer's default name)."""
    try:
        points = FileAnchor.read(path)
    except LedgerError as exc:
        raise _usage_error(f"{exc.code}: {exc}") from None
    names = {point.ledger for point in points}
    if name is None:
        name = next(iter(names)) if len(names) == 1 else os.path.abspath(ledger)
    chosen = [point for point in points if point.ledger == name]
    if not chosen:
        raise _usage_error(f"the anchor file has no points for ledger {name!r}; pass --anchor-ledger")
    return chosen


@app.command("show")
def show(
    file: Path = typer.Argument(..., help="The ledger (JSONL)."),
    run: str | None = typer.Option(None, "--run", help="Only this run (id or prefix)."),
    kind: str | None = typer.Option(None, "--kind", help=f"Only this kind: {', '.join(KINDS)}."),
    tool: str | None = typer.Option(None, "--tool", help="Only calls of this tool (and their responses)."),
    tree: bool = typer.Option(False, "--tree", help="A tree per run: mandate, sessions, calls, record."),
    expand_sessions: bool = typer.Option(
        False, "--expand-sessions", help="With --tree: every session call, not one line per session."
    ),
) -> None:
    """A table of entries (seq, time, run, kind, method/tool, status, duration, principal) or,
    with ``--tree``, a tree per run."""
    if kind is not None and kind not in KINDS:
        raise _usage_error(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    reader = _reader(file)
    if tree:
        if kind is not None or tool is not None:
            raise _usage_error("--tree shows whole runs: it does not combine with --kind or --tool")
        _print_trees(reader, run, expand_sessions)
        return
    table = Table(*Row.COLUMNS, header_style="bold")
    count = 0
    for row in table_rows(reader.entries(), run=run, kind=kind, tool=tool):
        table.add_row(*row.cells())
        count += 1
    console = _console()
    console.print(table)
    console.print(f"{count} {'entry' if count == 1 else 'entries'}")
    for problem in reader.problems:
        note = " (recovered)" if problem.recovered else ""
        typer.echo(f"warning: line {problem.number}: {problem.reason}{note}", err=True)


def _print_trees(reader: LedgerReader, run: str | None, expand_sessions: bool) -> None:
    graphs = build_graphs(reader.entries(), run=run, collapse=True)
    if run is not None and not graphs:
        raise _usage_error(f"no run matching {run!r}")
    console = _console()
    for item in run_trees(graphs, expand=expand_sessions):
        console.print(_rich_tree(item))
    if not graphs:
        console.print("no runs")
    for problem in reader.problems:
        note = " (recovered)" if problem.recovered else ""
        typer.echo(f"warning: line {problem.number}: {problem.reason}{note}", err=True)


_TREE_STYLES = {"run": "bold", "session": "dim", "denial": "red", "record": "magenta", "mandate": "blue"}


def _rich_tree(item: TreeItem, parent: Tree | None = None) -> Tree:
    label = Text(item.label, style=_TREE_STYLES.get(item.kind, ""))
    node = Tree(label) if parent is None else parent.add(label)
    for child in item.children:
        _rich_tree(child, node)
    return node


@app.command("runs")
def runs(
    file: Path = typer.Argument(..., help="The ledger (JSONL)."),
    jwks: Path | None = typer.Option(None, "--jwks", help="Verify the runs against these keys."),
    allow_unsealed: bool = typer.Option(False, "--allow-unsealed", help="Accept runs without a seal."),
    allow_unsealed_tail: bool = typer.Option(
        False, "--allow-unsealed-tail", help="Accept lines after the last seal/checkpoint."
    ),
) -> None:
    """One line per run: purpose, principal, calls, denials, status, sealed, verified."""
    reader = _reader(file)
    code = 0
    if jwks is not None:
        report = verify_ledger(
            reader, _trust(jwks), allow_unsealed=allow_unsealed, allow_unsealed_tail=allow_unsealed_tail
        )
        summaries = list(report.runs.values())
        code = report.exit_code
    else:
        summaries = reader.runs()  # verified stays "-": nothing was checked
    for summary in summaries:
        typer.echo(run_line(summary))
    if not summaries:
        typer.echo("no runs")
    raise typer.Exit(code)


@app.command("graph")
def graph(
    file: Path = typer.Argument(..., help="The ledger (JSONL)."),
    fmt: GraphFormat = typer.Option(..., "--format", help="mermaid, dot or html (self-contained SVG)."),
    run: str | None = typer.Option(None, "--run", help="Only this run (id or prefix)."),
    out: Path | None = typer.Option(None, "-o", "--output", help="Write here instead of standard output."),
    expand_sessions: bool = typer.Option(
        False, "--expand-sessions", help="Draw every session call, not one node per MCP session."
    ),
    jwks: Path | None = typer.Option(
        None, "--jwks", help="html: verify against these keys and show each run's verdict."
    ),
    allow_unsealed: bool = typer.Option(
        False, "--allow-unsealed", help="With --jwks: accept runs without a seal (a server's ledger)."
    ),
) -> None:
    """Draw the execution DAG of each run: mandate, tool calls, denials, record, and one node per
    MCP session for its plumbing (``--expand-sessions``: every session call)."""
    reader = _reader(file)
    graphs = build_graphs(reader.entries(), run=run, collapse=not expand_sessions)
    if run is not None and not graphs:
        raise _usage_error(f"no run matching {run!r}")
    if fmt is GraphFormat.html:
        verdicts = None
        if jwks is not None:
            try:
                # The picture's --allow-unsealed accepts unfinished runs wherever they are, the tail too.
                report = verify_ledger(
                    reader, _trust(jwks), allow_unsealed=allow_unsealed, allow_unsealed_tail=allow_unsealed
                )
                verdicts = verdicts_from(report)
            except LedgerError as exc:
                raise _usage_error(f"{exc.code}: {exc}") from None
        text = to_html(graphs, verdicts=verdicts)
    else:
        text = _RENDERERS[fmt](graphs)
    if out is None:
        typer.echo(text, nl=False)
        return
    # Run ids, principals and tool names are not for everyone: owner-only, like the ledger.
    # Never through a symlink planted at the output path (it could point at a file of ours).
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        raise _usage_error(f"cannot write {os.fspath(out)!r}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
    typer.echo(f"wrote {os.fspath(out)} ({len(graphs)} runs)")
