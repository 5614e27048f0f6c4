"""The stages as DVC sees them: which are up to date, and recording one that ran in dvc.lock.

The flow asks DVC instead of keeping books of its own, so `shipyard run` and `dvc repro` skip by the
same rule (DVC's content hashes of deps, params and outs) and leave the same dvc.lock.
"""

from __future__ import annotations

import importlib
import logging
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


def run_stage(name: str, resume: bool = False) -> Any:
    """Call the stage's run() in this process, with params.yaml as DVC sees it."""
    from tasks.config import load_params

    params = load_params()
    module = importlib.import_module(f"tasks.{STAGES[name]}")
    if name == "default_data":
        return str(module.write_default_dataset())
    if name == "train":
        return module.run(params, resume=resume)
    return module.run(params)


def check_layout(root: Path = Path(".")) -> None:
    """Refuse to start outside a shipyard project folder."""
    from tasks.errors import ShipyardError

    missing = [f for f in ("dvc.yaml", "params.yaml", ".dvc") if not (root / f).exists()]
    if missing:
        raise ShipyardError(f"{root.resolve()}: not a shipyard project (missing {', '.join(missing)})")
