"""A trained model with everything needed to rebuild it: family, network name, preprocessing, labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks.config import TrainParams
from tasks.errors import ShipyardError
from tasks.families import Family, family
from tasks.io import atomic_write


@dataclass
class Trained:
    network: nn.Module
    task: str
    model: str  # the network's name: mlp, cnn, lstm, minilm
    prep: dict[str, Any]  # the family's preprocessing, fitted on the training split
    labels: list[Any]
    params: TrainParams

    @property
    def family(self) -> Family:
        return family(self.task)

    def predict(self, inputs: list[np.ndarray], batch: int = 256, cut: bool = True) -> tuple[np.ndarray, ...]:
        """(logits, probabilities) of the network over all rows, `batch` rows at a time, without
        gradients; `cut` lets the family cut each batch (texts to their longest), else rows go as given."""
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
        take = self.family.take if cut else (lambda arrays, rows: [a[rows] for a in arrays])
        with torch.no_grad():
            parts = [
                self.network(*take(tensors, slice(i, i + batch))) for i in range(0, len(tensors[0]), batch)
            ]
        return tuple(torch.cat([part[k] for part in parts]).float().numpy() for k in range(2))


def save_model(path: str | Path, trained: Trained) -> None:
    bundle = {
        "format": 2,
        "task": trained.task,
        "model": trained.model,
        "prep": trained.prep,
        "labels": trained.labels,
        "train_params": trained.params.model_dump(),
        "state_dict": trained.network.state_dict(),
    }
    atomic_write(path, lambda tmp: torch.save(bundle, tmp))


def load_model(path: str | Path) -> Trained:
    """Rebuild a saved model on the CPU in eval mode."""
    if not Path(path).exists():
        raise ShipyardError(f"{path}: no trained model; run the train stage first")
    bundle = torch.load(path, map_location="cpu", weights_only=False)
    if bundle.get("format") != 2:
        raise ShipyardError(f"{path}: saved by an older shipyard; train again")
    params = TrainParams.model_validate(bundle["train_params"])
    network = family(bundle["task"]).build(bundle["model"], bundle["prep"], len(bundle["labels"]), params)
    network.load_state_dict(bundle["state_dict"])
    return Trained(network.eval(), bundle["task"], bundle["model"], bundle["prep"], bundle["labels"], params)
