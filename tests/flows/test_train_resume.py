"""kill -9 of the training process mid-run: Prefect retries the train task, which resumes from the last
checkpoint and ends where an uninterrupted training ends (CPU, same seed: bit-identical metrics)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.project import BIN, dvc, env, make_project, tabular_frame

SETTINGS = ["train.epochs=12", "train.patience=100", "train.hidden=[32]", "train.batch_size=16"]


def kill_training_after_two_epochs(run: subprocess.Popen, checkpoint: Path, timeout: float = 240) -> int:
    """Wait for the second checkpoint write, then SIGKILL the `python -m tasks.train` child."""
    deadline, writes, seen = time.monotonic() + timeout, set(), None
    while time.monotonic() < deadline and run.poll() is None:
        if checkpoint.exists():
            writes.add(checkpoint.stat().st_mtime_ns)
        if len(writes) >= 2:
            children = psutil.Process(run.pid).children(recursive=True)
            seen = next((c for c in children if "tasks.train" in " ".join(c.cmdline())), None)
            if seen:
                seen.send_signal(signal.SIGKILL)
                return len(writes)
        time.sleep(0.02)
    raise AssertionError(f"training never reached a second checkpoint to kill (run exit {run.poll()})")


def history(project: Path) -> list[dict]:
    return json.loads((project / "reports/train.json").read_text(encoding="utf-8"))["history"]


@pytest.mark.slow
def test_killed_training_is_retried_from_its_checkpoint_to_the_same_metrics(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    tabular_frame(rows=600, seed=2).to_csv(project / "data.csv", index=False)
    command = [str(BIN / "shipyard"), "run", "--data", "data.csv", "--target", "label"]
    for setting in SETTINGS:
        command += ["--set", setting]
    run = subprocess.Popen(
        command, cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    kill_training_after_two_epochs(run, project / "models/checkpoints/last.pt")
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output
    assert "killed by signal 9" in output and "resuming from" in output, output
    killed_metrics = (project / "reports/metrics.json").read_text(encoding="utf-8")
    killed_history = history(project)
    assert len(killed_history) == 12

    # The same training uninterrupted (no --resume: dvc.yaml's cmd), then the same evaluation.
    for stage in ("train", "evaluate"):
        result = dvc(project, "repro", "--force", "--single-item", stage)
        assert result.returncode == 0, result.stdout + result.stderr
    assert history(project) == killed_history
    assert (project / "reports/metrics.json").read_text(encoding="utf-8") == killed_metrics
