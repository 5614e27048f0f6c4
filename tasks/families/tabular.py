"""Tables: numeric and categorical columns, one float32 vector per row (see tasks/features.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tasks.families import Family, Split, train_setting
from tasks.features import FeatureSpec, encode_frame, fit_features

if TYPE_CHECKING:
    from tasks.config import Params, TrainParams


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
        self.mlp = mlp_head(width, hidden, n_classes, dropout)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        numeric = features[:, : self.n_numeric]
        numeric = torch.where(torch.isnan(numeric), self.fill, numeric)
        parts = [(numeric - self.mean) / self.std]
        for i, embedding in enumerate(self.embeddings):
            codes = features[:, self.n_numeric + i].nan_to_num(0.0).long()
            parts.append(embedding(codes.clamp(0, embedding.num_embeddings - 1)))
        logits = self.mlp(torch.cat(parts, dim=1))
        return logits, torch.softmax(logits, dim=1)


def mlp_head(width: int, hidden: list[int], n_classes: int, dropout: float) -> nn.Sequential:
    """Linear-ReLU-Dropout blocks down to the class logits (every family's classifier head)."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


class TabularFamily(Family):
    name = "tabular"
    models = ("mlp",)
    inputs = ("features",)
    axes = {"features": {0: "batch"}}

    def fit(self, train: Split, ingest: dict[str, Any], params: Params) -> dict[str, Any]:
        return fit_features(train.frame, ingest["target"]).model_dump()

    def encode(self, split: Split, prep: dict[str, Any]) -> list[np.ndarray]:
        return [encode_frame(split.frame, FeatureSpec.model_validate(prep))]

    def build(
        self, model: str, prep: dict[str, Any], n_classes: int, params: TrainParams, pretrained: bool = False
    ) -> nn.Module:
        hidden = train_setting(params, model, "hidden")
        return TabularMLP(FeatureSpec.model_validate(prep), n_classes, hidden, params.dropout)
