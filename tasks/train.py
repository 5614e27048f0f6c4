"""train: the one training loop (every model family), with early stopping, checkpoints and resume."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tasks.config import Params, TrainParams
from tasks.errors import ShipyardError, stage_main
from tasks.features import encode_frame, encode_labels, fit_features, label_values
from tasks.io import atomic_write, write_json
from tasks.model import build_model, save_model
from tasks.paths import CHECKPOINT_DIR, MODEL_FILE, TRAIN_REPORT, split_path

log = logging.getLogger("shipyard.train")

CHECKPOINT = "last.pt"


@dataclass
class History:
    epoch: int = 0
    best_epoch: int = 0
    best_score: float = -float("inf")
    best_state: dict[str, torch.Tensor] | None = None
    epochs: list[dict[str, float]] = field(default_factory=list)


def select_device(preference: str) -> torch.device:
    """CUDA when asked for or available (auto), else CPU; asking for CUDA without one is an error."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ShipyardError("train.device is 'cuda' but no CUDA device is available")
    use_cuda = preference == "cuda" or (preference == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    name = torch.cuda.get_device_name(0) if use_cuda else "CPU"
    log.info("training on %s (%s)%s", device, name, ", bf16 autocast" if use_cuda else "")
    return device


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def evaluate_batches(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a split, without gradients."""
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad(), autocast(x.device):
        for start in range(0, len(x), batch):
            logits = model(x[start : start + batch])[0].float()
            target = y[start : start + batch]
            loss += nn.functional.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(1) == target).sum().item()
    return loss / len(x), correct / len(x)


def autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, history: History) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": history.__dict__,
        "rng": torch.get_rng_state(),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> History:
    state = torch.load(path, map_location="cpu", weights_only=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise ShipyardError(
            f"{path}: checkpoint does not match the current model; train without --resume"
        ) from None
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return History(**state["history"])


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    params: TrainParams,
    checkpoint: Path,
    resume: bool = False,
) -> History:
    """The loop: shuffled mini-batches on the device, early stopping on validation accuracy (ties: loss)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    device = train[0].device
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    history = load_checkpoint(checkpoint, model, optimizer) if resume and checkpoint.exists() else History()
    if history.epoch:
        log.info("resuming from %s after epoch %d", checkpoint, history.epoch)
    x, y = train
    columns = [
        TextColumn("train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, transient=True) as progress:
        bar = progress.add_task("epochs", total=params.epochs, completed=history.epoch, status="")
        while history.epoch < params.epochs and history.epoch - history.best_epoch < params.patience:
            model.train()
            order = torch.randperm(len(x), device=device)
            total = 0.0
            for start in range(0, len(x), params.batch_size):
                index = order[start : start + params.batch_size]
                with autocast(device):
                    loss = nn.functional.cross_entropy(model(x[index])[0].float(), y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(index)
            val_loss, val_acc = evaluate_batches(model, *val, batch=1024)
            history.epoch += 1
            history.epochs.append(
                {
                    "epoch": history.epoch,
                    "loss": total / len(x),
                    "val_loss": val_loss,
                    "val_accuracy": val_acc,
                }
            )
            score = val_acc - 1e-3 * val_loss
            if score > history.best_score:
                history.best_score, history.best_epoch = score, history.epoch
                history.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            save_checkpoint(checkpoint, model, optimizer, history)
            status = f"loss {total / len(x):.4f}  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}"
            progress.update(bar, completed=history.epoch, status=status)
    if history.best_state is not None:
        model.load_state_dict(history.best_state)
    return history


def to_tensors(frame: pd.DataFrame, target: str, spec, labels: list[Any], device: torch.device):
    x = torch.from_numpy(encode_frame(frame, spec)).to(device)
    y = torch.from_numpy(encode_labels(frame[target], labels)).to(device)
    return x, y


def run(params: Params, resume: bool = False) -> dict[str, Any]:
    target = params.ingest.target
    train_frame = pd.read_parquet(split_path("train"))
    val_frame = pd.read_parquet(split_path("val"))
    seed_everything(params.train.seed)
    device = select_device(params.train.device)
    spec = fit_features(train_frame, target)
    labels = label_values(train_frame[target])
    train = to_tensors(train_frame, target, spec, labels, device)
    val = to_tensors(val_frame, target, spec, labels, device)
    model = build_model(spec, len(labels), params.train).to(device)
    started = time.perf_counter()
    history = fit(model, train, val, params.train, CHECKPOINT_DIR / CHECKPOINT, resume=resume)
    seconds = time.perf_counter() - started
    save_model(MODEL_FILE, model.cpu(), spec, labels, params.train)
    best = history.epochs[history.best_epoch - 1]
    report = {
        "device": str(device),
        "epochs_run": history.epoch,
        "best_epoch": history.best_epoch,
        "best_val_accuracy": best["val_accuracy"],
        "best_val_loss": best["val_loss"],
        "seconds": round(seconds, 3),
        "history": history.epochs,
    }
    write_json(TRAIN_REPORT, report)
    log.info(
        "trained %d epochs in %.1f s; best epoch %d: val_accuracy %.4f",
        history.epoch,
        seconds,
        history.best_epoch,
        best["val_accuracy"],
    )
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    stage_main(run, resume=parser.parse_args(argv).resume)


if __name__ == "__main__":
    main()
