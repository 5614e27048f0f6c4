"""`shipyard sweep` end to end: candidates as DVC experiments on Dask, the best one promoted.

One small project for the module (300 tabular rows, ingest and validate run once by `dvc repro`, so the
candidates run train and evaluate only), two candidates per sweep: on a local cluster of two workers,
then on a Dask scheduler and worker started by the test, against a production model it cannot beat.
The second sweep's candidates have the first's params, so (run in this order) DVC's run cache restores
their training and evaluation: the scheduler path, the experiments and the gate are what it tests.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.config import apply_overrides, parse_assignment
from tests.project import BIN, dvc, env, free_port, make_project, shipyard, stop, tabular_frame

pytestmark = pytest.mark.slow

SETTINGS = [
    "ingest.source=data.csv",
    "ingest.target=label",
    "train.epochs=15",
    "train.patience=5",
    "train.hidden=[16]",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A committed project with its data (untracked) and params set; ingest and validate already run."""
    root = make_project(tmp_path_factory.mktemp("sweep") / "p")
    tabular_frame().to_csv(root / "data.csv", index=False)
    apply_overrides(root / "params.yaml", [parse_assignment(s) for s in SETTINGS], out=root / "params.yaml")
    prepared = dvc(root, "repro", "validate")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    return root


def sweep_of(project: Path, result: subprocess.CompletedProcess) -> dict[str, Any]:
    """The summary the sweep wrote (the path it printed, else the only new one)."""
    files = sorted((project / "reports/sweeps").glob("sweep-*.json"), key=lambda p: p.stat().st_mtime)
    assert files, result.stdout + result.stderr
    return json.loads(files[-1].read_text())


def experiments(project: Path) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json`: experiment name -> its params.yaml values and reports/metrics.json."""
    shown = dvc(project, "exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    found = {}
    for baseline in json.loads(shown.stdout):
        for experiment in baseline.get("experiments") or []:
            rev = experiment["revs"][0]
            found[rev["name"]] = {
                "params": rev["data"]["params"]["params.yaml"]["data"],
                "metrics": rev["data"]["metrics"]["reports/metrics.json"]["data"],
            }
    return found


def test_local_cluster_runs_candidates_in_parallel_and_promotes_the_best(project, prefect_server):
    result = shipyard(
        project,
        "sweep",
        "--grid",
        "train.lr=0.01,0.03",
        "--set",
        "train.batch_size=32",
        "--workers",
        "2",
        PREFECT_API_URL=prefect_server,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = sweep_of(project, result)
    names = [row["name"] for row in summary["candidates"]]
    assert len(names) == 2 and all(row["status"] == "ok" for row in summary["candidates"])

    shown = experiments(project)
    assert set(names) <= set(shown)  # both kept as DVC experiments, listed with params and metrics
    assert sorted(shown[name]["params"]["train"]["lr"] for name in names) == [0.01, 0.03]
    assert all(shown[name]["params"]["train"]["batch_size"] == 32 for name in names)  # --set: every one
    scores = {name: shown[name]["metrics"]["f1_macro"] for name in names}
    best = summary["best"]
    assert scores[best] == max(scores.values())

    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["train"]["lr"] == shown[best]["params"]["train"]["lr"]
    assert params["train"]["batch_size"] == 32
    assert "# the label column" in (project / "params.yaml").read_text()  # the project's style, comments kept
    production = json.loads((project / "registry/production.json").read_text())
    manifest = json.loads((project / f"registry/versions/{production['version']}/manifest.json").read_text())
    assert manifest["metrics"]["f1_macro"] == pytest.approx(scores[best])  # the promoted model is the best's
    assert summary["promoted"]["version"] == production["version"]
    status = dvc(project, "status")
    assert "Data and pipelines are up to date" in status.stdout, status.stdout  # dvc.lock matches

    rows = summary["candidates"]
    assert len({row["pid"] for row in rows}) == 2  # two worker processes ...
    assert max(r["started"] for r in rows) < min(r["finished"] for r in rows)  # ... at the same time


def publish_unbeatable_production(project: Path) -> str:
    """A production version for the same problem whose f1_macro (1.5) no candidate can reach."""
    import pandas as pd

    from tasks.features import label_values
    from tasks.registry import publish_version, set_production

    labels = label_values(pd.read_csv(project / "data.csv")["label"])
    model = project / "unbeatable.onnx"
    model.write_bytes(b"not a model")
    manifest = {"task": "tabular", "target": "label", "labels": labels, "metrics": {"f1_macro": 1.5}}
    version = publish_version(project / "registry", [model], {**manifest, "files": {}})
    set_production(project / "registry", version)
    model.unlink()
    return version


def test_scheduler_address_runs_candidates_and_the_production_gate_refuses(project, prefect_server):
    publish_unbeatable_production(project)
    kept = ["params.yaml", "dvc.lock", "registry/production.json"]
    before = {name: (project / name).read_bytes() for name in kept}
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(BIN / "dask")
    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # what a nanny gives its worker
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env(**one_thread)}
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port)], **quiet)
    worker = None
    try:
        worker_args = ["--nthreads", "2", "--no-nanny", "--no-dashboard"]
        worker = subprocess.Popen([dask, "worker", address, *worker_args], cwd=project, **quiet)
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
        grid = ["--grid", "train.lr=0.01,0.03"]  # after the first test: DVC's run cache has their results
        result = shipyard(project, "sweep", *grid, "--address", address, PREFECT_API_URL=prefect_server)
    finally:
        for process in (worker, scheduler):
            if process is not None:
                stop(process)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "not blessed" in result.stderr and "worse than production's 1.5000" in result.stderr
    assert "production untouched" in result.stderr
    assert {name: (project / name).read_bytes() for name in kept} == before  # workspace and production

    summary = sweep_of(project, result)
    assert summary["address"] == address
    assert {row["pid"] for row in summary["candidates"]} == {worker.pid}  # ran on the test's worker
    shown = experiments(project)
    names = [row["name"] for row in summary["candidates"]]
    assert set(names) <= set(shown)  # refused, yet kept as experiments
    assert sorted(shown[name]["params"]["train"]["lr"] for name in names) == [0.01, 0.03]
