"""`shipyard predict`: score a file with the production model, in chunks, into another file."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.console import fail

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from serving.scoring import Source

PARAMS = Path("params.yaml")
VARIANTS = ("auto", "fp32", "int8", "fp16")
DEFAULT_VARIANT = "auto"  # fp16 on an active GPU, int8 on the CPU, when published; else fp32


def predict(
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="CSV, TSV or Parquet file (tabular and text models); a folder of images or IDX files "
            "(image models)",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="where the scores go: .csv, .tsv or .parquet")],
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="rows read and scored at a time (bounds memory)")
    ] = 10_000,
    variant: Annotated[
        str, typer.Option(help="auto, fp32, or a published variant: int8, fp16")
    ] = DEFAULT_VARIANT,
    registry: Annotated[
        Path | None, typer.Option(help="model registry (default: promote.registry in params.yaml)")
    ] = None,
    text_column: Annotated[
        str | None, typer.Option(help="text models: the column of texts (default: the model's own)")
    ] = None,
) -> None:
    """Score a file with the production model, in chunks, into another file.

    The output holds the input's columns (for images, the path), then `prediction` and one
    `probability_<label>` column per label, rows in input order. It is written to a temp file and moved
    into place at the end: a failed or interrupted run leaves an existing --out as it was. Rows in
    error messages are counted from 1, the header not included.
    """
    from serving.model import load_production
    from serving.scoring import check_paths, score_file
    from tasks.errors import ShipyardError

    if variant not in VARIANTS:
        fail(f"--variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    try:
        check_paths(data, out)
        model = load_production(registry or default_registry(), prefer_gpu=True, variant=variant)
        what = f"{model.name} {model.version} ({model.task}, {model.variant})"
        typer.echo(f"scoring {data} with {what} on {model.provider}")
        with progress(chunk_rows) as (on_start, on_progress):
            summary = score_file(model, data, out, chunk_rows, text_column, on_start, on_progress)
    except ShipyardError as err:
        fail(str(err))
    rate = f"{summary.rows_per_second:,.0f} rows/s"
    typer.echo(f"scored {summary.rows:,} rows in {summary.seconds:.2f} s ({rate}): {out}")


def default_registry() -> Path:
    from tasks.config import load_params

    return Path(load_params(PARAMS).promote.registry)


@contextmanager
def progress(chunk_rows: int) -> Iterator[tuple[Callable[[Source], None], Callable[[int], None]]]:
    """Callbacks that show a rich bar of rows scored, on a terminal and only when the input is large."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    bar = Progress(
        TextColumn("scoring"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} rows"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = None

    def on_start(source: Source) -> None:
        nonlocal task
        if console.is_terminal and source.is_large(chunk_rows):
            bar.start()
            task = bar.add_task("scoring", total=source.total)

    def on_progress(rows: int) -> None:
        if task is not None:
            bar.update(task, completed=rows)

    try:
        yield on_start, on_progress
    finally:
        if task is not None:
            bar.stop()
