"""What every `shipyard` command does with an expected failure: one `error:` line on stderr, an exit code."""

from __future__ import annotations

from typing import Any

import typer


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def exit_code_of(state: Any) -> int:
    """The exit code a failed Prefect run carries as {"exit_code": N} (1 when it has none).

    A final state keeps its data in a result record: `state.result()` reads it, `state.data` does not."""
    try:
        data = state.result(raise_on_failure=False)
    except Exception:  # a crashed run: nothing to read
        data = None
    return int(data.get("exit_code", 1)) if isinstance(data, dict) else 1
