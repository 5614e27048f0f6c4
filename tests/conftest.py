"""Shared fixtures: a project folder to run stages in (all stage paths are cwd-relative) and tiny data."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

# Small enough that a stage runs in well under a second on two cores.
FAST_PARAMS: dict[str, Any] = {
    "ingest": {"target": "label", "seed": 7},
    "train": {
        "hidden": [16],
        "dropout": 0.0,
        "epochs": 8,
        "batch_size": 32,
        "lr": 0.01,
        "patience": 100,
        "seed": 3,
        "device": "cpu",
    },
    "evaluate": {"thresholds": {"accuracy": 0.8, "f1_macro": 0.75}},
}


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_params(**sections: dict[str, Any]):
    from tasks.config import parse_params

    return parse_params(_merge(FAST_PARAMS, sections))


def separable_frame(
    n: int = 90, labels: Sequence[Any] = ("no", "yes"), seed: int = 0, target: str = "label"
) -> pd.DataFrame:
    """Balanced classes that x1 separates cleanly; x2 is noise; colour a categorical column."""
    rng = np.random.default_rng(seed)
    k = np.arange(n) % len(labels)
    return pd.DataFrame(
        {
            "x1": k * 4.0 + rng.normal(0, 0.5, n),
            "x2": rng.normal(0, 1, n),
            "colour": rng.choice(["red", "green", "blue"], n),
            target: [labels[i] for i in k],
        }
    )


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models train several times faster on one intra-op thread, above all on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project root, made the cwd for the test."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def make_params() -> Callable[..., Any]:
    """make_params(train={"epochs": 3}) -> Params: fast defaults with per-section overrides."""
    return build_params


@pytest.fixture
def make_frame() -> Callable[..., pd.DataFrame]:
    """make_frame(n=90, labels=("no", "yes"), seed=0) -> a tiny, cleanly separable frame."""
    return separable_frame


@pytest.fixture(scope="session")
def _fitted_project_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ingest + train once per session on a 200-row CSV; tests get a copy."""
    import torch

    from tasks import ingest, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fitted")
    separable_frame(n=200, seed=1).to_csv(root / "data.csv", index=False)
    params = build_params(ingest={"source": "data.csv"})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        ingest.run(params)
        train.run(params)
    torch.set_num_threads(threads)
    return root


@pytest.fixture
def fitted_project(_fitted_project_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project (the cwd) with data.csv, data/splits/*, data/ingest.json and models/model.pt."""
    root = tmp_path / "project"
    shutil.copytree(_fitted_project_template, root)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def fitted_params() -> Any:
    """The params the fitted project was built with."""
    return build_params(ingest={"source": "data.csv"})
