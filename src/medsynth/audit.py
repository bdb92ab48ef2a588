"""The memorisation audit of a generated test set: each generated slice's nearest training slice
in pixels and (with the FID weights) Inception features, against real test slices
(``metrics.memorisation``); its rows for ``memorisation.tsv`` and ``test_metrics.tsv``, and the
closest pairs for the figure."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch

from medsynth.evaluate import NO_WEIGHTS, load_case
from medsynth.metrics.memorisation import audit, audit_features
from medsynth.metrics.perceptual import generated_features
from medsynth.train.run import load_slices

FEATURE_COLUMNS = ["feature_distance", "feature_ratio", "feature_nearest_case", "feature_nearest_z"]
MEMORISATION_COLUMNS = ["case_id", "sample", "z", "distance", "ratio", "flagged", "nearest_case", "nearest_z",
                        *FEATURE_COLUMNS]


class GeneratedSlices(NamedTuple):
    """Every generated test slice, in the order evaluate scores them (cases sorted, then samples, then slices)."""
    images: torch.Tensor  # (N, H, W)
    masks: torch.Tensor  # (N, H, W): the body mask of the label map each was generated from
    keys: list[tuple[str, int, int]]  # (case, sample, z)


def generated_images(cases: Sequence[tuple[str, Path, Path]]) -> GeneratedSlices:
    """The generated test slices of ``cases`` (case id, real slices.npz, samples.npz), loaded once for
    both audits."""
    gen, masks, keys = [], [], []
    for case_id, real_path, gen_path in sorted(cases):
        real, fakes = load_case(real_path, gen_path)
        for k, fake in enumerate(fakes):
            gen.append(torch.from_numpy(fake))
            masks.append(torch.from_numpy(real.masks).float())
            keys += [(case_id, k, int(z)) for z in real.z]
    return GeneratedSlices(torch.cat(gen), torch.cat(masks), keys)


def memorisation_cases(generated: GeneratedSlices, train_files: Sequence[Path], reference_files: Sequence[Path],
                       threshold: float, features: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                       ) -> tuple[list[dict], dict, dict | None]:
    """Per generated test slice its nearest training slice of the image dataset (rows of
    ``MEMORISATION_COLUMNS``, closest first) and the summaries in pixel and (given ``features``:
    Inception features of the generated, real test and training slices, in ``generated``'s and the
    slice files' order) feature space, each against the real test slices' own distances to the
    training set (``metrics.memorisation``). ``flagged``: a possible copy in either space."""
    train = load_slices(train_files)
    reference = load_slices(reference_files)
    gen, masks, keys = generated
    pixel = audit(gen, masks, reference.images[:, 0].float(), reference.masks[:, 0].float(),
                  train.images[:, 0].float(), threshold)
    feat = None
    if features is not None:
        if tuple(map(len, features)) != (len(gen), len(reference), len(train)):
            raise ValueError("memorisation audit: Inception features do not match the slices; rerun real_stats")
        feat = audit_features(*features, threshold=threshold)
    rows = []
    for i, (c, k, z) in enumerate(keys):
        j = int(pixel.nearest.index[i])
        row = {"case_id": c, "sample": k, "z": z, "distance": float(pixel.nearest.distance[i]),
               "ratio": float(pixel.ratio[i]), "flagged": bool(pixel.flagged[i]),
               "nearest_case": train.case_ids[j], "nearest_z": train.z[j],
               **dict.fromkeys(FEATURE_COLUMNS)}  # NA: no Inception weights
        if feat is not None:
            j = int(feat.nearest.index[i])
            row.update(feature_distance=float(feat.nearest.distance[i]), feature_ratio=float(feat.ratio[i]),
                       flagged=row["flagged"] or bool(feat.flagged[i]),
                       feature_nearest_case=train.case_ids[j], feature_nearest_z=train.z[j])
        rows.append(row)
    return sorted(rows, key=_closest_ratio), pixel.summary, None if feat is None else feat.summary


def _closest_ratio(row: Mapping) -> float:
    """A memorisation row's smaller ratio: pixel, or Inception where computed (a written row reads back as text)."""
    feature = row.get("feature_ratio")
    feature = math.inf if feature in (None, "", "NA") else float(feature)
    return min(float(row["ratio"]), feature)


def memorisation_features(generated: GeneratedSlices, real_stats: Path, train_stats: Path, settings: dict,
                          device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Inception features of the generated test slices (in their order), the real test slices and the
    training slices (``real_stats``' files), or None without the weights."""
    with np.load(train_stats) as f:
        if not bool(f["available"]):
            return None
        train = f["features"]
    gen = generated_features(generated.images[:, None], real_stats, settings, device)
    if gen is None:
        return None
    with np.load(real_stats) as f:
        return gen, f["features"], train


def memorisation_summary(pixel: dict, feature: dict | None) -> list[dict]:
    """The audit's rows for test_metrics.tsv: pixel space always, Inception space when computed."""
    rows = []
    for suffix, summary, space in (("", pixel, "RMS pixel distance inside the body"),
                                   ("_inception", feature, "Inception pool3 feature distance")):
        if summary is None:
            rows += [{"metric": f"memorisation_{name}{suffix}", "mean": math.nan, "std": math.nan, "n": 0,
                      "note": NO_WEIGHTS} for name in ("ratio", "flagged")]
            continue
        note = (f"{space} to the nearest training slice / the real test slices' median "
                f"({summary['real_median_distance']:.3g}); flagged below {summary['threshold']:g}")
        rows += [{"metric": f"memorisation_ratio{suffix}", "mean": summary["ratio_median"], "std": math.nan,
                  "n": summary["slices"], "note": f"median; 5th percentile {summary['ratio_p05']:.3g}; {note}"},
                 {"metric": f"memorisation_flagged{suffix}", "mean": summary["flagged"], "std": math.nan,
                  "n": summary["slices"], "note": f"generated test slices flagged as possible copies ({space})"}]
    return rows


def memorisation_pairs_panels(table: Path, cases_dir: Path, real_files: Sequence[Path], train_files: Sequence[Path],
                              count: int = 8) -> list[tuple[np.ndarray, np.ndarray, str, bool]]:
    """(generated slice, nearest training slice, title, flagged) of the ``count`` closest rows of
    ``memorisation.tsv`` (it is sorted closest first)."""
    from medsynth.generate import generated_cases
    from medsynth.io.tables import read_tsv

    rows = read_tsv(table)[:count]
    train = load_slices(train_files)
    where = {(c, z): i for i, (c, z) in enumerate(zip(train.case_ids, train.z))}
    samples = {}
    for case_id, real_path, gen_path in generated_cases(real_files, cases_dir):
        if any(r["case_id"] == case_id for r in rows):
            real, fakes = load_case(real_path, gen_path)
            samples[case_id] = (fakes, {int(z): i for i, z in enumerate(real.z)})
    panels = []
    for r in rows:
        fakes, index = samples[r["case_id"]]
        generated = fakes[int(r["sample"])][index[int(r["z"])]]
        # The nearest slice of the space that puts it closest: pixels, or Inception features.
        space = "" if _closest_ratio(r) == float(r["ratio"]) else "feature_"
        nearest = train.images[where[(r[f"{space}nearest_case"], int(r[f"{space}nearest_z"]))], 0].float().numpy()
        title = (f"{r['case_id']} z{int(r['z'])} s{r['sample']}\n"
                 f"{'Inception ' if space else ''}ratio {_closest_ratio(r):.2f}")
        panels.append((generated, nearest, title, r["flagged"] == "True"))
    return panels
