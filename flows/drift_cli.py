"""`shipyard drift`: a data file against the training reference of the production model (or a profile)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.console import fail

PARAMS = Path("params.yaml")
STATUS_STYLES = {"ok": "green", "warning": "yellow", "critical": "bold red"}


def drift(
    data: Annotated[str, typer.Option("--data", help="CSV, TSV, Parquet or SQLite file, or an image folder")],
    reference: Annotated[
        str | None, typer.Option("--reference", help="a profile.json; default: the production model's")
    ] = None,
    params: Annotated[Path, typer.Option(help="params file (drift thresholds, registry)")] = PARAMS,
) -> None:
    """Compare new data with the training data: PSI, KS, Jensen-Shannon, new categories, OOV.

    Exits 1 when a column drifted past a critical threshold (drift in params.yaml), 0 otherwise.
    """
    from tasks.config import load_params
    from tasks.drift import drift_lines, drift_of_file
    from tasks.errors import ShipyardError

    try:
        report = drift_of_file(data, load_params(params), reference)
    except ShipyardError as err:
        fail(str(err))
    print_report(report, drift_lines(report))
    if report["status"] == "critical":
        raise typer.Exit(1)


def print_report(report: dict[str, Any], lines: list[str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("column", "kind", "status", "PSI", "KS", "JS", "new-category", "OOV", title="drift")
    for name, column in report["columns"].items():
        style = STATUS_STYLES.get(column["status"], "")
        status = column["status"] + ("" if column.get("compared", True) else " (not compared)")
        table.add_row(
            escape(name),
            column["kind"],
            f"[{style}]{status}[/]" if style else status,
            *(_cell(column.get(key)) for key in ("psi", "ks", "js", "new_category_rate", "oov_rate")),
        )
    console = Console()
    console.print(table)
    for line in lines:
        console.print(f"  {line}", highlight=False, markup=False)
    extra = report["extra_columns"]
    if extra:
        console.print(f"  columns not in the reference: {', '.join(extra)}", highlight=False, markup=False)
    style = STATUS_STYLES.get(report["status"], "")
    console.print(
        f"[{style}]drift {report['status']}[/]: {report['rows']} rows of {escape(report['data'])} against "
        f"{escape(report['reference'])} ({report['reference_rows']} training rows)",
        highlight=False,
    )


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
