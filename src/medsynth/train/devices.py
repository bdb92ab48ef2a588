"""Which device trains, and the networks made ready for it: memory format, torch.compile, DDP."""

from __future__ import annotations

import torch

from medsynth.train import distributed as ddp
from medsynth.train.step import Nets


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {name!r} but CUDA is not available on this machine")
    return torch.device(name)


def describe_hardware(device: torch.device, world_size: int) -> str:
    """What a job trained on, for jobs.tsv and the model card: e.g. '4 x NVIDIA H200' or 'CPU x86_64, 2 threads'."""
    if device.type == "cuda":
        return f"{world_size} x {torch.cuda.get_device_name(device)}"
    import platform

    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads" + (f", {world_size} processes"
                                                                             if world_size > 1 else "")


def uses_channels_last(device: torch.device, channels_last: bool) -> bool:
    """``train.channels_last`` applies on CUDA only (on the CPU it is slower)."""
    return device.type == "cuda" and channels_last


def prepare_nets(nets: Nets, device: torch.device, channels_last: bool, compile: bool, world_size: int) -> None:
    """Device placement, channels_last, torch.compile and DDP wrapping of the forward callables.

    Runs after resuming, so that the broadcasts here and the DDP wrapper (which
    broadcasts rank 0's parameters when it is built) see the restored weights.
    """
    if uses_channels_last(device, channels_last):
        for net in (nets.G, nets.D, nets.Du, nets.ema.model):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    for net in (nets.G, nets.D, nets.Du):
        if net is not None:
            ddp.broadcast_module(net)
    if compile:
        nets.g_call = torch.compile(nets.G)
        nets.d_call = torch.compile(nets.D)
        if nets.Du is not None:
            nets.du_call = torch.compile(nets.Du)
    if world_size > 1:
        nets.g_call = _ddp_wrap(nets.g_call if compile else nets.G, device)


def _ddp_wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    # G has one forward and one backward per step: the DDP wrapper fits it (the
    # discriminators average their gradients by hand, see step.allreduce_grads).
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # No buffer sync in forward (instance norm has no running statistics); the keyword
    # was renamed in torch 2.14, and older versions know only the old one.
    sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else "broadcast_buffers")
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   **{sync: False})
