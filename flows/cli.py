"""`shipyard`: run the pipeline, serve the production model, schedule runs, check data contracts and drift."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cache_check import cache_app
from flows.console import exit_code_of, fail
from flows.contract_cli import contract_app
from flows.drift_cli import drift
from flows.predict_cli import predict
from flows.remote_cli import remote_app
from flows.schedule_cli import schedule, worker
from flows.sweep_cli import sweep

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(contract_app, name="contract")
app.add_typer(remote_app, name="remote")
app.add_typer(cache_app, name="cache")
app.command()(drift)
app.command()(predict)
app.command()(schedule)
app.command()(worker)
app.command()(sweep)

PARAMS = Path("params.yaml")


def source_value(data: str) -> str:
    """A --data value as ingest.source: SQLite URLs become their file (so DVC can hash it)."""
    if data.startswith("sqlite:///"):
        data = data.removeprefix("sqlite:///")
    if "://" in data:
        return data
    path = Path(data).expanduser().resolve()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def collect_overrides(
    data: str | None,
    target: str | None,
    table: str | None,
    query: str | None,
    assignments: list[str],
    text_column: str | None = None,
) -> list[tuple[list[str], Any]]:
    """--set assignments, then the named options; new --data resets the previous data's text column."""
    from tasks.config import parse_assignment

    overrides = [parse_assignment(text) for text in assignments]
    named = {"source": data and source_value(data), "target": target, "table": table, "query": query}
    named["text_column"] = text_column
    overrides += [(["ingest", key], value) for key, value in named.items() if value is not None]
    if data and text_column is None and not any(keys == ["ingest", "text_column"] for keys, _ in overrides):
        overrides.append((["ingest", "text_column"], None))
    return overrides


@app.command()
def run(
    data: Annotated[
        str | None,
        typer.Option(
            help="CSV, TSV, Parquet or SQLite file, a SQLAlchemy URL, or a folder of class folders of images"
        ),
    ] = None,
    target: Annotated[str | None, typer.Option(help="the label column")] = None,
    text_column: Annotated[
        str | None, typer.Option(help="the column of texts (text data; detected when not given)")
    ] = None,
    params: Annotated[Path, typer.Option(help="params file to start from")] = PARAMS,
    set_: Annotated[list[str], typer.Option("--set", help="KEY.PATH=VALUE, e.g. train.epochs=5")] = [],  # noqa: B006
    table: Annotated[str | None, typer.Option(help="SQL source: table to read")] = None,
    query: Annotated[str | None, typer.Option(help="SQL source: query to run")] = None,
    resume: Annotated[bool, typer.Option(help="continue training from the last checkpoint")] = False,
    devices: Annotated[
        int | None, typer.Option(min=1, help="training processes per node: DDP via torchrun (train.devices)")
    ] = None,
    nodes: Annotated[int | None, typer.Option(min=1, help="training machines (train.nodes)")] = None,
) -> None:
    """Run ingest → validate → train → evaluate → export → promote; unchanged stages are skipped.

    The effective params (the file, --data, --target and --set) are written to params.yaml, as
    `dvc exp run --set-param` does, so that `dvc repro` reproduces this run; a run that fails puts the
    previous params.yaml back.
    """
    from flows.stages import check_layout
    from tasks.config import apply_overrides
    from tasks.errors import ShipyardError
    from tasks.io import write_bytes

    try:
        check_layout()
        previous = PARAMS.read_bytes()
        overrides = collect_overrides(data, target, table, query, set_, text_column)
        overrides += [(["train", key], n) for key, n in (("devices", devices), ("nodes", nodes)) if n]
        config = apply_overrides(params, overrides)
    except ShipyardError as err:
        fail(str(err))
    from flows.prefect_api import start_temporary_api

    ready = start_temporary_api()  # before importing Prefect, so its start overlaps the imports
    from flows.pipeline import pipeline

    try:
        ready()
    except RuntimeError as err:
        fail(f"{err} (set PREFECT_API_URL to use a running `prefect server start` instead)")
    state = pipeline(resume=resume, return_state=True)
    if state.is_failed():
        if PARAMS.read_bytes() != previous:
            write_bytes(PARAMS, previous)
        fail(state.message or "the pipeline failed", exit_code_of(state))
    print_summary(config)


def print_summary(config: Any) -> None:
    from rich.console import Console

    from tasks import paths
    from tasks.registry import production_version

    registry = config.promote.registry
    version = production_version(registry)
    console = Console()
    console.print("[bold green]pipeline finished[/]")
    console.print(f"  model       {registry}/versions/{version}/model.onnx (production)")
    console.print(f"  metrics     {paths.METRICS_FILE}   plots {paths.PLOTS_DIR}/")
    console.print(f"  data report {paths.DATA_DOCS_DIR}/index.html")
    console.print(
        f"  serve it    .venv/bin/shipyard serve  or  make serve   (http://{config.serve.host}:{config.serve.port}/predict)"
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default: serve.host, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port, 0 for any free one (default: serve.port)")] = None,
    variant: Annotated[
        str | None,
        typer.Option(
            help="auto (fp16 on GPU, int8 on CPU when published), fp32, int8 or fp16 (default: serve.variant)"
        ),
    ] = None,
    validate_inputs: Annotated[
        bool | None,
        typer.Option(
            "--validate-inputs/--no-validate-inputs",
            help="check each request against the model's data contract: 422 naming the column and rule "
            "(default: serve.validate_inputs)",
            show_default=False,
        ),
    ] = None,
    require_gpu: Annotated[
        bool | None, typer.Option("--require-gpu", help="refuse to start unless CUDA is really active")
    ] = None,
) -> None:
    """Serve the production model over HTTP: Open Inference Protocol v2 (/v2/...), POST /predict, /metrics.

    POST /predict takes {"records": [...]} for tables, {"texts": [...]} for text models and
    {"images": [...]} of base64 PNG/JPEG or uint8 arrays (or a raw image/png or image/jpeg body) for
    images; /v2/models/<name>/infer takes named tensors (tritonclient works). Requests are batched
    dynamically; the server hot-reloads when production moves and drains on SIGTERM. Limits, batching and
    timeouts are params' `serve` section; the API key is the SHIPYARD_API_KEY environment variable.
    """
    from tasks.errors import ShipyardError

    given = {"host": host, "port": port, "variant": variant, "validate_inputs": validate_inputs}
    given["require_gpu"] = require_gpu
    try:
        from serving.__main__ import start

        start({key: value for key, value in given.items() if value is not None})
    except ShipyardError as err:
        fail(str(err))


def main() -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client-side usage analytics: off
    sys.exit(app())


if __name__ == "__main__":
    main()
