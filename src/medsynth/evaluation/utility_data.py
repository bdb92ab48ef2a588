"""The utility benchmark's slices as it reads them, in memory that does not grow with the test set:

- the real and the synthetic training slices in one float16 set, filled case by case, the two parts
  views of it (``TrainingSets``): the three segmenters train from it, converting a batch at a time,
  and real+synthetic trains on the whole without a joined copy;
- the test slices a case at a time (``TestCases``), relabelled into the experiment's table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from medsynth.io.npz import npz_shape
from medsynth.data.labels import BODY, class_lookup
from medsynth.data.slice_set import SliceSet


def relabelling(names: Sequence[str], target: Sequence[str], source: str) -> np.ndarray | None:
    """Class id in the table ``names`` -> class id in the table ``target`` (uint8), matched by name; None for
    the same table. A class ``target`` does not name becomes its body: a table's body is the tissue it does
    not name, and every pixel needs a class to train on. ``source`` names the data in messages."""
    if tuple(names) == tuple(target):
        return None
    missing = [n for n in target[1:] if n not in names]
    if missing:
        raise ValueError(f"utility: the label table of {source} lacks {missing} of the experiment's classes "
                         f"{list(target)}: the benchmark scores every class (it is planned only when the image "
                         "dataset labels each of them); label them there")
    return class_lookup(names, target, unknown=list(target).index(BODY)).astype(np.uint8)


def _by_case(files: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """(case id, slices.npz) in the order of case ids, as ``load_slices`` reads them."""
    return sorted((Path(f).parent.name, Path(f)) for f in files)


class TrainingSets(NamedTuple):
    """Real then synthetic training slices in one set (``both``); ``real`` and ``synthetic`` are views of it."""
    real: SliceSet
    synthetic: SliceSet
    both: SliceSet


def load_training_sets(real_files: Sequence[str | Path], real_names: Sequence[str], names: Sequence[str],
                       label_files: Sequence[str | Path], cases_dir: Path, source: str) -> TrainingSets:
    """The image dataset's real training slices (``real_files``, labelled by ``real_names``, relabelled into the
    experiment's table ``names``) and every generated sample of the label dataset's training label maps
    (``label_files``, generate's ``samples.npz`` under ``cases_dir``), each with its label map, filled into
    one preallocated float16 set: no float32 or joined copy of either."""
    from medsynth.inference.generate_cases import generated_cases

    real = _by_case(real_files)
    synthetic = generated_cases(label_files, cases_dir)
    if not synthetic:
        raise ValueError("utility: no synthetic training slices; add train to generate.splits")
    real_n = [npz_shape(p, "images")[0] for _, p in real]
    synthetic_n = [int(np.prod(npz_shape(Path(g), "samples")[:2])) for _, _, g in synthetic]
    size = npz_shape(Path(synthetic[0][1]), "labels")[1:]
    n = sum(real_n) + sum(synthetic_n)
    images, labels = np.empty((n, 1, *size), np.float16), np.empty((n, *size), np.uint8)
    masks = np.empty((n, 1, *size), np.uint8)
    lookup = relabelling(real_names, names, source)
    ids, zs, at = [], [], 0
    for (case_id, path), count in zip(real, real_n):
        with np.load(path) as f:
            images[at:at + count, 0], masks[at:at + count, 0] = f["images"], f["masks"]
            labels[at:at + count] = f["labels"] if lookup is None else lookup[f["labels"]]
            zs += [int(v) for v in f["z"]]
        ids += [case_id] * count
        at += count
    for (case_id, real_path, gen_path), count in zip(synthetic, synthetic_n):
        at, z = _fill_samples(Path(real_path), Path(gen_path), images, labels, masks, at)
        ids += [case_id] * count
        zs += z
    both = SliceSet(*(torch.from_numpy(a) for a in (images, labels, masks)), ids, zs)
    cut = sum(real_n)
    return TrainingSets(_part(both, 0, cut), _part(both, cut, n), both)


def _fill_samples(real_path: Path, gen_path: Path, images: np.ndarray, labels: np.ndarray, masks: np.ndarray,
                  at: int) -> tuple[int, list[int]]:
    """Write every generated sample of one case from ``at`` on, each slice with its label map and the body
    (label > 0) it was generated in; return the next free row and the slices' z."""
    with np.load(real_path) as f:
        label, z = f["labels"], f["z"]
    with np.load(gen_path) as f:
        if not np.array_equal(f["z"], z):
            raise ValueError(f"{gen_path}: slices do not match {real_path}; regenerate")
        samples = f["samples"]
    for sample in samples:
        images[at:at + len(z), 0] = sample
        labels[at:at + len(z)] = label
        masks[at:at + len(z), 0] = label > 0
        at += len(z)
    return at, [int(v) for v in z] * len(samples)


def _part(data: SliceSet, start: int, stop: int) -> SliceSet:
    """Slices ``start:stop`` of ``data`` as views (basic slicing copies nothing)."""
    return SliceSet(data.images[start:stop], data.labels[start:stop], data.masks[start:stop],
                    data.case_ids[start:stop], data.z[start:stop], data.context[start:stop])


class TestCases:
    """The image dataset's test slices, read a case at a time in case id order and relabelled into the
    experiment's table; ``case_ids`` (one per slice) come from the files' headers."""

    def __init__(self, files: Sequence[str | Path], names: Sequence[str], target: Sequence[str], source: str) -> None:
        self.files = _by_case(files)
        self.lookup = relabelling(names, target, source)
        self.case_ids = [c for c, p in self.files for _ in range(npz_shape(p, "images")[0])]

    def __len__(self) -> int:
        return len(self.case_ids)

    def __iter__(self) -> Iterator[SliceSet]:
        for case_id, path in self.files:
            with np.load(path) as f:
                images, labels, masks, z = f["images"], f["labels"], f["masks"], f["z"]
            if self.lookup is not None:
                labels = self.lookup[labels]
            yield SliceSet(torch.from_numpy(images)[:, None], torch.from_numpy(labels),
                           torch.from_numpy(masks)[:, None], [case_id] * len(z), [int(v) for v in z])
