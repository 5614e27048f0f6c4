"""The stages as DVC sees them: which are up to date, and recording one that ran in dvc.lock.

The flow asks DVC instead of keeping books of its own, so `shipyard run` and `dvc repro` skip by the
same rule (DVC's content hashes of deps, params and outs) and leave the same dvc.lock.
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

# dvc.yaml stage -> the module in tasks/ whose run() the flow calls for it, in pipeline order
STAGES: dict[str, str] = {
    "default_data": "ingest",
    "ingest": "ingest",
    "validate": "validate",
    "train": "train",
    "evaluate": "evaluate",
    "export": "export",
    "promote": "promote",
}


@cache
def dvc_repo() -> Any:
    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.WARNING)
    return Repo(".")


def stale_stages() -> set[str]:
    """Stages whose deps, params or outs differ from dvc.lock (one DVC status for the whole pipeline).

    Called at the start of each run: it opens a fresh view of the project (dvc.yaml, params, cwd).
    """
    dvc_repo.cache_clear()
    return {name.split(":")[-1] for name in dvc_repo().status()}


def is_up_to_date(name: str) -> bool:
    """DVC's verdict for one stage, asked again after an upstream stage has run."""
    return not dvc_repo().status(targets=[name])


def record(name: str) -> None:
    """What `dvc repro` does after a stage's cmd succeeds: hash outs, cache them, update dvc.lock."""
    dvc_repo().commit(name, force=True)


class StageKilled(Exception):
    """The stage's process died by a signal (kill -9, the OOM killer, a preempted machine): retried."""


def run_stage(name: str, resume: bool = False) -> Any:
    """Run a stage with params.yaml as DVC sees it: train in a child process (so a killed training
    can be retried from its checkpoint, and torchrun can start its group), the others in this one."""
    from tasks.config import load_params

    if name == "train":
        return run_child("train", ["--resume"] if resume else [])
    params = load_params()
    module = importlib.import_module(f"tasks.{STAGES[name]}")
    if name == "default_data":
        return str(module.write_default_dataset())
    return module.run(params)


def run_child(module: str, args: list[str]) -> None:
    """`python -m tasks.<module>` (the stage's dvc.yaml cmd) as a child; its stderr goes through the
    stage's logger. Its `error: ...` line comes back as a ShipyardError with its exit code, and a
    death by a signal as StageKilled."""
    from tasks.errors import ShipyardError

    log = logging.getLogger(f"shipyard.{module}")
    command = [sys.executable, "-m", f"tasks.{module}", *args]
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    error = ""
    for line in child.stderr:
        if line.startswith("error: "):
            error = line.removeprefix("error: ").strip()
        elif line.strip():
            log.info(line.rstrip())
    code = child.wait()
    if code < 0:
        raise StageKilled(f"{module}: the process was killed by signal {-code}")
    if code:
        failure = ShipyardError(error or f"python -m tasks.{module} exited with code {code}")
        failure.exit_code = code
        raise failure


def check_layout(root: Path = Path(".")) -> None:
    """Refuse to start outside a shipyard project folder."""
    from tasks.errors import ShipyardError

    missing = [f for f in ("dvc.yaml", "params.yaml", ".dvc") if not (root / f).exists()]
    if missing:
        raise ShipyardError(f"{root.resolve()}: not a shipyard project (missing {', '.join(missing)})")
