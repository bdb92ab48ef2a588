"""The networks made ready for the training device: memory format, torch.compile, DDP."""

from __future__ import annotations

import torch

from medsynth.train import distributed as ddp
from medsynth.models.devices import uses_channels_last
from medsynth.train.step import Nets


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
