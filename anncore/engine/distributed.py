"""The training job's processes: one process, or one per device under ``torchrun`` (``WORLD_SIZE`` > 1), with
DistributedDataParallel over NCCL on GPUs and gloo on CPUs, and SyncBatchNorm on GPUs (official
``encsync_batchnorm``; PyTorch's SyncBatchNorm runs on GPUs only)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from anncore.device import pick_device


# ---------------------------------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    """This process's place in the job (single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


def init_distributed(device: str) -> tuple[Dist, torch.device]:
    """Join the ``torchrun`` job described by the environment, if any, and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    picked = pick_device(device)
    if world_size == 1:
        return Dist(), picked
    ctx = Dist(int(os.environ["RANK"]), world_size, int(os.environ["LOCAL_RANK"]))
    if picked.type == "cuda":
        picked = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(picked)
    dist.init_process_group("nccl" if picked.type == "cuda" else "gloo")
    return ctx, picked


def sync_batchnorm(model: nn.Module, world_size: int, device: torch.device) -> tuple[nn.Module, bool]:
    """``(model, converted)``: BatchNorm layers become ``SyncBatchNorm`` when several GPU processes train (official
    ``encsync_batchnorm``). PyTorch's SyncBatchNorm raises on CPU tensors, so CPU processes keep their own BN."""
    if world_size > 1 and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model), True
    return model, False
