"""`shipyard sweep` wall time: 4 candidates on a local Dask cluster of 2 workers against 1 (sequential).

    python -m bench.sweep [--epochs 20] [--repeats 1] [--keep]

Runs in a throwaway copy of the project (bench.pipeline's copy: its own git repo and DVC cache, no
outputs) on the default breast-cancer data. `dvc repro validate` runs once first, so each candidate runs
train and evaluate only, in both sweeps. Both sweeps run the same 4 candidates; DVC's run cache is
emptied before each, so that the second does not restore the first's results. Each sweep runs with
--no-promote: the figure is the candidates' work (promotion is one job after them either way). Each
candidate's torch gets the CPUs divided by the workers (OMP_NUM_THREADS), so one worker has them all.
With --repeats, the two kinds alternate which runs first, and the figures are medians.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    format_load,
    format_ratio,
    format_seconds,
    machine_info,
    median,
    print_table,
    ratio,
    timestamp,
    write_results,
)
from bench.pipeline import (
    PROJECT,
    BenchError,
    Workspace,
    bench_env,
    check_tools,
    copy_project,
    init_prefect_home,
    run_command,
    venv_bin,
)

NAME = "sweep"
GRID = ["train.lr=0.001,0.003", "train.hidden=[64],[128]"]  # 4 candidates
MODES = {"parallel": 2, "sequential": 1}  # label -> --workers


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="train.epochs of every candidate")
    parser.add_argument("--repeats", type=int, default=1, help="sweeps of each kind (alternating; medians)")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway project copy")
    return parser.parse_args(argv)


def sweep_command(workers: int, epochs: int) -> list[str]:
    grid = [arg for item in GRID for arg in ("--grid", item)]
    sets = ["--set", f"train.epochs={epochs}", "--set", "train.device=cpu"]
    return ["shipyard", "sweep", *grid, *sets, "--workers", str(workers), "--no-promote"]


def newest_summary(root: Path) -> dict[str, Any]:
    files = sorted((root / "reports/sweeps").glob("sweep-*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise BenchError(f"{root}/reports/sweeps: no sweep summary written")
    return json.loads(files[-1].read_text(encoding="utf-8"))


def one_sweep(ws: Workspace, label: str, workers: int, epochs: int) -> dict[str, Any]:
    shutil.rmtree(ws.root / ".dvc/cache/runs", ignore_errors=True)  # DVC's run cache: no free results
    run = run_command(ws, f"sweep, {workers} worker(s)", sweep_command(workers, epochs), 1800)
    summary = newest_summary(ws.root)
    rows = summary["candidates"]
    failed = [row["name"] for row in rows if row["status"] != "ok"]
    if failed:
        raise BenchError(f"{label}: candidates failed: {failed}")
    return {
        "wall_s": run.seconds,
        "candidates_s": summary["candidates_seconds"],
        "candidate_s": sorted(row["seconds"] for row in rows),
        "worker_processes": len({row["pid"] for row in rows}),
        "metric": {row["name"]: row["metrics"].get(summary["metric"]) for row in rows},
    }


def measure(ws: Workspace, epochs: int, repeats: int) -> dict[str, Any]:
    """Each mode `repeats` times, alternating which goes first; medians per mode."""
    init_prefect_home(ws)  # a one-time cost of first use, not the first sweep's
    run_command(ws, "dvc repro validate (data prepared once for both)", ["dvc", "repro", "validate"], 600)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in MODES}
    for i in range(repeats):
        order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
        for label in order:
            runs[label].append(one_sweep(ws, label, MODES[label], epochs))
    return {
        label: {
            "workers": MODES[label],
            "wall_s": median([r["wall_s"] for r in done]),
            "candidates_s": median([r["candidates_s"] for r in done]),
            "runs": done,
        }
        for label, done in runs.items()
    }


def run_benchmark(epochs: int, repeats: int, keep: bool) -> dict[str, Any]:
    bin_dir = venv_bin()
    check_tools(bin_dir)
    machine = machine_info()
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-bench-sweep-"))
    try:
        root = copy_project(scratch)
        print(f"benchmarking a copy of {PROJECT} in {root}", flush=True)
        ws = Workspace(root, bench_env(root, scratch / "prefect-home", bin_dir))
        results = measure(ws, epochs, repeats)
    finally:
        if keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    machine["load_average_end"] = machine_info()["load_average"]
    parallel, sequential = results["parallel"], results["sequential"]
    return {
        "name": NAME,
        "created_at": timestamp(),
        "machine": machine,
        "grid": GRID,
        "epochs": epochs,
        "repeats": repeats,
        "candidates": 4,
        "results": results,
        "speedup_wall": ratio(sequential["wall_s"], parallel["wall_s"]),
        "speedup_candidates": ratio(sequential["candidates_s"], parallel["candidates_s"]),
        "note": (
            "wall_s: the whole `shipyard sweep --no-promote` command (Python start, temporary Prefect API, "
            "Dask cluster start and stop, candidates, reading results back from DVC); candidates_s: from the "
            "flow's start to every candidate's results read back. Each candidate is `dvc exp run --temp` "
            "(train + evaluate), its torch on CPUs // workers threads."
        ),
    }


def print_report(report: dict[str, Any]) -> None:
    rows = []
    for label, figures in report["results"].items():
        seconds = sorted(s for run in figures["runs"] for s in run["candidate_s"])
        per_candidate = f"{min(seconds):.1f}–{max(seconds):.1f} (median {median(seconds):.1f})"
        rows.append(
            [
                f"{label} ({figures['workers']} worker(s))",
                format_seconds(figures["wall_s"]),
                format_seconds(figures["candidates_s"]),
                per_candidate,
            ]
        )
    rows.append(
        [
            "sequential / parallel",
            format_ratio(report["speedup_wall"]),
            format_ratio(report["speedup_candidates"]),
            "",
        ]
    )
    print_table(
        f"shipyard sweep: 4 candidates (train.epochs={report['epochs']}), breast-cancer data",
        ["sweep (median)", "wall", "candidates phase", "each candidate (s)"],
        rows,
    )
    machine = report["machine"]
    print(
        f"cpus {machine['usable_cpus']}; load average {format_load(machine['load_average'])} at start, "
        f"{format_load(machine['load_average_end'])} at end (other work on the machine skews figures)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run_benchmark(args.epochs, args.repeats, args.keep)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print_report(report)
    print(f"wrote {write_results(NAME, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
