"""``mcpclient-auth demo`` (placeholder; owned by the server-demo work)."""

from __future__ import annotations

import typer


def demo() -> None:
    """Run the end-to-end demo (not built yet)."""
    typer.echo("demo: not built yet", err=True)
    raise typer.Exit(2)
