"""Data-parallel training with torch.distributed: the launch (torchrun) and what the loop needs of it.

`train.devices` × `train.nodes` > 1 starts torchrun, which runs `python -m tasks.train` once per device;
each process joins the group (NCCL on GPUs, gloo on CPUs), keeps the whole split in memory and trains
on its DistributedSampler shard of every epoch's order, with DistributedDataParallel averaging the
gradients. Rank 0 alone writes checkpoints, the model, the report and logs. With one process every
method here is a no-op, so the one training loop serves both.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tasks.errors import ShipyardError

log = logging.getLogger("shipyard.train")

RDZV_ENV = "SHIPYARD_RDZV_ENDPOINT"  # host:port of the rendezvous when train.nodes > 1


@dataclass(frozen=True)
class Group:
    """This process's place in the training group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def batch_size(self, global_batch: int) -> int:
        """Rows per process per step, so that a step still sees about `global_batch` rows in all."""
        return max(1, math.ceil(global_batch / self.world))

    def same_order(self, rows: torch.Tensor) -> torch.Tensor:
        """Rank 0's epoch order on every rank, whatever each rank's random state."""
        if self.active:
            torch.distributed.broadcast(rows, src=0)
        return rows

    def shard(self, rows: torch.Tensor, epoch: int) -> torch.Tensor:
        """This rank's part of the epoch's order, as DistributedSampler deals it (padded to equal parts)."""
        if not self.active:
            return rows
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(range(len(rows)), self.world, self.rank, shuffle=False)
        sampler.set_epoch(epoch)
        return rows[torch.tensor(list(sampler), device=rows.device)]

    def mean(self, values: list[float], device: torch.device) -> list[float]:
        """The mean of each value over the ranks (identical on every rank afterwards)."""
        if not self.active:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return (tensor / self.world).tolist()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


SINGLE = Group()  # one process, no group


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ and "WORLD_SIZE" in os.environ


def join_group(device_preference: str) -> Group:
    """Join the process group torchrun set up (a no-op Group outside torchrun)."""
    if not under_torchrun():
        return SINGLE
    group = Group(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    use_cuda = device_preference != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(group.local_rank)
    torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    if not group.is_main:
        logging.getLogger("shipyard").setLevel(logging.WARNING)
    return group


def leave_group(group: Group) -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def torchrun_command(devices: int, nodes: int, stage_args: list[str], endpoint: str | None) -> list[str]:
    """torchrun running `python -m tasks.train` once per device on this node."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={devices}"]
    if nodes == 1:
        command.append("--standalone")
    else:
        if not endpoint:
            raise ShipyardError(
                f"train.nodes is {nodes}: give the rendezvous host:port that every node can reach with "
                f"--rdzv-endpoint or {RDZV_ENV} (the same on all nodes), then start the run on each node"
            )
        command += [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}"]
    return command + ["-m", "tasks.train", *stage_args]


def launch(devices: int, nodes: int, params_file: Path, resume: bool, endpoint: str | None) -> None:
    """Run the training group to its end; a failed process fails the stage with its exit code."""
    args = ["--params", str(params_file)] + (["--resume"] if resume else [])
    command = torchrun_command(devices, nodes, args, endpoint or os.environ.get(RDZV_ENV))
    log.info("launching %d training processes per node on %d node(s) with torchrun", devices, nodes)
    threads = str(max(1, (os.cpu_count() or 1) // devices))  # torchrun's own default is 1, with a banner
    result = subprocess.run(command, check=False, env={"OMP_NUM_THREADS": threads, **os.environ})
    if result.returncode:
        raise ShipyardError(f"distributed training failed (torchrun exited with code {result.returncode})")
