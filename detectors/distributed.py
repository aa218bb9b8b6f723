"""Several processes for one run: ``torchrun --nproc_per_node N``; NCCL on CUDA, gloo on CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from scabench.devices import resolve_device


@dataclass
class Dist:
    """This process's place in the run (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process started the process group (and ends it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device_spec: str) -> tuple[Dist, torch.device]:
    """Resolve ``device_spec`` (:func:`scabench.devices.resolve_device`) and join torchrun's group.

    Under torchrun (``WORLD_SIZE`` > 1) a CUDA run takes the GPU ``LOCAL_RANK`` whatever index
    ``device_spec`` names.
    """
    device = resolve_device(device_spec)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank, owns), device
