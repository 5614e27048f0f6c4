"""Images: raw uint8 pixels (batch, height, width, channels) in; scaling and normalisation in the graph."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tasks.errors import ShipyardError
from tasks.families import Family, Split, train_setting
from tasks.families.tabular import mlp_head

if TYPE_CHECKING:
    from tasks.config import Params, TrainParams

SMALLEST_MAP = 8  # the CNN adds conv blocks until the feature map is at most this many pixels across
MAX_BLOCKS = 5


class Pixels(nn.Module):
    """uint8 NHWC -> normalised float NCHW, with the training split's per-channel mean and std."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool blocks (32, 64, 128, ... channels) until the map is small, then an MLP head."""

    def __init__(self, prep: dict[str, Any], n_classes: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        self.pixels = Pixels(prep["mean"], prep["std"])
        blocks: list[nn.Module] = []
        channels, height, width = prep["channels"], prep["height"], prep["width"]
        for i in range(MAX_BLOCKS):
            if max(height, width) <= SMALLEST_MAP and i >= 2:
                break
            out = min(32 * 2**i, 128)
            blocks += [
                nn.Conv2d(channels, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels, height, width = out, height // 2, width // 2
        if height < 1 or width < 1:
            raise ShipyardError(f"images of {prep['height']}x{prep['width']} are too small for the CNN")
        self.features = nn.Sequential(*blocks, nn.Flatten(), nn.Dropout(dropout))
        self.head = mlp_head(channels * height * width, hidden, n_classes, dropout)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(self.features(self.pixels(pixels)))
        return logits, torch.softmax(logits, dim=1)


class PixelMLP(nn.Module):
    """The seed documents' baseline: flattened pixels through an MLP (e.g. 784-128-64-10 on MNIST)."""

    def __init__(self, prep: dict[str, Any], n_classes: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        self.pixels = Pixels(prep["mean"], prep["std"])
        size = prep["height"] * prep["width"] * prep["channels"]
        self.mlp = mlp_head(size, hidden, n_classes, dropout)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.mlp(self.pixels(pixels).flatten(1))
        return logits, torch.softmax(logits, dim=1)


class ImageFamily(Family):
    name = "image"
    models = ("cnn", "mlp")
    inputs = ("pixels",)
    axes = {"pixels": {0: "batch"}}

    def fit(self, train: Split, ingest: dict[str, Any], params: Params) -> dict[str, Any]:
        pixels = train.pixels
        scaled = pixels.reshape(-1, pixels.shape[-1]).astype(np.float64) / 255.0
        std = scaled.std(axis=0).round(6)
        return {
            "height": int(pixels.shape[1]),
            "width": int(pixels.shape[2]),
            "channels": int(pixels.shape[3]),
            "mean": scaled.mean(axis=0).round(6).tolist(),
            "std": np.where(std >= 1e-3, std, 1.0).tolist(),  # a constant channel is not scaled
        }

    def encode(self, split: Split, prep: dict[str, Any]) -> list[np.ndarray]:
        expected = (prep["height"], prep["width"], prep["channels"])
        if split.pixels.shape[1:] != expected:
            raise ShipyardError(f"images are {split.pixels.shape[1:]}, the model takes {expected}")
        return [split.pixels]

    def build(
        self, model: str, prep: dict[str, Any], n_classes: int, params: TrainParams, pretrained: bool = False
    ) -> nn.Module:
        network = SmallCNN if model == "cnn" else PixelMLP
        return network(prep, n_classes, train_setting(params, model, "hidden"), params.dropout)
