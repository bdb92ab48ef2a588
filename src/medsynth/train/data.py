"""Slices of many cases held in memory as tensors (the demo and 2D slice sets fit easily)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F



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
    def from_files(cls, files: Sequence[tuple[str, Path]], ram_budget_bytes: float | None = None,
                   spill_dir: Path | None = None) -> "SliceSet":
        """Load ``(case_id, slices.npz)`` pairs, in the sorted order of case ids.

        When the slices would need more than ``ram_budget_bytes``, they are
        written once into memory-mapped files under ``spill_dir`` instead: the
        operating system then keeps the hot part in its page cache and training
        reads batches from disk, rather than running out of memory.
        """
        files = sorted(files)
        shapes = [_npz_shape(Path(p), "images") for _, p in files]
        n = sum(sh[0] for sh in shapes)
        if n == 0:
            raise ValueError(f"no slices in {[str(p) for _, p in files]}: check the slice rule (slice.min_body_fraction)")
        h, w = shapes[0][1:]
        if any(sh[1:] != (h, w) for sh in shapes):
            raise ValueError(f"slices of different sizes in {[str(p) for _, p in files]}; re-run the slice stage")
        if ram_budget_bytes is not None and n * h * w * 4 > ram_budget_bytes:
            if spill_dir is None:
                raise ValueError("slices exceed the RAM budget and no spill folder was given")
            spill_dir.mkdir(parents=True, exist_ok=True)
            images = np.lib.format.open_memmap(spill_dir / "images.npy", "w+", np.float16, (n, 1, h, w))
            labels = np.lib.format.open_memmap(spill_dir / "labels.npy", "w+", np.uint8, (n, h, w))
            masks = np.lib.format.open_memmap(spill_dir / "masks.npy", "w+", np.uint8, (n, 1, h, w))
        else:
            images = np.empty((n, 1, h, w), np.float16)
            labels = np.empty((n, h, w), np.uint8)
            masks = np.empty((n, 1, h, w), np.uint8)
        ids, zs, at = [], [], 0
        for (case_id, path), sh in zip(files, shapes):
            with np.load(path) as f:
                if f["masks"].any() and (f["images"][f["masks"] > 0] == -1).all():
                    raise ValueError(f"{path}: case {case_id!r} has no image (a label-only case); train on a dataset "
                                     "with images, and generate for label-only datasets with "
                                     "experiments.<name>.generate_from")
                images[at : at + sh[0], 0] = f["images"]
                labels[at : at + sh[0]] = f["labels"]
                masks[at : at + sh[0], 0] = f["masks"]
                zs += [int(z) for z in f["z"]]
            ids += [case_id] * sh[0]
            at += sh[0]
        return cls(torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(masks), ids, zs)

    def fingerprint(self) -> str:
        """Which slices are in the set (not their content): decides resume vs fresh start."""
        import hashlib

        key = "|".join(f"{c}:{z}" for c, z in zip(self.case_ids, self.z))
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def evenly_spaced(data: SliceSet, limit: int) -> SliceSet:
    """At most ``limit`` slices spread evenly over the set, first and last included (the set itself when smaller)."""
    if len(data) <= limit:
        return data
    idx = torch.linspace(0, len(data) - 1, limit).round().long()
    return SliceSet(
        data.images[idx], data.labels[idx], data.masks[idx],
        [data.case_ids[i] for i in idx], [data.z[i] for i in idx],
    )


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) class ids -> (B, C, H, W) float one-hot."""
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"label value {int(labels.max())} >= number of classes {num_classes}")
    return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


def _npz_shape(path: Path, key: str) -> tuple[int, ...]:
    """Shape of one array in an uncompressed .npz, read from its header without loading it."""
    import zipfile

    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(fh)
    return tuple(shape)
