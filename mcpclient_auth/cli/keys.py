"""``mcpclient-auth keys ...`` (placeholder; owned by the tokens work)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Create and inspect signing keys.", no_args_is_help=True)
