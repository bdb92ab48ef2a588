"""Which device a stage runs on: resolved once from the config's name, described for the records."""

from __future__ import annotations

import torch


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
