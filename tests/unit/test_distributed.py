"""Data-parallel training: torchrun's command, and a real 2-process gloo run against one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks import evaluate, train
from tasks.distributed import RDZV_ENV, Group, torchrun_command
from tasks.errors import ShipyardError
from tasks.paths import CHECKPOINT_DIR, TRAIN_REPORT

# Two processes each take half of every batch and DDP averages their gradients: with dropout off this is
# the single-process step up to float rounding, so the two runs must agree closely.
LOSS_TOLERANCE = 1e-4  # per-epoch training and validation loss
METRIC_TOLERANCE = 0.01  # test accuracy and f1_macro


def test_one_node_runs_standalone() -> None:
    command = torchrun_command(2, 1, ["--resume"], endpoint=None)
    assert command[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node=2"]
    assert "--standalone" in command and command[-3:] == ["-m", "tasks.train", "--resume"]


def test_several_nodes_need_a_rendezvous_endpoint() -> None:
    with pytest.raises(ShipyardError, match=f"train.nodes is 2: .*--rdzv-endpoint or {RDZV_ENV}"):
        torchrun_command(4, 2, [], endpoint=None)
    command = torchrun_command(4, 2, [], endpoint="10.0.0.5:29400")
    assert {"--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=10.0.0.5:29400"} <= set(command)
    assert "--standalone" not in command


def test_group_shards_like_distributed_sampler() -> None:
    import torch

    rows = torch.arange(7)
    shards = [Group(rank, 2, rank).shard(rows, epoch=0).tolist() for rank in (0, 1)]
    assert shards == [[0, 2, 4, 6], [1, 3, 5, 0]]  # equal parts, padded from the start
    assert Group(0, 2, 0).batch_size(32) == 16 and Group(0, 3, 0).batch_size(32) == 11
    assert Group().shard(rows, epoch=0) is rows and Group().mean([1.5], torch.device("cpu")) == [1.5]


@pytest.mark.parametrize("flag", ["--devices=0", "--nodes=-1"])
def test_train_refuses_fewer_than_one_device(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        train.main([flag])
    assert exit_.value.code == 2 and f"{flag.split('=')[0]} must be at least 1" in capsys.readouterr().err


def train_and_evaluate(params, **options) -> tuple[dict, dict]:
    report = train.run(params, **options)
    return report, evaluate.run(params)["metrics"]


@pytest.mark.slow
def test_two_gloo_processes_match_one_and_their_checkpoint_resumes_in_one(
    fitted_project: Path, fitted_params
) -> None:
    single, single_metrics = train_and_evaluate(fitted_params)
    assert single["processes"] == 1

    ddp, ddp_metrics = train_and_evaluate(fitted_params, devices=2)
    assert ddp["processes"] == 2 and ddp["device"] == "cpu"
    assert ddp == json.loads(TRAIN_REPORT.read_text(encoding="utf-8"))  # rank 0 wrote it
    assert ddp["epochs_run"] == single["epochs_run"] == fitted_params.train.epochs
    for ours, theirs in zip(ddp["history"], single["history"], strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], abs=LOSS_TOLERANCE)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], abs=LOSS_TOLERANCE)
    for name in ("accuracy", "f1_macro"):
        assert ddp_metrics[name] == pytest.approx(single_metrics[name], abs=METRIC_TOLERANCE)
    assert ddp_metrics["accuracy"] >= 0.9

    # The group's checkpoint carries on in a single process, from where the group stopped.
    epochs = fitted_params.train.epochs
    longer = fitted_params.model_copy(
        update={"train": fitted_params.train.model_copy(update={"epochs": epochs + 3})}
    )
    assert (CHECKPOINT_DIR / train.CHECKPOINT).exists()
    resumed = train.run(longer, resume=True)
    assert resumed["processes"] == 1 and resumed["epochs_run"] == epochs + 3
    assert resumed["history"][:epochs] == ddp["history"]
