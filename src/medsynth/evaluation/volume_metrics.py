"""Test metrics of the generated test set seen as volumes: through-plane consistency (always) and
FID/KID on coronal and sagittal planes (with the Inception weights).

Every sample of a test case is one volume: its slices stacked by z on the
preprocessed grid (``metrics.through_plane``, ``metrics.planes``); the real
reference is the image dataset's test volumes, as for FID and intensity W1.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from medsynth.data.slice_batches import Rebatch
from medsynth.io.npz import npz_shape

from medsynth.data.slicing import CaseSlices
from medsynth.evaluation.test_metrics import NO_WEIGHTS, load_case, meta_of, source
from medsynth.metrics import planes, through_plane
from medsynth.metrics.kid import kernel_inception_distance, partners
from medsynth.metrics.fid import fid_note, fid_over_draws, gaussian_stats, sample_draws
from medsynth.metrics.perceptual import INCEPTION_FILE, available, inception_features, load_inception

THREE_PLANE = [f"{m}_{p}" for p in planes.SIDE_PLANES for m in ("fid", "kid")]
NO_REAL_CHANGE = ("not computed: the real test volumes' neighbouring slices never differ inside the body (mean "
                  "|difference| 0), nothing to divide by; generated: {:.3g}. Check the image dataset's test volumes: "
                  "one image repeated along z?")


def through_plane_summary(cases: Sequence[tuple[str, Path, Path]], reference_files: Sequence[Path],
                          metas: Mapping[str, dict], reference_metas: Mapping[str, dict]) -> list[dict]:
    """Rows for test_metrics.tsv: how neighbouring generated slices differ against the image
    dataset's real test volumes (``metrics.through_plane``; every sample is a volume), at one
    distance: the largest slice spacing among them (``metas``, ``reference_metas``: each case's
    ``meta.json``, whose ``spacing`` is the preprocessed grid's)."""
    spacing = {Path(p): _spacing(meta_of(metas, Path(p)))[1] for _, p, _ in cases}
    spacing.update({Path(p): _spacing(meta_of(reference_metas, Path(p)))[1] for p in reference_files})
    target = max(spacing.values(), default=1.0)
    generated, real = through_plane.NeighbourStats(), through_plane.NeighbourStats()
    for _, real_path, gen_path in sorted(cases):
        labels, fakes = load_case(real_path, gen_path)
        for fake in fakes:
            generated.add(fake, labels.masks, labels.z, spacing=spacing[Path(real_path)], target=target)
    for path in reference_files:
        ref = CaseSlices.load(Path(path))
        real.add(ref.images, ref.masks, ref.z, spacing=spacing[Path(path)], target=target)
    s = through_plane.scores(generated, real)
    if not (len(generated.differences) and len(real.differences)):  # a side without neighbouring slices
        return [{"metric": m, "mean": math.nan, "std": math.nan, "n": 0,
                 "note": f"not computed: no two slices {target:g} mm apart in a generated or real test volume"}
                for m in ("through_plane_ratio", "through_plane_w1", "through_plane_ssim_ratio")]
    apart = (f"neighbouring slices {target:g} mm apart (the largest slice spacing of the generated and real volumes; "
             "the others resampled along z, linearly, within runs of consecutive slices)")
    smoothing = f"slices smoothed in-plane (sigma {through_plane.SMOOTH_SIGMA:g} px), inside both slices' body"
    rows = [
        {"metric": "through_plane_ratio", "mean": s["ratio"], "std": math.nan, "n": s["pairs"],
         "note": f"mean |difference| between {apart}, generated / real ({s['mean_generated']:.3g} / "
                 f"{s['mean_real']:.3g}, [-1, 1] units), {smoothing}; 1 = as smooth along z as real volumes"},
        {"metric": "through_plane_w1", "mean": s["w1"], "std": math.nan, "n": s["pairs"],
         "note": f"W1 between the distributions of those differences, generated vs real; {smoothing}"},
        {"metric": "through_plane_ssim_ratio", "mean": s["ssim_ratio"], "std": math.nan, "n": s["pairs"],
         "note": f"SSIM between {apart} inside the body, generated / real "
                 f"({s['ssim_generated']:.3g} / {s['ssim_real']:.3g})"},
    ]
    if not s["mean_real"]:
        rows[0].update(n=0, note=NO_REAL_CHANGE.format(s["mean_generated"]))
    if not s["ssim_real"]:
        rows[2].update(n=0, note=f"not computed: the real test volumes' neighbouring slices have SSIM 0 inside the "
                                 f"body, nothing to divide by (generated: {s['ssim_generated']:.3g})")
    return rows


# A case's stack for the side planes: (images or None, body masks, z, in-plane spacing, slice spacing, the real
# slices it is (real) or was generated from (generated), which pairs them for KID).
Stack = tuple[np.ndarray | None, np.ndarray, np.ndarray, float, float, Path]


def _generated_stacks(cases: Sequence[tuple[str, Path, Path]], metas: Mapping[str, dict],
                      images: bool) -> Iterator[Stack]:
    """Every sample of every case as a volume, a case read at a time (without ``images``: only its masks
    and z, for the size of the squares)."""
    for case_id, real_path, gen_path in sorted(cases):
        if images:
            labels, fakes = load_case(real_path, gen_path)
            masks, z = labels.masks, labels.z
        else:
            with np.load(real_path) as f:
                masks, z = f["masks"], f["z"]
            fakes = [None] * npz_shape(Path(gen_path), "samples")[0]
        for fake in fakes:
            yield fake, masks, z, *_spacing(metas[case_id]), source(real_path)


def _real_stacks(files: Sequence[Path], metas: Mapping[str, dict], images: bool) -> Iterator[Stack]:
    """The image dataset's real test volumes, as ``_generated_stacks``."""
    for path in files:
        with np.load(path) as f:
            image = f["images"].astype(np.float32) if images else None
            masks, z = f["masks"], f["z"]
        yield image, masks, z, *_spacing(metas[Path(path).parent.name]), source(path)


def plane_sizes(*stack_sets: Callable[[bool], Iterator[Stack]]) -> dict[str, int]:
    """Per side plane the largest square among the cuts through the body of every set of ``stack_sets``
    (found from the masks and z). Both sides of a comparison are padded to it: padded each to its own
    largest, the same anatomy was seen at two scales wherever the sets' extents differ (unpaired: the
    label dataset's volumes against the image dataset's), and FID between identical planes read 35 000."""
    return {plane: max((planes.side_plane_size(m.shape[1:], z, sxy, sz, plane)
                        for stacks in stack_sets for _, m, z, sxy, sz, _ in stacks(False) if m.any()), default=1)
            for plane in planes.SIDE_PLANES}


def _plane_features(stacks: Callable[[bool], Iterator[Stack]], size: Mapping[str, int], model: torch.nn.Module,
                    batch: int, device: torch.device) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """Per side plane the Inception features of every cut through the body of the ``stacks``, padded to
    ``size`` (``plane_sizes``), computed in the batches of the joined set of cuts (``inception_features``):
    one case's cuts held at a time; and per plane (source, cuts) of each stack, in the features' order."""
    runs = {plane: Rebatch(lambda x: inception_features(model, x, len(x), device), batch)
            for plane in planes.SIDE_PLANES}
    blocks: dict[str, list] = {plane: [] for plane in planes.SIDE_PLANES}
    for images, masks, z, sxy, sz, key in stacks(True):
        for plane in planes.SIDE_PLANES:
            cuts = planes.side_planes(images, masks, z, sxy, sz, plane)
            blocks[plane].append((key, len(cuts)))
            if len(cuts):
                runs[plane].push(torch.from_numpy(planes.padded(cuts, size[plane]))[:, None])
    features = {plane: run.close() for plane, run in runs.items()}
    return {plane: np.concatenate(f) if f else np.zeros((0, 2048)) for plane, f in features.items()}, blocks


def _spacing(meta: Mapping) -> tuple[float, float]:
    """(in-plane, slice) spacing of a case's preprocessed grid."""
    return float(meta["spacing"][0]), float(meta["spacing"][2])


def three_plane_summary(cases: Sequence[tuple[str, Path, Path]], reference_files: Sequence[Path],
                        metas: Mapping[str, dict], reference_metas: Mapping[str, dict], settings: dict,
                        device: torch.device) -> list[dict]:
    """Rows for test_metrics.tsv: FID and KID of generated vs real test volumes' coronal and sagittal
    planes (``fid`` and ``kid`` are the axial ones); NA with a note without the weights."""
    folder = Path(settings["weights_dir"])
    if not available(folder, (INCEPTION_FILE,), settings["perceptual"]):
        return [{"metric": m, "mean": math.nan, "std": math.nan, "n": 0, "note": NO_WEIGHTS} for m in THREE_PLANE]
    model = load_inception(folder, device)
    batch = settings.get("batch_size", 32)
    generated, real = partial(_generated_stacks, cases, metas), partial(_real_stacks, reference_files, reference_metas)
    size = plane_sizes(generated, real)
    (gen, gen_blocks), (ref, ref_blocks) = (_plane_features(stacks, size, model, batch, device)
                                            for stacks in (generated, real))
    return [row for plane in planes.SIDE_PLANES
            for row in _plane_rows(plane, gen[plane], ref[plane], gen_blocks[plane], ref_blocks[plane], settings)]


def _plane_rows(plane: str, fg: np.ndarray, fr: np.ndarray, gen_blocks: Sequence, ref_blocks: Sequence,
                settings: dict) -> list[dict]:
    """The FID and KID rows of one side plane from the generated (``fg``) and real (``fr``) planes' features
    and their (source, planes) blocks; NA saying why where a distribution would have fewer than two."""
    # A sample's planes are cut where its real volume's are: paired with them (a perfect generator read
    # KID below 0 as independent sets).
    kid, kid_std = kernel_inception_distance(fg, fr, settings.get("kid_subsets", 100),
                                             settings.get("kid_subset_size", 1000),
                                             partner=partners(gen_blocks, ref_blocks))
    note = (f"{len(fg)} generated vs {len(fr)} real {plane} planes through the body, resampled along z "
            "to the in-plane spacing")
    fid = fid_over_draws(fg, sample_draws(gen_blocks), *gaussian_stats(fr))
    fid_text = "; ".join(filter(None, (note, fid_note(fid, len(fr), "planes"))))
    if min(len(fg), len(fr)) < 2:  # FID and KID are NaN: a distribution needs two planes
        note = fid_text = (f"not computed: {len(fg)} generated vs {len(fr)} real {plane} planes (a distribution "
                           "needs two)")
    else:
        if fid["fid_rows"] < 2:  # a sample of each label map at a time (fid_over_draws)
            fid_text = (f"not computed: {fid['fid_rows']} {plane} plane(s) of one sample of the label maps (a "
                        "distribution needs two)")
        if math.isnan(kid):  # paired: every generated plane was cut where one real plane is
            note = (f"not computed: the {len(fg)} generated {plane} planes pair with fewer than 2 real ones "
                    "(KID compares each with the real plane cut at its place; a distribution needs two)")
    return [{"metric": f"fid_{plane}", "mean": fid["fid"], "std": fid["fid_std"], "n": len(fg), "note": fid_text},
            {"metric": f"kid_{plane}", "mean": kid, "std": kid_std, "n": len(fg), "note": note}]
