"""``mcpclient-auth demo [--out DIR]``: the whole model on one machine, offline, in a few seconds.

Keys for a manager, an employee and an agent; the sample HR MCP server (with the verifying
middleware) on a free 127.0.0.1 port; the LangGraph agent (scripted model) asks one question for each
user; the server lists to each agent only the tools its mandate grants, so the employee's model is
never offered the salary tool; both runs are closed, the ledger is verified and its DAG drawn to
``dag.html``. With ``--out DIR`` the files stay in DIR, else in a temp directory that
is removed at the end. Exit 0 only when every ledger verifies.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["demo"]


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=120)


def _denied_tools(ledger: Path) -> dict[str, list[str]]:
    from ..ledger import Ledger

    denied: dict[str, list[str]] = {}
    for entry in Ledger.open(ledger).entries():
        if entry.kind == "denial":
            denied.setdefault(entry.run, []).append(str(entry.meta.get("tool") or entry.meta.get("method")))
    return denied


def demo(
    out: Path | None = typer.Option(
        None, "--out", help="Keep keys/, ledger.jsonl, server-ledger.jsonl and dag.html in this directory."
    ),
) -> None:
    """Run the end-to-end demo: two users, one agent, one MCP server, a verified ledger and its DAG."""
    try:
        from ..demo.runner import QUESTION, USERS, run_demo
    except ImportError as exc:  # the demo's stack is an extra
        typer.echo(f"demo: needs the demo extra (pip install 'mcpclient-auth[demo]'): {exc}", err=True)
        raise typer.Exit(2) from None

    console = _console()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mcpclient-auth-demo-") as scratch:
        directory = out if out is not None else Path(scratch)
        result = run_demo(directory)
        elapsed = time.monotonic() - started

        denied = _denied_tools(result.ledger)
        console.print(f"[bold]Question[/bold] (asked for each user): {QUESTION}")
        table = Table(
            "user",
            "mandate grants",
            "offered to the model",
            "tools called",
            "record",
            "verified",
            title="mcpclient-auth demo",
            header_style="bold",
        )
        for user in USERS:
            run = result.runs[user.name]
            summary = result.report.runs.get(run)
            if summary is None:  # pragma: no cover - the run wrote nothing: verification fails too
                continue
            table.add_row(
                f"{user.name} ({user.role})",
                "\n".join(c.removeprefix("mcp.") for c in user.capabilities),
                "\n".join(result.answers[user.name].offered) or "-",
                # a call refused locally (a ledger denial) is listed too, marked
                "\n".join([*sorted(summary.tools), *(f"{t} (refused)" for t in denied.get(run, []))]) or "-",
                f"{summary.status}, {'sealed' if summary.sealed else 'unsealed'}",
                "[green]yes[/green]" if summary.verified else "[red]NO[/red]",
            )
        console.print(table)
        for user in USERS:
            console.print(f"[bold]{user.name}[/bold]'s answer: {result.answers[user.name].answer}")
        report, server = result.report, result.server_report
        console.print(
            f"client ledger: {report.entries} entries, {report.tokens_verified} signed tokens verified: "
            + ("[green]OK[/green]" if report.ok else f"[red]FAILED[/red] {report.checks()}")
        )
        console.print(
            f"server ledger (the middleware's audit, unsealed): {server.entries} entries: "
            + ("[green]OK[/green]" if server.ok else f"[red]FAILED[/red] {server.checks()}")
        )
        if out is not None:
            console.print(
                f"keys:   {os.fspath(result.keys)}/ (trust file, public keys and who may sign what: "
                f"{os.fspath(result.jwks)})"
            )
            console.print(f"ledger: {os.fspath(result.ledger)}")
            console.print(f"graph:  {os.fspath(result.dag_html)}")
            console.print(
                f"check it yourself: mcpclient-auth ledger verify {os.fspath(result.ledger)} "
                f"--jwks {os.fspath(result.jwks)}"
            )
        else:
            console.print("(files removed; use --out DIR to keep keys, ledgers and dag.html)")
        console.print(f"demo ran in {elapsed:.1f} s")
    if not (report.ok and server.ok):
        raise typer.Exit(1)
