"""The ``mcpclient-auth`` command line.

Exit codes: 0 success, 1 a check failed (bad signature, tampered ledger, ...), 2 usage errors.
Each command group lives in its own module; this one only assembles them.
"""

from __future__ import annotations

import typer

from . import demo, keys, ledger, tokens

app = typer.Typer(
    name="mcpclient-auth",
    help="Accountable MCP calls: keys, mandates, tokens, ledgers and a one-command demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(keys.app, name="keys")
app.add_typer(tokens.mandate_app, name="mandate")
app.add_typer(tokens.token_app, name="token")
app.add_typer(ledger.app, name="ledger")
app.command("demo")(demo.demo)


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
