"""Data-parallel training on the CPU: `python -m tasks.train` with train.devices=2 (DDP, gloo) against 1.

    python -m bench.ddp [--rows 20000] [--epochs 5] [--repeats 3]

A synthetic table (30 numeric features, 3 classes) is ingested once into a throwaway folder; then each
repeat trains it once with one process and once with two (torchrun, gloo), alternating. Figures: the
wall time of the command (torchrun's start included) and the training loop's own seconds from
reports/train.json, as medians, and their ratios 1 process / 2 processes (above 1: DDP is faster).
Needs only torch, numpy, pandas and pyyaml (it runs on the GPU machines; there it still uses the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

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

NAME = "ddp"
ROOT = Path(__file__).resolve().parents[1]


def synthetic_table(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 30))
    label = (features[:, :3] @ np.array([1.0, -1.0, 0.5]) > 0).astype(int) + (features[:, 3] > 1)
    frame = pd.DataFrame(features, columns=[f"f{i:02d}" for i in range(30)])
    return frame.assign(label=label)


def write_params(folder: Path, epochs: int, devices: int) -> Path:
    train = {"epochs": epochs, "patience": epochs, "hidden": [128, 64], "batch_size": 64, "dropout": 0.0}
    params = {"ingest": {"source": "data.csv", "target": "label"}}
    params["train"] = {**train, "device": "cpu", "devices": devices}
    path = folder / f"params-{devices}.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def run_stage(folder: Path, module: str, params: Path) -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", f"tasks.{module}", "--params", str(params)]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, env=python_env())
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def python_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def measure(rows: int, epochs: int, repeats: int) -> dict[str, Any]:
    times: dict[int, dict[str, list[float]]] = {n: {"wall": [], "loop": []} for n in (1, 2)}
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-ddp-") as tmp:
        folder = Path(tmp)
        synthetic_table(rows).to_csv(folder / "data.csv", index=False)
        params = {n: write_params(folder, epochs, n) for n in (1, 2)}
        (folder / "params.yaml").write_bytes(params[1].read_bytes())  # ingest reads params.yaml
        ingest = [sys.executable, "-m", "tasks.ingest"]
        subprocess.run(ingest, cwd=folder, check=True, capture_output=True, env=python_env())
        for _ in range(repeats):
            for n in (1, 2):
                times[n]["wall"].append(run_stage(folder, "train", params[n]))
                report = json.loads((folder / "reports/train.json").read_text(encoding="utf-8"))
                assert report["processes"] == n, report
                times[n]["loop"].append(report["seconds"])
    medians = {n: {kind: median(values) for kind, values in t.items()} for n, t in times.items()}
    return {
        "rows": rows,
        "epochs": epochs,
        "repeats": repeats,
        "seconds": times,
        "median": medians,
        "speedup_wall": ratio(medians[1]["wall"], medians[2]["wall"]),
        "speedup_loop": ratio(medians[1]["loop"], medians[2]["loop"]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = measure(args.rows, args.epochs, args.repeats)
    medians = result["median"]
    rows = [
        [f"{n} process{'es' if n > 1 else ''}", format_seconds(m["wall"]), format_seconds(m["loop"])]
        for n, m in medians.items()
    ]
    rows.append(["1 / 2", format_ratio(result["speedup_wall"]), format_ratio(result["speedup_loop"])])
    title = f"DDP on the CPU: {args.rows:,} rows x {args.epochs} epochs, median of {args.repeats}"
    print_table(title, ["training", "wall (command)", "training loop"], rows)
    machine = machine_info()
    print(f"load average during the run: {format_load(machine['load_average'])}")
    path = write_results(NAME, {"timestamp": timestamp(), "machine": machine, **result})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
