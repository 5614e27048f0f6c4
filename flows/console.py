"""What every `shipyard` command does with an expected failure: one `error:` line on stderr, an exit code."""

from __future__ import annotations

import typer


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
