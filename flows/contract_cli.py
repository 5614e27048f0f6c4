"""`shipyard contract`: infer a data contract from a reference file, check files against it.

Wiring and printing only: the work is in tasks.contract and tasks.contract_check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.console import fail

contract_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Data contracts: infer an editable GE suite from reference data; check files against it.",
)

PARAMS_HELP = "params file (default: params.yaml when present, else the defaults)"
DEFAULT_SUITE = Path("contract/suite.json")  # as tasks.contract_check (not imported here: pandas is slow)
DEFAULT_RESULTS = Path("reports/contract/results.json")


@contract_app.command()
def infer(
    data: Annotated[Path, typer.Option(help="reference data: CSV, TSV, Parquet file or dataset directory")],
    target: Annotated[
        str | None, typer.Option(help="the label column (default: ingest.target when the file has it)")
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="the column of texts (text data; detected when not given)")
    ] = None,
    sensitive: Annotated[
        list[str], typer.Option(help="a column whose values must never be shown (repeatable)")
    ] = [],  # noqa: B006
    out: Annotated[Path, typer.Option(help="where to write the suite")] = DEFAULT_SUITE,
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
    force: Annotated[bool, typer.Option(help="overwrite a different existing suite file")] = False,
) -> None:
    """Infer an editable Great Expectations suite from a reference file and write it.

    Types, nullability, widened ranges (critical), the label set, categorical domains (warning),
    "not constant", row-count bounds and the duplicate rate. Sensitive columns get no value sets and no
    ranges. The file is read whole.
    """
    from tasks.contract_check import infer_file, params_for, write_suite
    from tasks.errors import ShipyardError

    try:
        config = params_for(params)
        inferred = infer_file(data, config, target=target, text_column=text_column, sensitive=sensitive)
        state = write_suite(out, inferred.suite, force=force)
    except ShipyardError as err:
        fail(str(err))
    print_inferred(inferred, out, state)


def print_inferred(inferred: Any, out: Path, state: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from tasks.contract import severity_of, suite_settings

    console = Console()
    table = Table(title=f"inferred from {inferred.rows:,} rows", title_justify="left")
    for header in ("column", "kind", "rules"):
        table.add_column(header)
    for column, kind in inferred.kinds.items():
        table.add_row(column, kind, str(inferred.rules[column]))
    console.print(table)
    severities = [severity_of(e.configuration) for e in inferred.suite.expectations]
    counts = ", ".join(f"{severities.count(s)} {s}" for s in ("critical", "warning") if s in severities)
    console.print(f"{len(severities)} rules ({counts}) {state} to [bold]{out}[/]")
    if inferred.target is None:
        console.print("no label column found: no label rules (give --target to add them)")
    hidden = suite_settings(inferred.suite).get("sensitive_columns") or []
    if hidden:
        console.print(f"sensitive (no values kept or shown): {', '.join(hidden)}")
    console.print("use it:")
    console.print(f"  pipeline:   set [bold]validate.suite: {out.as_posix()}[/] in params.yaml")
    console.print(f"  new data:   shipyard contract check --data FILE --suite {out.as_posix()}")
    console.print("  edit it:    meta.severity of each expectation is critical (stops) or warning (reports)")


@contract_app.command()
def check(
    data: Annotated[Path, typer.Option(help="CSV, TSV, Parquet file or Parquet dataset directory")],
    suite: Annotated[Path, typer.Option(help="the GE suite JSON")] = DEFAULT_SUITE,
    chunk_rows: Annotated[
        int | None, typer.Option(min=1, help="rows per chunk (default: validate.chunk_rows)")
    ] = None,
    params: Annotated[Path | None, typer.Option(help=PARAMS_HELP)] = None,
    out: Annotated[Path, typer.Option(help="where to write the results JSON")] = DEFAULT_RESULTS,
) -> None:
    """Validate a file against a suite in chunks, with bounded memory; exit 1 on a critical failure.

    Memory grows with --chunk-rows, not with the file: about 260 MiB (Python, pandas, GE) plus about
    10 x one chunk as pandas holds it (--chunk-rows x row width), plus 8 bytes per row of the file for
    duplicate detection (e.g. 640 MiB at 200,000 rows of 30 columns per chunk). Counts are summed over
    chunks, so the result is the one for the whole file. Values of sensitive columns are shown as ***.
    """
    from tasks.contract import load_suite
    from tasks.contract_check import check_file, params_for
    from tasks.errors import ShipyardError
    from tasks.io import write_json

    try:
        config = params_for(params)
        loaded = load_suite(suite)
        rows = chunk_rows or config.validate_params.chunk_rows
        with _progress() as advance:
            report = check_file(data, loaded, rows, config.validate_params.sensitive_columns, advance)
        write_json(out, report)
    except ShipyardError as err:
        fail(str(err))
    print_check(report, out)
    if not report["success"]:
        raise typer.Exit(1)


class _progress:
    """A transient rich spinner counting rows (quiet when stdout is not a terminal)."""

    def __enter__(self) -> Any:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn

        console = Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            transient=True,
            console=console,
            disable=not console.is_terminal,
        )
        self.task = self.progress.add_task("checking", total=None)
        self.progress.start()
        return lambda rows: self.progress.update(self.task, description=f"checked {rows:,} rows")

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()


def print_check(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from tasks.contract_check import summary_rows

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)  # logs and pipes: keep rows on one line
    rows = summary_rows(report)
    if rows:
        table = Table(title="failed and warned expectations", title_justify="left")
        for header in ("column", "rule", "severity", "count", "examples"):
            table.add_column(header, overflow="fold")
        for row in rows:
            style = "red" if row["severity"] == "critical" else "yellow"
            table.add_row(
                *(row[k] for k in ("column", "rule")),
                f"[{style}]{row['severity']}[/]",
                *(row[k] for k in ("count", "examples")),
            )
        console.print(table)
    state = "[bold green]passed[/]" if report["success"] else "[bold red]FAILED[/]"
    console.print(
        f"{report['data']}: {state}: {report['rows']:,} rows in {report['chunks']} chunk(s) of up to "
        f"{report['chunk_rows']:,}; {len(report['failures'])} critical failure(s), "
        f"{len(report['warnings'])} warning(s); results in {out}"
    )
