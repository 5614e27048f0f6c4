"""`shipyard sweep`: every combination of a grid of params as a DVC experiment, run in parallel on Dask.

This module turns the options and params' `sweep` section into a checked plan (every candidate's params
validated, nothing written, nothing run); flows/sweep.py runs it under Prefect.
"""

from __future__ import annotations

import difflib
import itertools
import os
import subprocess
import tempfile
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.console import exit_code_of, fail

PARAMS = Path("params.yaml")
LOCK = Path("dvc.lock")
SUMMARY_DIR = Path("reports/sweeps")  # one JSON summary per sweep, beside the run's other reports
MAX_CANDIDATES = 64
# What evaluate writes to reports/metrics.json (asked of that file when the workspace has one).
KNOWN_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc", "pr_auc", "log_loss")
LOWER_IS_BETTER = frozenset({"log_loss"})
GIT_FIX = "git init && git add -A && git commit -m project"
OPENERS, CLOSERS = "[{", "]}"


@dataclass
class Plan:
    """A checked sweep: what each candidate sets, where it runs, how the best is chosen."""

    sweep_id: str
    project: str
    keys: list[str]  # the grid's keys, in order
    candidates: list[dict[str, Any]]  # {"name": experiment name, "values": {key: value}}
    sets: dict[str, Any]  # --set: applied to every candidate
    metric: str
    higher_is_better: bool
    workers: int
    address: str | None
    threads: int | None  # OMP/MKL threads of each candidate on the local cluster (None: the worker's)
    copy_paths: list[str]  # untracked files the experiments need (dvc exp run --copy-paths)
    promote: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def summary_file(self) -> Path:
        return SUMMARY_DIR / f"{self.sweep_id}.json"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary_file": str(self.summary_file)}


def split_top_level(text: str) -> list[str]:
    """`[64,32],[128]` -> ["[64,32]", "[128]"]: commas inside brackets, braces or quotes do not split."""
    parts, depth, quote, current = [], 0, "", []
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in OPENERS:
            depth += 1
        elif char in CLOSERS:
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """`train.lr=1e-3,3e-3` -> ("train.lr", [0.001, 0.003]); each value read as `--set` reads one."""
    from tasks.config import parse_assignment
    from tasks.errors import ShipyardError

    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ShipyardError(f"--grid {text!r}: expected KEY.PATH=V1,V2,..., e.g. train.lr=1e-3,3e-3")
    pieces = [piece.strip() for piece in split_top_level(values)]
    if not any(pieces):
        raise ShipyardError(f"--grid {text!r}: no values after '='")
    if not all(pieces):
        raise ShipyardError(f"--grid {text!r}: an empty value (two commas in a row, or a trailing comma)")
    return key, [parse_assignment(f"{key}={piece}")[1] for piece in pieces]


def merge_grid(params_grid: dict[str, list[Any]], options: list[str]) -> dict[str, list[Any]]:
    """params' sweep.grid, then each --grid: a key given on the command line replaces its values."""
    grid = {key: list(values) for key, values in params_grid.items()}
    for option in options:
        key, values = parse_grid_option(option)
        grid[key] = values
    return grid


def check_grid(grid: dict[str, list[Any]], limit: int = MAX_CANDIDATES) -> None:
    from tasks.errors import ShipyardError

    if not grid:
        raise ShipyardError(
            "nothing to sweep: give --grid KEY=V1,V2 (repeatable), or set sweep.grid in params.yaml"
        )
    for key, values in grid.items():
        if not values:
            raise ShipyardError(f"grid {key}: no values")
        seen = []
        for value in values:
            if value in seen:
                raise ShipyardError(f"grid {key}: the value {value!r} is given twice")
            seen.append(value)
    count = 1
    for values in grid.values():
        count *= len(values)
    if count > limit:
        sizes = " × ".join(str(len(values)) for values in grid.values())
        raise ShipyardError(f"the grid makes {count} candidates ({sizes}); a sweep runs at most {limit}")


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, the last key varying fastest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _section(annotation: Any) -> Any:
    """The params Section class a field holds (also `Contract | None`), or None for a value."""
    from tasks.config import Section

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, Section):
            return candidate
    return None


def _fields(model: Any) -> dict[str, Any]:
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _paths_named(name: str, model: Any, prefix: str = "") -> list[str]:
    """Every key path whose last part is `name` (for 'did you mean')."""
    found = []
    for key, info in _fields(model).items():
        path = f"{prefix}{key}"
        if key == name:
            found.append(path)
        inner = _section(info.annotation)
        if inner is not None:
            found += _paths_named(name, inner, f"{path}.")
    return found


def check_key(key: str, origin: str) -> None:
    """A params key path that does not exist fails here, naming it (and what it may have meant)."""
    from tasks.config import Params
    from tasks.errors import ShipyardError

    if key.split(".")[0] == "sweep":
        raise ShipyardError(f"{origin} {key}: the sweep section itself cannot be swept or set per sweep")
    model, parts = Params, key.split(".")
    for depth, part in enumerate(parts):
        fields = _fields(model)
        if part not in fields:
            known = ".".join(parts[:depth])
            where = f"section '{known}'" if known else "params.yaml"
            hint = _paths_named(parts[-1], Params) or [
                f"{known}.{m}" if known else m for m in difflib.get_close_matches(part, fields, n=1)
            ]
            suggestion = f" (did you mean {' or '.join(hint)}?)" if hint else ""
            raise ShipyardError(f"{origin} {key}: unknown key '{key}' in {where}{suggestion}")
        model = _section(fields[part].annotation)
        if model is None:
            return  # a value (or a mapping of values): the params model checks it below


def describe(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in values.items())


def validate_candidates(
    params_file: Path, sets: dict[str, Any], candidates: list[dict[str, Any]]
) -> list[Any]:
    """Each candidate's params as they will run (params.yaml, --set, its grid values), validated in
    a scratch folder: a bad value fails here, naming the candidate, before anything runs."""
    from tasks.config import apply_overrides
    from tasks.errors import ShipyardError

    validated = []
    with tempfile.TemporaryDirectory() as scratch:
        for values in candidates:
            overrides = [(key.split("."), value) for key, value in {**sets, **values}.items()]
            try:
                validated.append(apply_overrides(params_file, overrides, out=Path(scratch) / "params.yaml"))
            except ShipyardError as err:
                raise ShipyardError(f"candidate {describe(values)}: {err}") from None
    return validated


def available_metrics(metrics_file: Path = Path("reports/metrics.json")) -> list[str]:
    """The numeric metrics evaluate writes: read from the workspace's metrics file when there is one."""
    from tasks.io import read_json

    try:
        metrics = read_json(metrics_file)
    except (OSError, ValueError):
        return list(KNOWN_METRICS)
    return [k for k, v in metrics.items() if k != "rows" and (v is None or isinstance(v, int | float))]


def check_metric(metric: str, metrics: list[str]) -> None:
    from tasks.errors import ShipyardError

    if metric not in metrics:
        close = [m for m in metrics if m.startswith(metric)] or difflib.get_close_matches(metric, metrics)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ShipyardError(
            f"sweep metric {metric!r} is not a metric of reports/metrics.json "
            f"({hint}one of {', '.join(metrics)})"
        )


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)


def check_git() -> None:
    """DVC experiments are git commits on top of HEAD: a repository with a commit is needed."""
    from tasks.errors import ShipyardError

    try:
        inside = git("rev-parse", "--is-inside-work-tree")
    except FileNotFoundError:
        raise ShipyardError("git not found: DVC experiments need git") from None
    if inside.returncode != 0:
        raise ShipyardError(f"{Path.cwd()}: not a git repository; DVC experiments need one: {GIT_FIX}")
    if git("rev-parse", "--verify", "-q", "HEAD").returncode != 0:
        raise ShipyardError(f"{Path.cwd()}: no git commit yet; DVC experiments need one: {GIT_FIX}")


def dvc_outs() -> set[str]:
    """Paths dvc.yaml's stages write (DVC restores them in each experiment's folder itself)."""
    import yaml

    stages = (yaml.safe_load(Path("dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages", {})
    outs = set()
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind) or []:
                outs.add(str(next(iter(out)) if isinstance(out, dict) else out).rstrip("/"))
    return outs


def needs_copy(path: str, outs: set[str]) -> bool:
    """A local file or folder in the project that neither git nor DVC will bring to an experiment."""
    local = Path(path)
    if "://" in path or local.is_absolute() or not local.exists() or path.startswith(".."):
        return False
    if path.rstrip("/") in outs or Path(f"{path}.dvc").exists():
        return False
    return not git("ls-files", "--", path).stdout.strip()


def copy_paths(validated: list[Any]) -> list[str]:
    """Untracked files each experiment needs: the data source(s) and an uncommitted dvc.lock (so the
    stages the workspace already ran are not run again in every candidate)."""
    outs = dvc_outs()
    sources = {params.ingest.source for params in validated}
    paths = [LOCK.as_posix()] if needs_copy(LOCK.as_posix(), outs) else []
    return paths + sorted(source for source in sources if needs_copy(source, outs))


def untracked_notes(copied: list[str]) -> list[str]:
    notes = []
    committed = [
        path for path in copied if path != LOCK.as_posix() and git("check-ignore", "-q", path).returncode != 0
    ]
    if committed:
        notes.append(
            f"{', '.join(committed)}: not tracked by git or DVC, so each experiment commits a copy "
            f"(`dvc add {committed[0]}` keeps data out of git)"
        )
    others = git("ls-files", "--others", "--exclude-standard").stdout.split("\n")
    missing = sorted(p for p in others if p and not any(p == c or p.startswith(c + "/") for c in copied))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        notes.append(f"untracked files the experiments will not see: {shown} (git add those a stage needs)")
    return notes


def local_threads(workers: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // workers)


def make_plan(
    grid_options: list[str],
    set_options: list[str],
    workers: int | None = None,
    address: str | None = None,
    metric: str | None = None,
    promote: bool = True,
    params_file: Path = PARAMS,
) -> Plan:
    """Everything checked before anything runs: the project, git, the grid, each candidate's params."""
    from flows.stages import check_layout
    from tasks.config import load_params, parse_assignment
    from tasks.errors import ShipyardError

    check_layout()
    config = load_params(params_file).sweep
    check_git()
    sets = {}
    for text in set_options:
        keys, value = parse_assignment(text)
        check_key(".".join(keys), "--set")
        sets[".".join(keys)] = value
    grid = merge_grid(config.grid, grid_options)
    check_grid(grid)
    cli_keys = {option.partition("=")[0].strip() for option in grid_options}
    for key in grid:
        check_key(key, "--grid" if key in cli_keys else "sweep.grid")
        if key in sets:
            raise ShipyardError(f"{key} is both in --grid and --set: give it in one of them")
    metric = metric or config.metric
    check_metric(metric, available_metrics())
    workers = workers if workers is not None else config.workers
    if workers < 1:
        raise ShipyardError(f"--workers {workers}: at least 1")
    address = address or config.address
    combos = expand_grid(grid)
    validated = validate_candidates(params_file, sets, combos)
    sweep_id = time.strftime("sweep-%Y%m%d-%H%M%S")
    copied = copy_paths(validated)
    workers = min(workers, len(combos))
    return Plan(
        sweep_id=sweep_id,
        project=str(Path.cwd()),
        keys=list(grid),
        candidates=[{"name": f"{sweep_id}-{n}", "values": values} for n, values in enumerate(combos, 1)],
        sets=sets,
        metric=metric,
        higher_is_better=metric not in LOWER_IS_BETTER,
        workers=workers,
        address=address,
        threads=None if address else local_threads(workers),
        copy_paths=copied,
        promote=promote,
        notes=untracked_notes(copied),
    )


def check_scheduler(address: str) -> None:
    """Reach the Dask scheduler now, so an unreachable one is one clear line, not a crashed flow."""
    from distributed import Client

    try:
        Client(address, timeout=10, set_as_default=False).close()
    except (OSError, TimeoutError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        fail(f"--address {address}: cannot reach the Dask scheduler ({reason})")


def sweep(
    grid: Annotated[
        list[str],
        typer.Option(help="KEY.PATH=V1,V2,... values to try (repeatable); replaces sweep.grid's for KEY"),
    ] = [],  # noqa: B006
    set_: Annotated[list[str], typer.Option("--set", help="KEY.PATH=VALUE applied to every candidate")] = [],  # noqa: B006
    workers: Annotated[
        int | None, typer.Option(help="local Dask cluster: worker processes (default: sweep.workers)")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: sweep.address)"),
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="choose the best candidate by this test metric (default: sweep.metric)")
    ] = None,
    promote: Annotated[
        bool, typer.Option(help="apply, re-evaluate, export and promote the best blessed candidate")
    ] = True,
) -> None:
    """Run every combination of the grid as a DVC experiment, in parallel on Dask; promote the best.

    Each candidate is `dvc exp run --temp ... evaluate` (its own temporary copy of the project), so
    `dvc exp show` lists them all with their params and metrics. The blessed candidate with the best
    sweep.metric is applied to the workspace (`dvc exp apply`), evaluated again against production,
    exported and promoted; the others stay experiments. Nothing blessed: exit 3, production untouched.
    """
    from tasks.errors import ShipyardError

    try:
        plan = make_plan(grid, set_, workers, address, metric, promote)
    except ShipyardError as err:
        fail(str(err))
    for note in plan.notes:
        typer.echo(f"note: {note}", err=True)
    from flows.prefect_api import start_temporary_api

    ready = start_temporary_api()  # before importing Prefect, so its start overlaps the imports
    if plan.address:
        check_scheduler(plan.address)
    from flows.sweep import run_sweep

    try:
        ready()
    except RuntimeError as err:
        fail(f"{err} (set PREFECT_API_URL to use a running `prefect server start` instead)")
    where = plan.address or f"a local Dask cluster of {plan.workers} worker(s)"
    typer.echo(f"{plan.sweep_id}: {len(plan.candidates)} candidate(s) on {where}")
    state = run_sweep(plan.as_dict())
    summary = read_summary(plan.summary_file)
    if summary:
        print_summary(summary)
    if state.is_failed() or state.is_crashed():
        fail(state.message or "the sweep failed", exit_code_of(state))
    print_outcome(summary, plan)


def read_summary(path: Path) -> dict[str, Any] | None:
    from tasks.io import read_json

    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    metric = summary["metric"]
    arrow = "↑" if summary["higher_is_better"] else "↓"
    table = Table("candidate", *summary["keys"], f"{metric} {arrow}", "blessed", "", title=summary["sweep"])
    for row in summary["candidates"]:
        values = [escape(_cell(row["values"][key])) for key in summary["keys"]]
        if row["status"] != "ok":
            table.add_row(row["name"], *values, "-", "-", f"[red]failed[/]: {escape(row['error'] or '')}")
            continue
        score = row["metrics"].get(metric)
        blessed = "[green]yes[/]" if row["blessed"] else "[yellow]no[/]"
        mark = "[bold]best[/]" if row["name"] == summary.get("best") else escape("; ".join(row["reasons"]))
        table.add_row(row["name"], *values, "-" if score is None else f"{score:.4f}", blessed, mark)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    console.print(table)


def print_outcome(summary: dict[str, Any] | None, plan: Plan) -> None:
    typer.echo(f"summary: {plan.summary_file}   experiments: dvc exp show")
    promoted = (summary or {}).get("promoted")
    if promoted:
        typer.echo(
            f"promoted {promoted['candidate']} as {promoted['registry']}/versions/{promoted['version']} "
            "(its params are in params.yaml)"
        )
