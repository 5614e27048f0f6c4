"""train: the one training loop (every model family), with early stopping, checkpoints and resume."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks.config import PARAMS_FILE, Params, TrainParams
from tasks.distributed import SINGLE, Group, join_group, launch, leave_group, under_torchrun
from tasks.errors import ShipyardError, stage_main
from tasks.families import Split, family, ingest_report, load_split, plain_order, train_setting
from tasks.features import encode_labels, label_values
from tasks.io import atomic_write, read_json, write_json
from tasks.model import Trained, save_model
from tasks.paths import CHECKPOINT_DIR, MODEL_FILE, TRAIN_REPORT

log = logging.getLogger("shipyard.train")

CHECKPOINT = "last.pt"
PROGRESS_LOG_SECONDS = 10  # no progress bar (a log, a pipe, the flow): an epoch line at most this often


@dataclass
class History:
    epoch: int = 0
    best_epoch: int = 0
    best_score: float = -float("inf")
    best_state: dict[str, torch.Tensor] | None = None
    epochs: list[dict[str, float]] = field(default_factory=list)


def select_device(preference: str, group: Group = SINGLE) -> torch.device:
    """CUDA when asked for or available (auto), else CPU; asking for CUDA without one is an error.
    In a training group each process takes the GPU of its local rank."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ShipyardError("train.device is 'cuda' but no CUDA device is available")
    use_cuda = preference == "cuda" or (preference == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", group.local_rank) if use_cuda else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if use_cuda else "CPU"
    log.info("training on %s (%s)%s", device, name, ", bf16 autocast" if use_cuda else "")
    return device


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


Take = Callable[[list[torch.Tensor], Any], list[torch.Tensor]]


def plain_take(inputs: list[torch.Tensor], index: Any) -> list[torch.Tensor]:
    return [x[index] for x in inputs]


def evaluate_batches(
    model: nn.Module, inputs: list[torch.Tensor], y: torch.Tensor, batch: int, take: Take = plain_take
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a split, without gradients."""
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad(), autocast(y.device):
        for start in range(0, len(y), batch):
            rows = slice(start, start + batch)
            logits = model(*take(inputs, rows))[0].float()
            loss += nn.functional.cross_entropy(logits, y[rows], reduction="sum").item()
            correct += (logits.argmax(1) == y[rows]).sum().item()
    return loss / len(y), correct / len(y)


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


Data = tuple[list[torch.Tensor], torch.Tensor]  # a split's device-resident inputs and label codes


def fit(
    model: nn.Module,
    train: Data,
    val: Data,
    params: TrainParams,
    checkpoint: Path,
    resume: bool = False,
    take: Take = plain_take,
    order: Callable[[list[torch.Tensor], int], torch.Tensor] = plain_order,
    group: Group = SINGLE,
) -> History:
    """The loop for every family: shuffled mini-batches of device-resident tensors, early stopping on
    validation accuracy (ties: loss), a checkpoint each epoch. `params` must be resolved (no nulls).
    In a training group each process steps through its shard with a share of the batch, and the
    gradients, losses and validation figures are averaged over the group, so all ranks stop together."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    x, y = train
    device = y.device
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    history = load_checkpoint(checkpoint, model, optimizer) if resume and checkpoint.exists() else History()
    if history.epoch:
        log.info("resuming from %s after epoch %d", checkpoint, history.epoch)
    step = group.wrap(model, device)
    step = torch.compile(step) if params.compile else step
    batch = group.batch_size(params.batch_size)
    columns = [
        TextColumn("train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    ]
    console = Console(stderr=True)
    bar_shown = console.is_terminal and group.is_main
    logged = time.monotonic()
    with Progress(*columns, console=console, transient=True, disable=not bar_shown) as progress:
        bar = progress.add_task("epochs", total=params.epochs, completed=history.epoch, status="")
        while history.epoch < params.epochs and history.epoch - history.best_epoch < params.patience:
            model.train()
            rows = group.shard(group.same_order(order(x, params.batch_size)), history.epoch)
            total = 0.0
            for start in range(0, len(rows), batch):
                index = rows[start : start + batch]
                with autocast(device):
                    loss = nn.functional.cross_entropy(step(*take(x, index))[0].float(), y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(index)
            val_loss, val_acc = evaluate_batches(step, *val, batch=max(params.batch_size, 256), take=take)
            train_loss, val_loss, val_acc = group.mean([total / len(rows), val_loss, val_acc], device)
            history.epoch += 1
            history.epochs.append(
                {
                    "epoch": history.epoch,
                    "loss": train_loss,
                    "val_loss": val_loss,
                    "val_accuracy": val_acc,
                }
            )
            score = val_acc - 1e-3 * val_loss
            if score > history.best_score:
                history.best_score, history.best_epoch = score, history.epoch
                history.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if group.is_main:
                save_checkpoint(checkpoint, model, optimizer, history)
            status = f"loss {train_loss:.4f}  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}"
            progress.update(bar, completed=history.epoch, status=status)
            if not bar_shown and time.monotonic() - logged >= PROGRESS_LOG_SECONDS:
                log.info("epoch %d/%d: %s", history.epoch, params.epochs, status)
                logged = time.monotonic()
    if history.best_state is not None:
        model.load_state_dict(history.best_state)
    return history


def resolve(params: TrainParams, model: str) -> TrainParams:
    """The train params with the chosen model and its defaults in place of nulls."""
    settings = {key: train_setting(params, model, key) for key in ("epochs", "batch_size", "lr", "hidden")}
    return params.model_copy(update={"model": model, **settings})


def to_device(split: Split, trained: Trained, device: torch.device, target: str) -> Data:
    """Encode a split once and move it to the device: no per-batch host work in the loop."""
    inputs = [
        torch.from_numpy(np.ascontiguousarray(a)).to(device)
        for a in trained.family.encode(split, trained.prep)
    ]
    y = torch.from_numpy(encode_labels(split.frame[target], trained.labels)).to(device)
    return inputs, y


def run(
    params: Params,
    resume: bool = False,
    devices: int | None = None,
    nodes: int | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """Train and save the model; more than one process (train.devices × train.nodes, or the
    `devices`/`nodes` given) runs the same training under torchrun and returns rank 0's report."""
    given = {key: value for key, value in (("devices", devices), ("nodes", nodes)) if value}
    train = params.train.model_copy(update=given)
    params = params.model_copy(update={"train": train})
    if train.devices * train.nodes > 1 and not under_torchrun():
        return train_with_torchrun(params, resume, endpoint)
    group = join_group(train.device)
    try:
        return train_in_group(params, resume, group)
    finally:
        leave_group(group)


def train_with_torchrun(params: Params, resume: bool, endpoint: str | None) -> dict[str, Any]:
    """Hand these exact params to the torchrun processes (through a file) and wait for them."""
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory(prefix="shipyard-train-") as folder:
        params_file = Path(folder) / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True)), "utf-8")
        launch(params.train.devices, params.train.nodes, params_file, resume, endpoint)
    return read_json(TRAIN_REPORT)


def train_in_group(params: Params, resume: bool, group: Group) -> dict[str, Any]:
    ingest = ingest_report()
    task, target = ingest["task"], ingest["target"]
    kind = family(task)
    train_split, val_split = load_split("train", task), load_split("val", task)
    seed_everything(params.train.seed)
    device = select_device(params.train.device, group)
    settings = resolve(params.train, kind.choose_model(params.train.model))
    prep = kind.fit(train_split, ingest, params)
    labels = label_values(train_split.frame[target])
    network = kind.build(settings.model, prep, len(labels), settings, pretrained=True)
    trained = Trained(network.to(device), task, settings.model, prep, labels, settings)
    train, val = (to_device(s, trained, device, target) for s in (train_split, val_split))
    log.info(
        "%s model '%s': %s parameters, %d training rows",
        task,
        settings.model,
        f"{sum(p.numel() for p in network.parameters()):,}",
        len(train_split),
    )
    started = time.perf_counter()
    history = fit(
        network,
        train,
        val,
        settings,
        CHECKPOINT_DIR / CHECKPOINT,
        resume=resume,
        take=kind.take,
        order=kind.order,
        group=group,
    )
    seconds = time.perf_counter() - started
    if not group.is_main:
        return {}
    trained.network = network.cpu()
    save_model(MODEL_FILE, trained)
    best = history.epochs[history.best_epoch - 1]
    report = {
        "task": task,
        "model": settings.model,
        "parameters": sum(p.numel() for p in network.parameters()),
        "device": str(device),
        "processes": group.world,
        "epochs_run": history.epoch,
        "best_epoch": history.best_epoch,
        "best_val_accuracy": best["val_accuracy"],
        "best_val_loss": best["val_loss"],
        "seconds": round(seconds, 3),
        "samples_per_second": round(len(train_split) * history.epoch / seconds, 1) if seconds else None,
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
    parser.add_argument("--devices", type=int, help="processes on this node (default: train.devices)")
    parser.add_argument("--nodes", type=int, help="machines (default: train.nodes)")
    parser.add_argument("--rdzv-endpoint", help="host:port of torchrun's rendezvous, for several nodes")
    parser.add_argument("--params", default=str(PARAMS_FILE), help="the params file (default: params.yaml)")
    args = parser.parse_args(argv)
    for flag in ("devices", "nodes"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    overrides = {"devices": args.devices, "nodes": args.nodes, "endpoint": args.rdzv_endpoint}
    stage_main(run, params_file=args.params, resume=args.resume, **overrides)


if __name__ == "__main__":
    main()
