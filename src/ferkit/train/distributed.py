"""DistributedDataParallel set-up: the same ``ferkit train`` under ``torchrun --nproc_per_node=N``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as td


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None  # set under torchrun on GPUs: one device per process

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup() -> Context:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU); a plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context()
    if not td.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        td.init_process_group(backend)
    rank = td.get_rank()
    device = None
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return Context(rank, td.get_world_size(), device)


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over all processes (the tensor itself in a single-process run)."""
    if td.is_available() and td.is_initialized():
        t = t.clone()
        td.all_reduce(t)
    return t


def barrier() -> None:
    if td.is_available() and td.is_initialized():
        td.barrier()
