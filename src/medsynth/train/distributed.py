"""Multi-process (multi-GPU) training: process group set-up from torchrun or SLURM's srun.

Launch with ``torchrun --nproc_per_node=N`` (or ``srun`` with one task per GPU):
each process trains on its own batches, gradients are averaged, and only rank 0
logs and writes files.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's or SLURM's environment; (0, 1, 0) otherwise."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ.get("RANK", 0)), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"]), int(os.environ.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def setup(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the process group when launched with several processes; returns (rank, world size, device)."""
    rank, size, local = world()
    if size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=size,
                                timeout=timedelta(minutes=30))
    return rank, size, device


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    return not active() or dist.get_rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_module(module: nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if active():
        for t in (*module.parameters(), *module.buffers()):
            dist.broadcast(t.data, 0)


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any rank (a signal reached one process)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
