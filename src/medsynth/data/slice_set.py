"""Slices of many cases held in memory as tensors (the demo and 2D slice sets fit easily)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medsynth.io.npz import npz_shape
from medsynth.data.slice_context import context_labels, context_offsets, fill_context


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
    # (N, 2k, H, W) uint8: the label maps of each slice's k neighbours below and above
    # (``medsynth.data.slice_context``); no channels without neighbouring-slice context.
    context: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.images = self.images.to(torch.float16)
        self.labels = self.labels.to(torch.uint8)
        self.masks = self.masks.to(torch.uint8)
        if self.context is None:
            self.context = torch.zeros((self.labels.shape[0], 0, *self.labels.shape[1:]), dtype=torch.uint8)
        self.context = self.context.to(torch.uint8)

    @property
    def context_slices(self) -> int:
        return self.context.shape[1] // 2

    def with_context(self, k: int) -> "SliceSet":
        """The same slices with the label maps of their k neighbours each side (edges repeat)."""
        ctx = torch.from_numpy(context_labels(self.labels.numpy(), self.case_ids, self.z, k))
        return SliceSet(self.images, self.labels, self.masks, self.case_ids, self.z, ctx)

    def subset(self, idx: torch.Tensor) -> "SliceSet":
        """The slices ``idx``, with their context (computed on the whole set, so it stays the true neighbours)."""
        return SliceSet(self.images[idx], self.labels[idx], self.masks[idx], [self.case_ids[i] for i in idx],
                        [self.z[i] for i in idx], self.context[idx])

    def context_batch(self, idx: torch.Tensor, device: torch.device, pin: bool = False) -> torch.Tensor:
        """(B, 2k, H, W) int64 neighbour label maps of the slices ``idx`` on ``device``."""
        part = self.context[idx]
        if pin:
            part = part.pin_memory()
        return part.to(device, non_blocking=pin).long()

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
                   spill_dir: Path | None = None, context_slices: int = 0) -> "SliceSet":
        """Load ``(case_id, slices.npz)`` pairs, in the sorted order of case ids, with the label maps of
        ``context_slices`` neighbours each side of every slice (``medsynth.data.slice_context``).

        When the slices would need more than ``ram_budget_bytes``, they are
        written once into memory-mapped files under ``spill_dir`` instead: the
        operating system then keeps the hot part in its page cache and training
        reads batches from disk, rather than running out of memory.
        """
        files = sorted(files)
        shapes = [npz_shape(Path(p), "images") for _, p in files]
        n = sum(sh[0] for sh in shapes)
        if n == 0:
            raise ValueError(f"no slices in {[str(p) for _, p in files]}: check the slice rule (slice.min_body_fraction)")
        h, w = shapes[0][1:]
        if any(sh[1:] != (h, w) for sh in shapes):
            raise ValueError(f"slices of different sizes in {[str(p) for _, p in files]}; re-run the slice stage")
        k2 = len(context_offsets(context_slices))
        spill = ram_budget_bytes is not None and n * h * w * (4 + k2) > ram_budget_bytes
        if spill and spill_dir is None:
            raise ValueError("slices exceed the RAM budget and no spill folder was given")
        alloc = _allocator(spill_dir if spill else None)
        images, labels = alloc("images", np.float16, (n, 1, h, w)), alloc("labels", np.uint8, (n, h, w))
        masks = alloc("masks", np.uint8, (n, 1, h, w))
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
        context = fill_context(alloc("context", np.uint8, (n, k2, h, w)), labels, ids, zs, context_slices)
        return cls(*(torch.from_numpy(a) for a in (images, labels, masks)), ids, zs, torch.from_numpy(context))

    def fingerprint(self) -> str:
        """Which slices are in the set (not their content): decides resume vs fresh start."""
        import hashlib

        key = "|".join(f"{c}:{z}" for c, z in zip(self.case_ids, self.z))
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def evenly_spaced_rows(n: int, limit: int) -> torch.Tensor:
    """The rows ``evenly_spaced`` keeps of a set of ``n`` slices."""
    return torch.arange(n) if n <= limit else torch.linspace(0, n - 1, limit).round().long()


def evenly_spaced(data: SliceSet, limit: int) -> SliceSet:
    """At most ``limit`` slices spread evenly over the set, first and last included (the set itself when smaller)."""
    if len(data) <= limit:
        return data
    return data.subset(evenly_spaced_rows(len(data), limit))


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) class ids -> (B, C, H, W) float one-hot."""
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"label value {int(labels.max())} >= number of classes {num_classes}")
    return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


def generator_input(labels: torch.Tensor, context: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """What the generator is conditioned on: (B, C x (1 + 2k), H, W), the slice's one-hot map first,
    then its neighbours' (``context`` (B, 2k, H, W) class ids, or None / no channels without context)."""
    onehot = one_hot(labels, num_classes)
    if context is None or context.shape[1] == 0:
        return onehot
    b, k2, h, w = context.shape
    near = one_hot(context.reshape(b * k2, h, w), num_classes).reshape(b, k2 * num_classes, h, w)
    return torch.cat([onehot, near], dim=1)


def _allocator(spill_dir: Path | None):
    """``alloc(name, dtype, shape)``: arrays in RAM, or memory-mapped ``<spill_dir>/<name>.npy`` files."""
    if spill_dir is None:
        return lambda name, dtype, shape: np.empty(shape, dtype)
    spill_dir.mkdir(parents=True, exist_ok=True)
    return lambda name, dtype, shape: np.lib.format.open_memmap(spill_dir / f"{name}.npy", "w+", dtype, shape)


def load_slices(files: Sequence[str | Path], ram_gb: float | None = None, spill_dir: Path | None = None,
                context_slices: int = 0) -> SliceSet:
    """``results/slices/<dataset>/cases/<case>/slices.npz`` files -> one set (case id = folder name),
    with ``context_slices`` neighbouring label maps each side.

    In memory up to ``ram_gb`` gigabytes, memory-mapped under ``spill_dir`` beyond that.
    """
    budget = None if ram_gb is None else ram_gb * 1e9
    return SliceSet.from_files([(Path(f).parent.name, Path(f)) for f in files], budget, spill_dir, context_slices)
