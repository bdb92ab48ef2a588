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
    images: torch.Tensor  # (N, 1, H, W) float32 in [-1, 1]
    labels: torch.Tensor  # (N, H, W) int64 class ids
    masks: torch.Tensor  # (N, 1, H, W) float32 body mask
    case_ids: list[str]
    z: list[int]

    def __len__(self) -> int:
        return self.images.shape[0]

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
            torch.from_numpy(np.concatenate(imgs))[:, None].float(),
            torch.from_numpy(np.concatenate(labs)).long(),
            torch.from_numpy(np.concatenate(msks))[:, None].float(),
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
