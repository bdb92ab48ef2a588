"""The utility benchmark's slices as it reads them, in memory that does not grow with the test set:

- the real and the synthetic training slices in one float16 set, filled case by case, with each slice's
  patient (``TrainingPool``): every segmenter of the curve trains from it by sample weights, converting a
  batch at a time, so no training copies its slices;
- the test slices a case at a time (``TestCases``), relabelled into the experiment's table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from medsynth.inference.generate_cases import samples_file
from medsynth.io.npz import npz_shape
from medsynth.io.tables import read_tsv
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


class SyntheticCase(NamedTuple):
    """A generated case the benchmark can train on: generate's case id (its folder under ``cases/``), the
    patient its label map is of, the label case's ``slices.npz`` and generate's ``samples.npz``."""
    case_id: str
    patient_id: str
    slices: Path
    samples: Path


# generate's parts whose synthetic cases train: the training label maps and the label-only cohorts.
SYNTHETIC_PARTS = ("train", "generate_from")


def synthetic_cases(manifest: Path, label_files: Sequence[str | Path], cases_dir: Path) -> list[SyntheticCase]:
    """Every generated case of ``SYNTHETIC_PARTS`` in generate's ``manifest``, in case id order, with its
    patient and the label case's slices among ``label_files`` (``results/slices/<dataset>/cases/<case>/``)."""
    files = {(Path(f).parents[2].name, Path(f).parent.name): Path(f) for f in label_files}
    cases = {}
    for row in read_tsv(manifest):
        if row["part"] not in SYNTHETIC_PARTS or row["case_id"] in cases:
            continue
        slices = files.get((row["dataset"], row["source_case"]))
        if slices is None:
            raise ValueError(f"utility: {manifest} lists {row['case_id']} ({row['dataset']} {row['source_case']}), whose "
                             "slices are not among the rule's inputs; rerun generate (snakemake --forcerun generate)")
        cases[row["case_id"]] = SyntheticCase(row["case_id"], row["patient_id"], slices,
                                              samples_file(cases_dir, row["case_id"]))
    if not cases:
        raise ValueError("utility: no synthetic training slices; add train to generate.splits")
    return [cases[c] for c in sorted(cases)]


class TrainingPool(NamedTuple):
    """Every training slice of the benchmark in one float16 set (``data``): the image dataset's real training
    slices first (``real`` of them), then every synthetic one; ``patients``: each slice's patient id. A
    training takes its slices by weight (``train_segmenter``'s ``sample_weights``), so none is copied."""
    data: SliceSet
    real: int
    patients: np.ndarray


def load_training_pool(real_files: Sequence[str | Path], real_patients: Mapping[str, str], real_names: Sequence[str],
                       names: Sequence[str], synthetic: Sequence[SyntheticCase], source: str) -> TrainingPool:
    """The image dataset's real training slices (``real_files``, labelled by ``real_names``, relabelled into the
    experiment's table ``names``; ``real_patients``: case id -> patient) and every sample of the ``synthetic``
    cases, each with its label map, filled into one preallocated float16 set: no float32 or joined copy."""
    real = _by_case(real_files)
    missing = sorted(c for c, _ in real if c not in real_patients)
    if missing:
        raise ValueError(f"utility: training case(s) {missing[:5]} are not in the image dataset's split.tsv; rerun "
                         "its split (snakemake --forcerun split)")
    real_n = [npz_shape(p, "images")[0] for _, p in real]
    synthetic_n = [int(np.prod(npz_shape(c.samples, "samples")[:2])) for c in synthetic]
    size = npz_shape(synthetic[0].slices, "labels")[1:]
    n = sum(real_n) + sum(synthetic_n)
    images, labels = np.empty((n, 1, *size), np.float16), np.empty((n, *size), np.uint8)
    masks = np.empty((n, 1, *size), np.uint8)
    lookup = relabelling(real_names, names, source)
    ids, zs, patients, at = [], [], [], 0
    for (case_id, path), count in zip(real, real_n):
        with np.load(path) as f:
            images[at:at + count, 0], masks[at:at + count, 0] = f["images"], f["masks"]
            labels[at:at + count] = f["labels"] if lookup is None else lookup[f["labels"]]
            zs += [int(v) for v in f["z"]]
        ids += [case_id] * count
        patients += [real_patients[case_id]] * count
        at += count
    for case, count in zip(synthetic, synthetic_n):
        at, z = _fill_samples(case.slices, case.samples, images, labels, masks, at)
        ids += [case.case_id] * count
        patients += [case.patient_id] * count
        zs += z
    data = SliceSet(*(torch.from_numpy(a) for a in (images, labels, masks)), ids, zs)
    return TrainingPool(data, sum(real_n), np.array(patients, dtype=object))


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
