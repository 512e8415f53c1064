"""Data-parallel training under torchrun: NCCL on GPUs, gloo on CPUs, one writer.

``torchrun --nproc_per_node N -m advlab.cli.main train ...`` (or ``defend``) runs unchanged: each
process takes its share of every global batch and DistributedDataParallel averages the gradients,
so N processes follow the same trajectory as one process with the same global batch size. Only
rank 0 writes checkpoints, run folders and reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun describes (no-op for a single process)."""
    if not launched_by_torchrun():
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return context()


def context() -> DistContext:
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def local_device(device: torch.device) -> torch.device:
    """On GPUs each process drives the GPU of its local rank."""
    if device.type == "cuda" and context().enabled:
        return torch.device("cuda", context().local_rank)
    return device


def barrier() -> None:
    if context().enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not context().enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_rows(index: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every process's (index, rows) pairs, concatenated in rank order (shares may differ in length by
    a few rows: each is padded to the longest for the collective, then trimmed)."""
    if not context().enabled:
        return index, rows
    world = context().world_size
    sizes = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([len(index)], dtype=torch.long, device=rows.device))
    longest = int(max(s.item() for s in sizes))
    padded_index = torch.zeros(longest, dtype=index.dtype, device=rows.device)
    padded_rows = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded_index[: len(index)], padded_rows[: len(rows)] = index, rows
    indices = [torch.empty_like(padded_index) for _ in range(world)]
    gathered = [torch.empty_like(padded_rows) for _ in range(world)]
    dist.all_gather(indices, padded_index)
    dist.all_gather(gathered, padded_rows.contiguous())
    n = [int(s.item()) for s in sizes]
    return (torch.cat([i[:k] for i, k in zip(indices, n, strict=True)]),
            torch.cat([r[:k] for r, k in zip(gathered, n, strict=True)]))
