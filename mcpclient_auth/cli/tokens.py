"""``mcpclient-auth mandate ...`` and ``token ...`` (placeholder; owned by the tokens work)."""

from __future__ import annotations

import typer

mandate_app = typer.Typer(help="Issue ACT mandates.", no_args_is_help=True)
token_app = typer.Typer(help="Decode and verify compact tokens.", no_args_is_help=True)
