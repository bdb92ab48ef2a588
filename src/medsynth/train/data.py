"""Slices of many cases held in memory as tensors (the demo and 2D slice sets fit easily)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medsynth.data.slicing import CaseSlices


@dataclass
class SliceSet:
    """Slices in compact form: float16 images, uint8 labels and masks (4 bytes a pixel, not 13).

    ``batch`` turns a selection into the float32/int64 tensors the networks take.
    """

    images: torch.Tensor  # (N, 1, H, W) float16 in [-1, 1]
    labels: torch.Tensor  # (N, H, W) uint8 class ids
    masks: torch.Tensor  # (N, 1, H, W) uint8 body mask
    case_ids: list[str]
    z: list[int]

    def __post_init__(self) -> None:
        self.images = self.images.to(torch.float16)
        self.labels = self.labels.to(torch.uint8)
        self.masks = self.masks.to(torch.uint8)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: torch.Tensor, device: torch.device, pin: bool = False,
              memory_format: torch.memory_format = torch.contiguous_format
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images float32, labels int64, masks float32) of the slices ``idx`` on ``device``.

        The compact tensors travel; the conversion happens on the device.
        Pinned host memory lets the copy to a GPU overlap with compute.
        """
        parts = [self.images[idx], self.labels[idx], self.masks[idx]]
        if pin:
            parts = [p.pin_memory() for p in parts]
        images, labels, masks = (p.to(device, non_blocking=pin) for p in parts)
        return (images.float().contiguous(memory_format=memory_format), labels.long(), masks.float())

    @classmethod
    def from_files(cls, files: Sequence[tuple[str, Path]]) -> "SliceSet":
        """Load ``(case_id, slices.npz)`` pairs, in the sorted order of case ids."""
        imgs, labs, msks, ids, zs = [], [], [], [], []
        for case_id, path in sorted(files):
            s = CaseSlices.load(Path(path))
            imgs.append(s.images)
            labs.append(s.labels)
            msks.append(s.masks)
            ids += [case_id] * len(s.z)
            zs += [int(z) for z in s.z]
        if not ids:
            raise ValueError(f"no slices in {[str(p) for _, p in files]}: check the slice rule (slice.min_body_fraction)")
        return cls(
            torch.from_numpy(np.concatenate(imgs))[:, None],
            torch.from_numpy(np.concatenate(labs)),
            torch.from_numpy(np.concatenate(msks))[:, None],
            ids,
            zs,
        )

    def fingerprint(self) -> str:
        """Which slices are in the set (not their content): decides resume vs fresh start."""
        import hashlib

        key = "|".join(f"{c}:{z}" for c, z in zip(self.case_ids, self.z))
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) class ids -> (B, C, H, W) float one-hot."""
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"label value {int(labels.max())} >= number of classes {num_classes}")
    return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()
