"""Test-set metrics (medsynth.evaluation.test_metrics): a perfect generator scores perfectly, every metric.

Perfect generator: its samples are the real test slices. Checked on the CT and
MR phantoms and on the real CT in ../shared/data, through preprocessing and
slicing as the workflow does it (lung air, bowel gas and dark MR tissue inside
the body are what made body Dice and intensity W1 biased before).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.data.slicing import CaseSlices
from medsynth.evaluation.test_metrics import evaluate_cases, segmentation_summary
from evaluation_cases import (LEVELS, SEG_NAMES, level_cases as _level_cases, perfect as _perfect,
                              phantom_slices as _phantom_slices, write_samples as _write_samples)

def _assert_perfect(summary: list[dict]) -> None:
    m = {r["metric"]: r["mean"] for r in summary}
    for name in ("ssim", "ssim_body"):
        assert m[name] == pytest.approx(1.0, abs=1e-6), name
    body = next(r for r in summary if r["metric"] == "body_dice")  # the label map's body by construction: NA
    assert math.isnan(body["mean"]) and body["note"].startswith("not computed on the test set")
    for name in ("rmse", "rmse_body", "intensity_w1"):
        assert m[name] == pytest.approx(0.0, abs=1e-6), name
    assert m["psnr"] > 100 and m["psnr_body"] > 100


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_a_perfect_generator_scores_perfectly_on_the_phantom(tmp_path: Path, modality: str, slice_volumes) -> None:
    real = _phantom_slices(tmp_path, modality, slice_volumes)
    summary, per_case = evaluate_cases(_write_samples(real, _perfect), True, real)
    _assert_perfect(summary)
    assert len(per_case) == 4 and all(r["ssim"] == pytest.approx(1.0, abs=1e-6) for r in per_case)
    assert all(r["note"] == "" for r in per_case)
    w1 = next(r for r in summary if r["metric"] == "intensity_w1")
    assert math.isnan(w1["std"]) and "no std" in w1["note"]  # a NA std says why too


def test_unpaired_per_case_rows_are_na_with_the_reason(tmp_path: Path, slice_volumes, tmp_path_factory) -> None:
    """Unpaired, a label map has no real image of its own: its per-case pixel scores are NA (not blank
    cells) and the row says why."""
    from medsynth.evaluation.test_metrics import CASE_COLUMNS, PAIRED_CASE_METRICS, UNPAIRED_CASE
    from medsynth.io.tables import read_tsv, write_tsv

    real = _phantom_slices(tmp_path, "CT", slice_volumes)
    _, per_case = evaluate_cases(_write_samples(real, _perfect), False, real)
    table = read_tsv(write_tsv(tmp_path / "per_case.tsv", per_case, CASE_COLUMNS))
    assert len(table) == 4
    for row in table:
        assert all(row[m] == "NA" for m in PAIRED_CASE_METRICS) and row["note"] == UNPAIRED_CASE, row


def test_a_perfect_generator_scores_perfectly_on_the_real_ct(tmp_path: Path, real_ct, slice_volumes) -> None:
    ct, label, table = real_ct
    real = [slice_volumes(tmp_path / "pre", ct, label, table, "CT", 128).save(tmp_path / "real" / "slices.npz")]
    summary, _ = evaluate_cases(_write_samples(real, _perfect), True, real)
    _assert_perfect(summary)


def test_dark_tissue_painted_grey_scores_worse(tmp_path: Path, slice_volumes) -> None:
    """The bias the old definitions had: a generator that paints lung air grey must not score better."""
    real = _phantom_slices(tmp_path, "MR", slice_volumes)

    def grey(r: CaseSlices, case: int, k: int) -> np.ndarray:
        out = r.images.copy()
        out[(r.masks > 0) & (out < -0.8)] = -0.3
        return out

    perfect, _ = evaluate_cases(_write_samples(real, _perfect), True, real)
    painted, _ = evaluate_cases(_write_samples(real, grey), True, real)
    w1 = {name: {r["metric"]: r["mean"] for r in s}["intensity_w1"] for name, s in (("perfect", perfect),
                                                                                    ("grey", painted))}
    assert w1["perfect"] == 0.0 < 0.01 < w1["grey"]


def test_ssim_inside_the_body_ignores_what_lies_outside(tmp_path: Path, slice_volumes) -> None:
    real = _phantom_slices(tmp_path, "CT", slice_volumes, indices=(0,))

    def noisy(r: CaseSlices, case: int, k: int) -> np.ndarray:
        rng = np.random.default_rng(k)
        return np.clip(r.images + rng.normal(0, 0.1, r.images.shape), -1, 1)

    def noisy_and_bright_outside(r: CaseSlices, case: int, k: int) -> np.ndarray:
        out = noisy(r, case, k)
        out[r.masks == 0] = 1.0
        return out

    a, _ = evaluate_cases(_write_samples(real, noisy), True, real)
    b, _ = evaluate_cases(_write_samples(real, noisy_and_bright_outside), True, real)
    a, b = ({r["metric"]: r["mean"] for r in s} for s in (a, b))
    assert a["ssim_body"] == pytest.approx(b["ssim_body"], abs=2e-3)  # float16 storage of the samples
    assert a["ssim"] > b["ssim"] + 0.1


def _toy_cases(root: Path, sizes=(3, 2), seed: int = 0) -> list[Path]:
    """Small slice files of two cases with distinct content (LPIPS runs AlexNet on each slice)."""
    rng = np.random.default_rng(seed)
    files = []
    for c, n in enumerate(sizes):
        labels = np.zeros((n, 32, 32), np.uint8)
        labels[:, 8:24, 6 + 4 * c : 20 + 4 * c] = 1
        images = np.where(labels > 0, 0.2 + 0.3 * rng.random((n, 32, 32)), -1.0).astype(np.float32)
        slices = CaseSlices(images, labels, (labels > 0).astype(np.uint8), np.arange(n, dtype=np.int32),
                            np.zeros((n, 2), np.int32))
        files.append(slices.save(root / f"case{c}" / "slices.npz"))
    return files


def test_lpips_pairs_every_sample_with_its_own_cases_real_slices(tmp_path: Path, random_weights_dir: Path) -> None:
    """Two test cases, two samples each (every shipped config): a perfect generator has LPIPS 0."""
    real = _toy_cases(tmp_path)
    settings = {"weights_dir": str(random_weights_dir), "perceptual": "required", "check_hash": False,
                "kid_subsets": 5, "kid_subset_size": 10, "batch_size": 8}
    # No Inception statistics: only LPIPS runs (FID and KID are "not computed").
    stats = tmp_path / "inception_test.npz"
    np.savez(stats, available=False, reason="not computed: weights unavailable")
    summary, _ = evaluate_cases(_write_samples(real, _perfect), True, real, real_stats=stats, perceptual=settings)
    m = {r["metric"]: r for r in summary}
    assert float(m["lpips"]["mean"]) == pytest.approx(0.0, abs=1e-6)
    assert m["lpips"]["n"] == 2 * 5  # every sample of every case, each with its own case's slice
    assert float(m["lpips_diversity"]["mean"]) == pytest.approx(0.0, abs=1e-6)  # both samples are the same
    assert math.isnan(m["fid"]["mean"]) and m["fid"]["note"]

    # Real slices of the other case for every label map: LPIPS sees the mismatch.
    def other_case(r: CaseSlices, c: int, k: int) -> np.ndarray:
        other = CaseSlices.load(real[1 - c]).images
        return other[np.arange(len(r.z)) % len(other)]

    worse, _ = evaluate_cases(_write_samples(real, other_case), True, real, real_stats=stats, perceptual=settings)
    assert float({r["metric"]: r for r in worse}["lpips"]["mean"]) > 1e-3


def test_kid_and_fid_of_a_perfect_generator_are_zero(tmp_path: Path, calibrated_weights_dir: Path) -> None:
    """Each sample is paired with the real slice of its label map: a perfect generator (2 samples each) reads KID
    ~0 against another patient's (as independent sets the matched pairs pulled it about 10 % of a swap below 0).
    FID is scored a sample of each label map at a time: both samples at once read it above 0."""
    from medsynth.data.slice_batches import slice_chunks
    from medsynth.metrics.perceptual import save_real_stats

    real, other = _toy_cases(tmp_path / "real"), _toy_cases(tmp_path / "other", seed=5)
    settings = {"weights_dir": str(calibrated_weights_dir), "perceptual": "required", "batch_size": 8,
                "kid_subsets": 5, "kid_subset_size": 10}
    stats = tmp_path / "inception_test.npz"
    assert save_real_stats((c[:, None] for c, in slice_chunks(real, ("images",))), stats, settings,
                           torch.device("cpu"))

    def swap(r: CaseSlices, c: int, k: int) -> np.ndarray:
        return CaseSlices.load(other[c]).images

    kid, fid = {}, {}
    for name, fake in (("perfect", _perfect), ("swap", swap)):
        summary, _ = evaluate_cases(_write_samples(real, fake), True, real, real_stats=stats, perceptual=settings)
        rows = {r["metric"]: r for r in summary}
        kid[name], fid[name] = rows["kid"]["mean"], rows["fid"]
    assert kid["swap"] > 0 and abs(kid["perfect"]) < 1e-6 * kid["swap"]
    assert fid["swap"]["mean"] > 0 and fid["perfect"]["mean"] < 1e-6 * fid["swap"]["mean"]
    assert fid["perfect"]["std"] < 1e-6 * fid["swap"]["mean"] and fid["perfect"]["n"] == 2 * 5
    assert fid["perfect"]["note"].startswith("mean of 2 FIDs, one per sample of each label map (5 slices")


def test_memorisation_in_inception_space_flags_copies_of_training_slices(tmp_path: Path,
                                                                        random_weights_dir: Path) -> None:
    """The audit in feature space through the real loading code (with weights the test writes): a
    "generator" that returns training slices is flagged; one that makes new patients is not."""
    from medsynth.evaluation.memorisation_audit import generated_images, memorisation_cases, memorisation_features, memorisation_summary
    from medsynth.metrics.perceptual import save_real_stats
    from medsynth.data.slice_set import load_slices

    train, test = _toy_cases(tmp_path / "train", (4, 4), seed=1), _toy_cases(tmp_path / "test")
    settings = {"weights_dir": str(random_weights_dir), "perceptual": "required", "check_hash": False,
                "batch_size": 8}
    cpu = torch.device("cpu")
    for files, name in ((train, "inception_train.npz"), (test, "inception_test.npz")):
        assert save_real_stats(load_slices(files).images, tmp_path / name, settings, cpu)
    stats = (tmp_path / "inception_test.npz", tmp_path / "inception_train.npz")

    def copies(r: CaseSlices, c: int, k: int) -> np.ndarray:
        return CaseSlices.load(train[1]).images[k:k + len(r.z)]  # training case 1's slices, from slice k

    cases = _write_samples(test, copies)
    generated = generated_images(cases)
    features = memorisation_features(generated, *stats, settings, cpu)
    assert [len(f) for f in features] == [10, 5, 8]  # 2 samples x 5 test slices; 5 test; 8 training slices
    rows, pixel, feature = memorisation_cases(generated, train, test, 0.5, features)
    assert feature["flagged"] == feature["slices"] == 10 and feature["ratio_median"] < 0.1
    assert all(r["flagged"] and r["feature_nearest_case"] == "case1" for r in rows)
    # Each copy's nearest training slice in feature space is its original: slice k + its index.
    by_key = {(r["case_id"], r["sample"], r["z"]): r["feature_nearest_z"] for r in rows}
    assert all(by_key[(c, k, z)] == k + z for c, k, z in by_key)
    m = {r["metric"]: r["mean"] for r in memorisation_summary(pixel, feature)}
    assert m["memorisation_flagged_inception"] == 10 and m["memorisation_ratio_inception"] < 0.1

    # New patients (the real test slices themselves): as far from the training set as real unseen data.
    generated = generated_images(_write_samples(test, _perfect))
    _, _, feature = memorisation_cases(generated, train, test, 0.5,
                                       memorisation_features(generated, *stats, settings, cpu))
    assert feature["flagged"] == 0 and feature["ratio_median"] == pytest.approx(1.0, abs=0.02)


def test_memorisation_without_weights_says_so_and_writes_na(tmp_path: Path) -> None:
    from medsynth.evaluation.memorisation_audit import generated_images, memorisation_cases, memorisation_features, memorisation_summary

    train, test = _toy_cases(tmp_path / "train", (4, 4), seed=1), _toy_cases(tmp_path / "test")
    for name in ("inception_train.npz", "inception_test.npz"):
        np.savez(tmp_path / name, available=False, reason="not computed: weights unavailable")
    generated = generated_images(_write_samples(test, _perfect))
    features = memorisation_features(generated, tmp_path / "inception_test.npz", tmp_path / "inception_train.npz",
                                     {"weights_dir": str(tmp_path), "perceptual": "auto"}, torch.device("cpu"))
    assert features is None
    rows, pixel, feature = memorisation_cases(generated, train, test, 0.5, features)
    assert feature is None and pixel["flagged"] == 0
    assert all(r["feature_ratio"] is None for r in rows)  # written as NA
    m = {r["metric"]: r for r in memorisation_summary(pixel, feature)}
    assert math.isnan(m["memorisation_ratio_inception"]["mean"]) and "weights" in m["memorisation_ratio_inception"]["note"]
    assert m["memorisation_ratio"]["mean"] == pytest.approx(1.0, abs=0.02)


def _empty_case(root: Path, samples: int = 2) -> tuple[str, Path, Path]:
    """A test case whose slicing kept no slice, with its (empty) samples."""
    empty = CaseSlices(np.zeros((0, 16, 16), np.float32), *(np.zeros((0, 16, 16), np.uint8),) * 2,
                       np.zeros(0, np.int32), np.zeros((0, 2), np.int32)).save(root / "c" / "slices.npz")
    np.savez(root / "c" / "samples.npz", samples=np.zeros((samples, 0, 16, 16), np.float16), z=np.zeros(0, np.int32))
    return "c", empty, root / "c" / "samples.npz"


def test_a_test_set_without_generated_slices_is_na_with_the_reason(tmp_path: Path) -> None:
    """Every test case's slicing kept no slice (slice.require_classes, a one-patient test split): each metric
    is NA and says why, none reads as a score, nothing raises."""
    from medsynth.evaluation.memorisation_audit import memorisation_summary
    from medsynth.evaluation.test_metrics import MASKED_BODY, NO_SLICES, TOO_FEW, _perceptual_summary
    from medsynth.metrics.memorisation import Nearest, compare

    from medsynth.evaluation.test_metrics import CASE_COLUMNS, EMPTY_CASE, PAIRED_CASE_METRICS
    from medsynth.io.tables import read_tsv, write_tsv

    case = _empty_case(tmp_path)
    for paired in (True, False):
        _, per_case = evaluate_cases([case], paired, [case[1]])
        table = read_tsv(write_tsv(tmp_path / "per_case.tsv", per_case, CASE_COLUMNS))
        assert len(table) == 2 and {r["slices"] for r in table} == {"0"}
        for row in table:  # each pixel score NA, the row saying why (it had NA and an empty note)
            assert all(row[m] == "NA" for m in PAIRED_CASE_METRICS) and row["note"] == EMPTY_CASE, row
    summary, _ = evaluate_cases([case], True, [case[1]])
    for row in summary:
        reason = MASKED_BODY if row["metric"] == "body_dice" else NO_SLICES  # NA on any test set
        assert math.isnan(row["mean"]) and row["n"] == 0 and row["note"] == reason, row
    nan = float("nan")
    scores = {"fid": nan, "kid": nan, "kid_std": nan, "lpips": nan, "lpips_diversity": nan}
    rows = {r["metric"]: r["note"] for r in _perceptual_summary(scores, {"fake": 1, "lpips": 1, "lpips_diversity": 0},
                                                                 True)}
    assert rows["fid"] == rows["kid"] == TOO_FEW
    # One test slice, three samples of it: three generated slices, but FID's sets (a sample of each label map at
    # a time) hold one each: NA saying so, not "weights unavailable".
    one = {**scores, "kid": 0.1, "kid_std": 0.0, "fid_rows": 1, "fid_draws": 3}
    rows = {r["metric"]: r["note"] for r in _perceptual_summary(one, {"fake": 3, "lpips": 3, "lpips_diversity": 3},
                                                                 True, 5)}
    assert rows["fid"] == TOO_FEW
    none = Nearest(np.zeros(0), np.zeros(0, np.int64))
    rows = memorisation_summary(compare(none, Nearest(np.ones(3), np.zeros(3, np.int64)), 0.5).summary, None)
    assert all(math.isnan(r["mean"]) and "no generated test slice" in r["note"] for r in rows if "inception" not in
               r["metric"])


def test_no_generated_slice_with_the_alexnet_weights_is_na_with_the_reason(tmp_path: Path,
                                                                          random_weights_dir: Path) -> None:
    """Paired, two samples, the AlexNet weights there: LPIPS and its diversity are NA saying no slice was
    generated (empty LPIPS queues raised in np.concatenate)."""
    from medsynth.evaluation.test_metrics import NO_SLICES

    case = _empty_case(tmp_path)
    np.savez(tmp_path / "stats.npz", available=False, reason="not computed: weights unavailable")
    settings = {"weights_dir": str(random_weights_dir), "perceptual": "required", "batch_size": 8}
    summary, _ = evaluate_cases([case], True, [case[1]], real_stats=tmp_path / "stats.npz", perceptual=settings)
    rows = {r["metric"]: r for r in summary}
    for name in ("lpips", "lpips_diversity"):
        assert math.isnan(rows[name]["mean"]) and rows[name]["note"] == NO_SLICES, rows[name]


def test_fid_over_one_real_test_slice_says_so_not_that_weights_are_missing(tmp_path: Path,
                                                                          random_weights_dir: Path) -> None:
    """One real test slice (a one-patient test split): FID and KID are NA naming the real slices; without
    the weights they say so."""
    from medsynth.evaluation.test_metrics import NO_WEIGHTS, TOO_FEW_REAL, _perceptual_summary
    from medsynth.metrics.fid import few_for_fid
    from medsynth.metrics.perceptual import PerceptualStream, save_real_stats

    settings = {"weights_dir": str(random_weights_dir), "perceptual": "required", "batch_size": 8,
                "kid_subsets": 5, "kid_subset_size": 10}
    images = torch.rand(5, 1, 32, 32) * 2 - 1
    cpu = torch.device("cpu")
    assert save_real_stats(images[:1], tmp_path / "real.npz", settings, cpu)
    stream = PerceptualStream(tmp_path / "real.npz", settings, cpu)
    stream.push(images[1:], None)
    rows = {r["metric"]: r for r in _perceptual_summary(stream.scores(), stream.counts, False, stream.real)}
    assert rows["fid"]["note"] == rows["kid"]["note"] == TOO_FEW_REAL.format(1) and math.isnan(rows["fid"]["mean"])
    assert save_real_stats(images[:2], tmp_path / "two.npz", settings, cpu)
    stream = PerceptualStream(tmp_path / "two.npz", settings, cpu)
    stream.push(images[2:], None)
    rows = {r["metric"]: r for r in _perceptual_summary(stream.scores(), stream.counts, False, stream.real)}
    # Computed, and, over fewer slices than Inception's features, saying it reads high (as the side planes do).
    assert not math.isnan(rows["fid"]["mean"]) and rows["fid"]["note"] == few_for_fid(3, 2, "slices")
    assert rows["fid"]["note"].startswith("fewer slices than Inception's 2048 features: FID reads high")
    assert rows["kid"]["note"] != rows["fid"]["note"]
    many = _perceptual_summary({**stream.scores(), "fid_rows": 2048}, {**stream.counts, "fake": 2048}, False, 2048)
    assert many[0]["metric"] == "fid" and many[0]["note"] == ""
    missing = {**settings, "weights_dir": str(tmp_path / "none"), "perceptual": "auto"}
    assert not save_real_stats(images[:2], tmp_path / "none.npz", missing, cpu)
    stream = PerceptualStream(tmp_path / "none.npz", missing, cpu)
    stream.push(images[2:], None)
    rows = {r["metric"]: r for r in _perceptual_summary(stream.scores(), stream.counts, False, stream.real)}
    assert rows["fid"]["note"] == rows["kid"]["note"] == NO_WEIGHTS


def test_segmentation_summary_is_the_organ_mean_and_names_its_classes() -> None:
    nan = math.nan
    rows = [{"class": "background", "dice_generated": 0.9, "dice_real": 0.95},
            {"class": "liver", "dice_generated": 0.5, "dice_real": 0.8},
            {"class": "kidney", "dice_generated": 0.7, "dice_real": 0.9},
            {"class": "spleen", "dice_generated": nan, "dice_real": nan},  # absent from the test set
            {"class": "body", "dice_generated": 0.99, "dice_real": 0.99},  # easy: left out of the mean
            {"class": "mean (organs)", "dice_generated": 0.6, "dice_real": 0.85,
             "note": "organ mean over liver, kidney (background and body left out)"}]
    out = {r["metric"]: r for r in segmentation_summary(rows)}
    assert out["seg_dice_generated"]["mean"] == 0.6 and out["seg_dice_real"]["mean"] == 0.85
    assert out["seg_dice_generated"]["n"] == 2 == out["seg_dice_real"]["n"]  # liver and kidney
    assert "organ mean over liver, kidney" in out["seg_dice_real"]["note"]
    assert out["seg_ratio"]["mean"] == pytest.approx(0.6 / 0.85)
    rows[-1]["dice_generated"] = 0.85
    assert {r["metric"]: r for r in segmentation_summary(rows)}["seg_ratio"]["mean"] == 1.0  # as good as real


def _consistency(tmp_path: Path, level_segmenter, image_names: list[str],
                 segmenter_levels: list[float] | None = None) -> tuple[list[dict], list[dict]]:
    """segmentation_consistency of a perfect generator (the label dataset's own images) against an image
    dataset labelled by ``image_names``, with a level segmenter trained, as it were, on the latter."""
    from medsynth.evaluation.test_metrics import segmentation_consistency

    real = _level_cases(tmp_path / "labels", SEG_NAMES)
    images = _level_cases(tmp_path / "images", image_names)
    levels = segmenter_levels or [LEVELS[n] for n in image_names]
    segmenter = level_segmenter(levels, image_names, tmp_path / "segmenter.pt")
    rows = segmentation_consistency(segmenter, _write_samples(real, _perfect), images, SEG_NAMES, image_names)
    return rows, segmentation_summary(rows)


def test_segmentation_consistency_matches_the_classes_by_name(tmp_path: Path, make_level_segmenter) -> None:
    """The image dataset lists the same classes in another order: its segmenter's liver is the liver.
    (Compared by position, a perfect generator scored liver and kidney 0.)"""
    rows, summary = _consistency(tmp_path, make_level_segmenter, ["background", "body", "kidney", "liver"])
    assert [r["class"] for r in rows] == [*SEG_NAMES, "mean (organs)"]
    for r in rows:
        assert r["dice_generated"] == r["dice_real"] == r["iou_generated"] == 1.0, r["class"]
    assert rows[2]["voxels"] == 2 * 5 * 100  # liver pixels of every sample
    m = {r["metric"]: r for r in summary}
    assert m["seg_ratio"]["mean"] == 1.0 and m["seg_dice_generated"]["n"] == 2  # a perfect generator
    assert "organ mean over liver, kidney" in m["seg_dice_generated"]["note"]


def test_a_class_the_image_dataset_does_not_label_is_na_not_an_error(tmp_path: Path, make_level_segmenter) -> None:
    # No kidney: there it is body tissue.
    rows, summary = _consistency(tmp_path, make_level_segmenter, ["background", "liver", "body"])
    by = {r["class"]: r for r in rows}
    assert math.isnan(by["kidney"]["dice_generated"]) and math.isnan(by["kidney"]["dice_real"])
    assert "does not know this class" in by["kidney"]["note"] and by["kidney"]["voxels"] == 2 * 5 * 36
    # The kidney's pixels are left out of the generated images' confusion: body and liver stay perfect.
    assert by["liver"]["dice_generated"] == by["body"]["dice_generated"] == by["liver"]["dice_real"] == 1.0
    mean = by["mean (organs)"]
    assert mean["dice_generated"] == 1.0 and "over liver" in mean["note"] and "not scored: kidney" in mean["note"]
    m = {r["metric"]: r for r in summary}
    assert m["seg_ratio"]["mean"] == 1.0 and m["seg_ratio"]["n"] == 1


def test_a_class_the_segmenter_never_saw_is_na_on_both_sides(tmp_path: Path, make_level_segmenter) -> None:
    """No real training slice had the kidney (a rare class of a real cohort): the segmenter cannot find it on any
    image, and scored 0 on both sides it pulled both organ means down (and seg_dice_real, the upper bound)."""
    from medsynth.evaluation.test_metrics import UNSEEN_CLASS, segmentation_consistency
    from medsynth.io.checkpoint import load_checkpoint, save_checkpoint

    real, images = _level_cases(tmp_path / "labels", SEG_NAMES), _level_cases(tmp_path / "images", SEG_NAMES)
    path = make_level_segmenter([LEVELS[n] for n in SEG_NAMES], SEG_NAMES, tmp_path / "segmenter.pt")
    payload = load_checkpoint(path)
    save_checkpoint(path, {**payload, "class_seen": [n != "kidney" for n in SEG_NAMES]})
    rows = segmentation_consistency(path, _write_samples(real, _perfect), images, SEG_NAMES, SEG_NAMES)
    by = {r["class"]: r for r in rows}
    assert math.isnan(by["kidney"]["dice_generated"]) and math.isnan(by["kidney"]["dice_real"])
    assert by["kidney"]["note"] == UNSEEN_CLASS and by["kidney"]["voxels"] == 2 * 5 * 36
    mean = by["mean (organs)"]
    assert mean["dice_generated"] == mean["dice_real"] == 1.0 and "over liver" in mean["note"]
    assert "not scored: kidney (in no real training slice)" in mean["note"]
    assert {r["metric"]: r for r in segmentation_summary(rows)}["seg_ratio"]["n"] == 1


def test_a_class_one_sides_test_labels_lack_is_not_scored_on_that_side() -> None:
    """Unpaired: the CT test label maps have no spleen, the MR test slices do. The segmenter calls a few
    pixels of the generated images spleen: scored 0, that class would enter the generated organ mean only
    (0.4 against 0.875); not scored, both means are over liver."""
    from medsynth.evaluation.test_metrics import _rows_by_name

    names = ["background", "body", "liver", "spleen"]
    gen = {"dice": [0.99, 0.98, 0.8, 0.0], "iou": [0.98, 0.96, 0.67, 0.0]}
    real = {"dice": [0.99, 0.98, 0.9, 0.85], "iou": [0.98, 0.96, 0.82, 0.74]}
    rows = _rows_by_name(gen, real, names, np.arange(4), np.array([900, 500, 20, 0]), np.ones(4, bool))
    spleen, mean = rows[3], rows[-1]
    assert math.isnan(spleen["dice_generated"]) and spleen["dice_real"] == 0.85
    assert spleen["note"] == "no generated test label map has it"
    assert (mean["dice_generated"], mean["dice_real"]) == (0.8, 0.9) and "over liver (" in mean["note"]
    # And the other way round: a class no real test slice has is not scored on the real side.
    rows = _rows_by_name(real, gen, names, np.arange(4), np.array([900, 500, 20, 30]), np.array([1, 1, 1, 0], bool))
    assert math.isnan(rows[3]["dice_real"]) and rows[3]["note"] == "no real test slice has it"
    assert (rows[-1]["dice_generated"], rows[-1]["dice_real"]) == (0.9, 0.8)


def test_without_a_generated_slice_the_segmentation_rows_say_so(tmp_path: Path, make_level_segmenter) -> None:
    """No test slice generated: the organ mean and seg_dice_* / seg_ratio are NA saying that, not "no organ
    class to average"."""
    from medsynth.evaluation.test_metrics import NO_SLICES, segmentation_consistency

    images = _level_cases(tmp_path / "images", SEG_NAMES)
    segmenter = make_level_segmenter([LEVELS[n] for n in SEG_NAMES], SEG_NAMES, tmp_path / "segmenter.pt")
    rows = segmentation_consistency(segmenter, [_empty_case(tmp_path)], images, SEG_NAMES, SEG_NAMES)
    assert rows[-1]["note"] == NO_SLICES and math.isnan(rows[-1]["dice_generated"])
    summary = segmentation_summary(rows)
    assert [r["metric"] for r in summary] == ["seg_dice_generated", "seg_dice_real", "seg_ratio"]
    assert all(math.isnan(r["mean"]) and r["n"] == 0 and r["note"] == NO_SLICES for r in summary), summary


def test_a_segmenter_right_on_the_body_and_wrong_on_the_organs_scores_low(tmp_path: Path,
                                                                         make_level_segmenter) -> None:
    """Every organ called body: the body's Dice stays high, the organ mean is 0."""
    rows, summary = _consistency(tmp_path, make_level_segmenter, SEG_NAMES, segmenter_levels=[-1.0, 0.0, 5.0, 6.0])
    by = {r["class"]: r for r in rows}
    assert by["body"]["dice_real"] > 0.85 and by["liver"]["dice_real"] == by["kidney"]["dice_real"] == 0.0
    m = {r["metric"]: r["mean"] for r in summary}
    assert m["seg_dice_real"] == m["seg_dice_generated"] == 0.0 and math.isnan(m["seg_ratio"])
    assert {r["metric"]: r for r in summary}["seg_ratio"]["note"] == "not computed: seg_dice_real is 0"


def test_without_a_segmenter_every_row_is_na_with_the_reason(tmp_path: Path) -> None:
    from medsynth.evaluation.test_metrics import segmentation_consistency

    real = _level_cases(tmp_path / "labels", SEG_NAMES)
    reason = "not computed: the image dataset mr has no label maps"
    rows = segmentation_consistency(None, _write_samples(real, _perfect), real, SEG_NAMES, None,
                                    not_computed=reason)
    assert [r["class"] for r in rows] == [*SEG_NAMES, "mean (organs)"]
    assert all(math.isnan(r["dice_generated"]) and math.isnan(r["dice_real"]) and r["note"] == reason for r in rows)
    summary = segmentation_summary(rows)
    assert [r["metric"] for r in summary] == ["seg_dice_generated", "seg_dice_real", "seg_ratio"]
    assert all(math.isnan(r["mean"]) and r["n"] == 0 and r["note"] == reason for r in summary)


def test_a_segmenter_of_another_table_is_out_of_date(tmp_path: Path, make_level_segmenter) -> None:
    from medsynth.evaluation.test_metrics import segmentation_consistency

    real = _level_cases(tmp_path / "labels", SEG_NAMES)
    segmenter = make_level_segmenter([-1.0, 0.0, 0.6], ["background", "body", "liver"], tmp_path / "segmenter.pt")
    with pytest.raises(ValueError, match="segmenter.pt: the segmenter knows.*rerun the segmenter rule"):
        segmentation_consistency(segmenter, _write_samples(real, _perfect), real, SEG_NAMES, SEG_NAMES)


def test_pixel_diversity_is_zero_for_copies_and_the_std_across_samples_inside_the_body(tmp_path: Path,
                                                                                     slice_volumes) -> None:
    real = _phantom_slices(tmp_path, "CT", slice_volumes)
    copies, _ = evaluate_cases(_write_samples(real, _perfect), True, real)
    assert {r["metric"]: r["mean"] for r in copies}["pixel_diversity"] == 0.0  # noise that changes nothing

    def shifted(r: CaseSlices, case: int, k: int) -> np.ndarray:
        out = r.images.copy()
        out[r.masks > 0] += 0.1 * k  # sample 1 is 0.1 brighter inside the body: std 0.1 / sqrt(2) per pixel
        out[r.masks == 0] += 0.5 * k  # outside the body: not counted
        return out

    apart, _ = evaluate_cases(_write_samples(real, shifted), True, real)
    assert {r["metric"]: r["mean"] for r in apart}["pixel_diversity"] == pytest.approx(0.1 / math.sqrt(2), abs=1e-3)
    one, _ = evaluate_cases(_write_samples(real, _perfect, samples=1), True, real)
    row = {r["metric"]: r for r in one}["pixel_diversity"]
    assert math.isnan(row["mean"]) and "one sample" in row["note"]


def test_a_samples_file_deleted_after_generation_names_the_way_out(tmp_path: Path, slice_volumes) -> None:
    """A samples.npz deleted inside generate's output folder (Snakemake reruns nothing for it): evaluation and
    the memorisation audits say who wrote it and how to get it back, not a bare FileNotFoundError."""
    from medsynth.evaluation.memorisation_audit import generated_images

    real = _phantom_slices(tmp_path, "CT", slice_volumes)
    cases = _write_samples(real, _perfect)
    Path(cases[0][2]).unlink()
    expected = r"samples.npz: missing from generate's output .* --forcerun generate"
    with pytest.raises(FileNotFoundError, match=expected):
        evaluate_cases(cases, True, real)
    with pytest.raises(FileNotFoundError, match=expected):
        generated_images(cases)
