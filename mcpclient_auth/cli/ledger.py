"""``mcpclient-auth ledger ...`` (placeholder; owned by the ledger work)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Verify, show and draw ledgers.", no_args_is_help=True)
