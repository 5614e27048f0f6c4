"""Task families: tabular, image and text share every stage; a family differs only by what is here.

A family knows how to fit its preprocessing on the training split, turn a split into the named input
arrays of its networks, build a network (which returns (logits, probabilities)), and cut a mini-batch.
The training loop, evaluation, export and the registry are the same for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tasks.errors import ShipyardError
from tasks.io import read_json
from tasks.paths import INGEST_REPORT, QUARANTINE_FILE, pixels_path, split_path

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tasks.config import Params, TrainParams

TASKS = ("tabular", "image", "text")

# What `null` means in train params, per model.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"epochs": 60, "batch_size": 64, "lr": 3e-3, "hidden": [64, 32]},
    "cnn": {"epochs": 12, "batch_size": 128, "lr": 2e-3, "hidden": [128]},
    "lstm": {"epochs": 15, "batch_size": 64, "lr": 3e-3, "hidden": [128]},
    "minilm": {"epochs": 3, "batch_size": 32, "lr": 5e-5, "hidden": []},
}


@dataclass
class Split:
    """One split as ingest wrote it: the table, plus the pixels of an image split."""

    frame: pd.DataFrame
    pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame)


class Family:
    """The interface; see tabular.py, image.py and text.py."""

    name: str
    models: tuple[str, ...]
    inputs: tuple[str, ...]
    axes: dict[str, dict[int, str]]

    def fit(self, train: Split, ingest: dict[str, Any], params: Params) -> dict[str, Any]:
        """The preprocessing, fitted on the training split: plain JSON, kept with the model."""
        raise NotImplementedError

    def encode(self, split: Split, prep: dict[str, Any]) -> list[np.ndarray]:
        """The split as the network's input arrays, in `inputs` order."""
        raise NotImplementedError

    def build(
        self, model: str, prep: dict[str, Any], n_classes: int, params: TrainParams, pretrained: bool = False
    ) -> nn.Module:
        """The network; `pretrained` loads pretrained weights where the model has them (a new model)."""
        raise NotImplementedError

    def order(self, inputs: list[torch.Tensor], batch_size: int) -> torch.Tensor:
        """The rows of one epoch, in order; consecutive `batch_size` slices are the mini-batches."""
        return plain_order(inputs, batch_size)

    def by_length(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Row order for batched inference: shortest first where rows have a length (texts)."""
        return np.arange(len(inputs[0]))

    def take(self, inputs: list[torch.Tensor], index: torch.Tensor | slice) -> list[torch.Tensor]:
        """A mini-batch of the device-resident inputs (text trims padding here)."""
        return [x[index] for x in inputs]

    def files(self, prep: dict[str, Any], folder: Path) -> dict[str, Any]:
        """Write the files serving needs beside the ONNX model; returns the manifest's preprocessing."""
        return dict(prep)

    def choose_model(self, requested: str) -> str:
        if requested == "auto":
            return self.models[0]
        if requested not in self.models:
            raise ShipyardError(
                f"train.model: '{requested}' is not a {self.name} model; choose one of {list(self.models)}"
            )
        return requested


def plain_order(inputs: list[torch.Tensor], batch_size: int) -> torch.Tensor:
    """Every row once, shuffled."""
    import torch

    return torch.randperm(len(inputs[0]), device=inputs[0].device)


def family(task: str) -> Family:
    from tasks.families.image import ImageFamily
    from tasks.families.tabular import TabularFamily
    from tasks.families.text import TextFamily

    known = {"tabular": TabularFamily, "image": ImageFamily, "text": TextFamily}
    if task not in known:
        raise ShipyardError(f"unknown task '{task}'; choose one of {list(known)}")
    return known[task]()


def train_setting(params: TrainParams, model: str, key: str) -> Any:
    """A train param, or the model's default where params say null."""
    value = getattr(params, key)
    return MODEL_DEFAULTS[model][key] if value is None else value


def ingest_report() -> dict[str, Any]:
    if not INGEST_REPORT.exists():
        raise ShipyardError(f"{INGEST_REPORT} not found; run the ingest stage first")
    report = read_json(INGEST_REPORT)
    report.setdefault("task", "tabular")
    return report


def load_split(name: str, task: str) -> Split:
    """A split as ingest wrote it, less the rows validate quarantined (and their pixels, for images)."""
    path = split_path(name)
    if not path.exists():
        raise ShipyardError(f"{path}: split not found; run the ingest stage first")
    frame = pd.read_parquet(path)
    pixels = np.load(pixels_path(name)) if task == "image" else None
    dropped = quarantined_rows(name, len(frame))
    if dropped:
        keep = np.setdiff1d(np.arange(len(frame)), dropped)
        frame = frame.iloc[keep].reset_index(drop=True)
        pixels = pixels[keep] if pixels is not None else None
    return Split(frame, pixels)


def quarantined_rows(name: str, rows: int) -> list[int]:
    """Row positions of the split that validate set aside (data/quarantine.json); none without the file."""
    if not QUARANTINE_FILE.exists():
        return []
    again = "run the validate stage again"
    try:
        listed = read_json(QUARANTINE_FILE)
    except (OSError, ValueError) as err:
        raise ShipyardError(f"{QUARANTINE_FILE}: cannot read it: {err}; {again}") from None
    positions = listed.get(name, []) if isinstance(listed, dict) else None
    if not isinstance(positions, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 <= p < rows for p in positions
    ):
        raise ShipyardError(
            f"{QUARANTINE_FILE}: '{name}' must list row positions of the split (0 to {rows - 1}); {again}"
        )
    return positions
