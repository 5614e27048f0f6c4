"""Networks, and saving/loading a trained model with everything needed to rebuild it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tasks.config import TrainParams
from tasks.features import FeatureSpec
from tasks.io import atomic_write


class TabularMLP(nn.Module):
    """Raw feature vector in, (logits, probabilities) out; imputation and scaling live in the graph.

    Input columns: numeric features (NaN = missing), then one category code per categorical column.
    """

    def __init__(self, spec: FeatureSpec, n_classes: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        self.n_numeric = len(spec.numeric)
        self.register_buffer("fill", torch.tensor([f.fill for f in spec.numeric], dtype=torch.float32))
        self.register_buffer("mean", torch.tensor([f.mean for f in spec.numeric], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([f.std for f in spec.numeric], dtype=torch.float32))
        self.embeddings = nn.ModuleList(
            nn.Embedding(len(f.categories) + 1, min(16, len(f.categories) // 2 + 2)) for f in spec.categorical
        )
        width = self.n_numeric + sum(e.embedding_dim for e in self.embeddings)
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        numeric = features[:, : self.n_numeric]
        numeric = torch.where(torch.isnan(numeric), self.fill, numeric)
        parts = [(numeric - self.mean) / self.std]
        for i, embedding in enumerate(self.embeddings):
            codes = features[:, self.n_numeric + i].nan_to_num(0.0).long()
            parts.append(embedding(codes.clamp(0, embedding.num_embeddings - 1)))
        logits = self.mlp(torch.cat(parts, dim=1))
        return logits, torch.softmax(logits, dim=1)


def build_model(spec: FeatureSpec, n_classes: int, params: TrainParams) -> nn.Module:
    """The network a params `train.model` names (one family so far: tabular MLP)."""
    if params.model == "mlp":
        return TabularMLP(spec, n_classes, params.hidden, params.dropout)
    raise ValueError(f"unknown model {params.model!r}")


def save_model(
    path: str | Path, model: nn.Module, spec: FeatureSpec, labels: list[Any], params: TrainParams
) -> None:
    bundle = {
        "state_dict": model.state_dict(),
        "features": spec.model_dump(),
        "labels": labels,
        "train_params": params.model_dump(),
    }
    atomic_write(path, lambda tmp: torch.save(bundle, tmp))


def load_model(path: str | Path) -> tuple[nn.Module, FeatureSpec, list[Any]]:
    """Rebuild a saved model on the CPU in eval mode, with its feature spec and labels."""
    bundle = torch.load(path, map_location="cpu", weights_only=False)
    spec = FeatureSpec.model_validate(bundle["features"])
    model = build_model(spec, len(bundle["labels"]), TrainParams.model_validate(bundle["train_params"]))
    model.load_state_dict(bundle["state_dict"])
    return model.eval(), spec, bundle["labels"]
