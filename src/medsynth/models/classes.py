"""Carrying trained weights onto another label table, class by class (fine-tuning).

Two kinds of tensors depend on the label table: the generator's convolutions
that read the one-hot label map (plus noise), whose input channels are one
block of classes per slice of context, and the discriminator's output head,
one channel per class after the "fake" channel. Every other tensor is the same
whichever classes a run has. A class shared by both tables (matched by name)
keeps its channels; a new class keeps the target's fresh initialisation; a
dropped class's channels are left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassAxis:
    """Where a tensor is indexed by class: along ``dim``, after ``offset`` other channels, in
    ``groups`` consecutive blocks of one channel per class; channels after them are copied."""

    dim: int
    offset: int = 0
    groups: int = 1


@dataclass(frozen=True)
class ClassMatch:
    """Target class id -> source class id (None: new), with the names of each kind."""

    mapping: tuple[int | None, ...]
    shared: tuple[str, ...]
    new: tuple[str, ...]
    dropped: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...] = ()  # (dropped, new) of identical label values: a rename, most likely

    @property
    def identity(self) -> bool:
        """Same classes in the same order: every tensor carries over unchanged."""
        return not self.new and not self.dropped and self.mapping == tuple(range(len(self.mapping)))


def match_classes(source: Sequence[str], target: Sequence[str],
                  source_values: Mapping[str, Sequence[int]] | None = None,
                  target_values: Mapping[str, Sequence[int]] | None = None) -> ClassMatch:
    """Classes matched by name; with both tables' label values (name -> values), a dropped class and a
    new one of the same values are warned about: most likely one class renamed (``kidney`` ->
    ``kidneys``), which by name starts afresh. Where the source stores only names (an EMA snapshot)
    no such warning can be made."""
    index = {name: i for i, name in enumerate(source)}
    mapping = tuple(index.get(name) for name in target)
    new = tuple(n for n in target if n not in index)
    dropped = tuple(n for n in source if n not in set(target))
    renamed = _renamed(dropped, new, source_values or {}, target_values or {})
    for old, name in renamed:
        log.warning("class %r of the checkpoint and class %r of this run's label table have the same label values "
                    "%s: if it is one class renamed, give it one name in both tables, or it starts from a fresh "
                    "initialisation and %r's weights are dropped", old, name, sorted(source_values[old]), old)
    return ClassMatch(mapping, tuple(n for n in target if n in index), new, dropped, renamed)


def _renamed(dropped: Sequence[str], new: Sequence[str], source_values: Mapping[str, Sequence[int]],
             target_values: Mapping[str, Sequence[int]]) -> tuple[tuple[str, str], ...]:
    """(dropped, new) pairs with the same non-empty set of label values (a derived body class has none)."""
    values = {n: frozenset(target_values[n]) for n in new if target_values.get(n)}
    return tuple((old, name) for old in dropped if source_values.get(old)
                 for name in new if values.get(name) == frozenset(source_values[old]))


def _channel_pairs(axis: ClassAxis, mapping: Sequence[int | None], n_src: int, size_src: int,
                   size_dst: int) -> tuple[list[int], list[int]]:
    n_dst = len(mapping)
    tail = size_dst - axis.offset - axis.groups * n_dst
    if tail < 0 or tail != size_src - axis.offset - axis.groups * n_src:
        raise ValueError(f"{size_src} channels do not hold {axis.groups} block(s) of {n_src} classes the way "
                         f"{size_dst} hold {axis.groups} of {n_dst}")
    dst, src = list(range(axis.offset)), list(range(axis.offset))
    for g in range(axis.groups):
        for new, old in enumerate(mapping):
            if old is not None:
                dst.append(axis.offset + g * n_dst + new)
                src.append(axis.offset + g * n_src + old)
    dst += [axis.offset + axis.groups * n_dst + t for t in range(tail)]
    src += [axis.offset + axis.groups * n_src + t for t in range(tail)]
    return src, dst


def remap_tensor(source: torch.Tensor, target: torch.Tensor, axis: ClassAxis, mapping: Sequence[int | None],
                 n_src: int) -> torch.Tensor:
    """``target`` (freshly initialised) with the channels of shared classes, and all channels that are
    not per class, taken from ``source``."""
    others_src = source.shape[: axis.dim] + source.shape[axis.dim + 1 :]
    others_dst = target.shape[: axis.dim] + target.shape[axis.dim + 1 :]
    if others_src != others_dst:
        raise ValueError(f"shape {tuple(source.shape)} does not fit {tuple(target.shape)}")
    src, dst = _channel_pairs(axis, mapping, n_src, source.shape[axis.dim], target.shape[axis.dim])
    out = target.detach().clone()
    index = torch.tensor(dst, dtype=torch.long, device=out.device)
    picked = source.detach().to(out.device, out.dtype).index_select(axis.dim, torch.tensor(src, dtype=torch.long,
                                                                                              device=out.device))
    return out.index_copy_(axis.dim, index, picked)


def remap_state(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                axes: Mapping[str, ClassAxis], mapping: Sequence[int | None], n_src: int) -> dict[str, torch.Tensor]:
    """A state dict shaped as ``target``: per-class tensors (``axes``) remapped, all others copied.

    Raises ``ValueError`` naming the first tensor that is missing, extra or of another shape: the two
    networks are not the same architecture.
    """
    missing, extra = sorted(set(target) - set(source)), sorted(set(source) - set(target))
    if missing or extra:
        raise ValueError(f"other layers: {'missing ' + missing[0] if missing else 'extra ' + extra[0]}"
                         f" ({len(missing)} missing, {len(extra)} extra)")
    out = {}
    for key, dst in target.items():
        src = source[key]
        if key in axes:
            try:
                out[key] = remap_tensor(src, dst, axes[key], mapping, n_src)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from exc
        elif src.shape != dst.shape:
            raise ValueError(f"{key}: shape {tuple(src.shape)}, this run's {tuple(dst.shape)}")
        else:
            out[key] = src.detach().clone()
    return out
