"""Per-class intensity (medsynth.evaluation.class_intensity): a perfect generator scores perfectly; an
organ painted too bright is flagged; classes are matched by name; every NA cell says why."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medsynth.data.intensity import IntensityMap
from medsynth.data.slicing import CaseSlices
from medsynth.evaluation.class_intensity import BODY_DIFFERS, NO_PIXELS, NO_SPREAD, class_intensity, intensity_summary
from medsynth.evaluation.test_metrics import read_metas
from medsynth.io.nifti import load_volume
from evaluation_cases import (LEVELS, PHANTOM_TABLE, SEG_NAMES, level_cases as _level_cases, perfect as _perfect,
                              phantom_slices as _phantom_slices, write_samples as _write_samples)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_per_class_intensity_of_a_perfect_generator_is_perfect(tmp_path: Path, slice_volumes, modality: str) -> None:
    """The phantoms through preprocessing: CT in HU through each case's meta.json curve, MR as stored."""
    real = _phantom_slices(tmp_path, modality, slice_volumes)
    metas = {f"{modality}{i}": json.loads((tmp_path / f"{modality}{i}" / "pre" / "meta.json").read_text())
             for i in (0, 1)}
    rows = {r["class"]: r for r in class_intensity(_write_samples(real, _perfect), True, real,
                                                    PHANTOM_TABLE.names, metas, metas,
                                                    reference_names=PHANTOM_TABLE.names)}
    assert list(rows) == list(PHANTOM_TABLE.names)
    assert {r["unit"] for r in rows.values()} == {"HU" if modality == "CT" else "[-1, 1]"}
    for name, r in rows.items():
        assert r["voxels_generated"] == 2 * r["voxels_real"] > 0, name  # both samples of every case count
        assert r["mean_abs_error"] == 0.0 and not r["outside_real_range"], name
        assert r["std_ratio"] == 1.0 or (name == "background" and math.isnan(r["std_ratio"])), name
        assert r["note"] == (NO_SPREAD if math.isnan(r["std_ratio"]) else ""), name  # NA says why
    assert intensity_summary(list(rows.values())) == {
        "metric": "classes_outside_real_range", "mean": 0, "std": pytest.approx(math.nan, nan_ok=True), "n": 10,
        "note": ""}
    if modality == "MR":
        assert all(-1 <= r["p05_real"] <= r["p95_real"] <= 1 for r in rows.values())
        return
    # The source CT's own HU per class (all slices, source grid: partial volumes differ a little).
    source = {name: [] for name in ("liver", "kidney", "aorta", "lung", "bone")}
    for i in (0, 1):
        ct, label = (load_volume(tmp_path / f"CT{i}" / f).array for f in ("image.nii.gz", "label.nii.gz"))
        for name in source:
            source[name].append(ct[label == PHANTOM_TABLE.names.index(name)])
    for name, values in source.items():
        assert rows[name]["mean_real"] == pytest.approx(np.concatenate(values).mean(), abs=20), name


def _organ_cases(root: Path, curve: IntensityMap, modality: str = "CT", shift: dict[int, float] | None = None,
                 sizes=(3, 2)) -> tuple[list[Path], dict[str, dict]]:
    """Slice files of small cases whose classes have their own HU, stored through ``curve`` as preprocessing
    stores them, and their meta.json files. ``shift``: HU added per class (a generator that drifts)."""
    hu = np.array([-1000.0, -50.0, 60.0, 150.0])  # background, body, liver, kidney
    rng = np.random.default_rng(0)
    files = []
    for c, n in enumerate(sizes):
        labels = np.zeros((n, 32, 32), np.uint8)
        labels[:, 4:28, 4:28] = 1
        labels[:, 8:18, 6 + c:16 + c] = 2
        labels[:, 20:26, 8:14] = 3
        image = hu[labels] + rng.normal(0, 10, labels.shape) * (labels > 0)
        for k, v in (shift or {}).items():
            image[labels == k] += v
        slices = CaseSlices(curve.to_unit(image), labels, (labels > 0).astype(np.uint8), np.arange(n, dtype=np.int32),
                            np.zeros((n, 2), np.int32))
        files.append(slices.save(root / f"case{c}" / "slices.npz"))
        (root / f"case{c}" / "meta.json").write_text(json.dumps({"modality": modality, "intensity": curve.to_meta()}))
    return files, read_metas(sorted(root.glob("case*/meta.json")))


SOFT = IntensityMap.ct((-1000, 1000), (-150, 250), 0.6)  # not one slope: the conversion must use the knots


def test_an_organ_painted_300_hu_too_bright_is_flagged(tmp_path: Path) -> None:
    real, metas = _organ_cases(tmp_path / "real", SOFT)
    bright, _ = _organ_cases(tmp_path / "bright", SOFT, shift={2: 300.0})

    def liver_300_hu_brighter(r: CaseSlices, c: int, k: int) -> np.ndarray:
        return CaseSlices.load(bright[c]).images

    names = ["background", "body", "liver", "kidney"]
    rows = class_intensity(_write_samples(real, liver_300_hu_brighter), True, real, names, metas, metas,
                           reference_names=names)
    by_name = {r["class"]: r for r in rows}
    assert by_name["liver"]["outside_real_range"] and by_name["liver"]["unit"] == "HU"
    assert by_name["liver"]["mean_abs_error"] == pytest.approx(300.0, abs=1.0)  # float16 storage: < 1 HU
    assert by_name["liver"]["std_ratio"] == pytest.approx(1.0, abs=0.05)
    assert by_name["kidney"]["mean_abs_error"] < 1.0 and not by_name["kidney"]["outside_real_range"]
    summary = intensity_summary(rows)
    assert summary["mean"] == 1 and summary["note"] == "liver" and summary["n"] == 4


def test_unpaired_mode_compares_in_the_image_datasets_units(tmp_path: Path) -> None:
    """Generated images imitate the image dataset: they go through its curve, not their label maps' case's."""
    labels_ct, label_metas = _organ_cases(tmp_path / "labels", IntensityMap.window(-1000, 1000))
    names = ["background", "body", "liver", "kidney"]
    narrow = IntensityMap.window(-1200, 300)
    images_ct, image_metas = _organ_cases(tmp_path / "images", narrow)

    def like_the_image_dataset(r: CaseSlices, c: int, k: int) -> np.ndarray:  # same anatomy in both datasets
        return CaseSlices.load(images_ct[c]).images

    cases = _write_samples(labels_ct, like_the_image_dataset)
    rows = class_intensity(cases, False, images_ct, names, label_metas, image_metas, reference_names=names)
    assert all(r["mean_abs_error"] == 0.0 and r["unit"] == "HU" for r in rows)
    assert rows[2]["mean_real"] == pytest.approx(60.0, abs=5.0)  # liver in HU through the image dataset's curve
    # The label cases' own curve would have read the same pixels as other HU: the wrong choice shows.
    wrong = class_intensity(cases, True, images_ct, names, label_metas, image_metas, reference_names=names)
    assert wrong[2]["mean_abs_error"] > 50 and wrong[2]["outside_real_range"]

    mr, mr_metas = _organ_cases(tmp_path / "mr", IntensityMap.window(-1000, 1000), modality="MR")
    rows = class_intensity(_write_samples(labels_ct, like_the_image_dataset), False, mr, names, label_metas,
                           mr_metas, reference_names=names)
    assert {r["unit"] for r in rows} == {"[-1, 1]"}  # MR has no absolute scale: compared as stored
    mr_liver = np.concatenate([s.images[s.labels == 2] for s in map(CaseSlices.load, mr)])
    assert rows[2]["mean_real"] == pytest.approx(mr_liver.mean(), abs=1e-6)
    assert rows[2]["mean_generated"] == pytest.approx(float(narrow.to_unit(np.array(60.0))), abs=0.01)


def test_unpaired_reference_with_two_curves_or_a_missing_meta_is_an_error(tmp_path: Path) -> None:
    labels_ct, metas = _organ_cases(tmp_path / "labels", SOFT)
    other, other_metas = _organ_cases(tmp_path / "other", IntensityMap.window(-500, 500))
    cases = _write_samples(labels_ct, _perfect)
    mixed = {"case0": metas["case0"], "case1": other_metas["case1"]}
    with pytest.raises(ValueError, match="different intensity curves.*rerun the preprocessing"):
        class_intensity(cases, False, labels_ct, ["a", "b", "c", "d"], metas, mixed,
                        reference_names=["a", "b", "c", "d"])
    with pytest.raises(KeyError, match="case1/slices.npz: no meta.json of case 'case1'"):
        class_intensity(cases, True, labels_ct, ["a", "b", "c", "d"], {"case0": metas["case0"]}, metas,
                        reference_names=["a", "b", "c", "d"])


def _intensity_against(tmp_path: Path, image_names: list[str] | None, edit=None, **kwargs) -> list[dict]:
    """class_intensity of a perfect generator (unpaired: the label dataset's own images) against an image
    dataset of the same anatomy labelled by ``image_names`` (``edit(slices)`` changes its cases first)."""
    real = _level_cases(tmp_path / "labels", SEG_NAMES)
    folder = tmp_path / ("images" if image_names is None else "-".join(image_names))
    images = _level_cases(folder, image_names or ["background", "body"])
    for path in images if edit else []:
        edit(CaseSlices.load(path)).save(path)
    metas, image_metas = (read_metas(sorted(f.glob("case*/meta.json"))) for f in (tmp_path / "labels", folder))
    return class_intensity(_write_samples(real, _perfect), False, images, SEG_NAMES, metas, image_metas,
                           reference_names=image_names, **kwargs)


def test_class_intensity_matches_the_image_datasets_classes_by_name(tmp_path: Path) -> None:
    """Another order: each class against its namesake (by position, the liver met the kidney's intensities)."""
    rows = _intensity_against(tmp_path, ["background", "body", "kidney", "liver"])
    assert [r["class"] for r in rows] == SEG_NAMES
    for r in rows:
        assert r["mean_real"] == r["mean_generated"] == pytest.approx(LEVELS[r["class"]], abs=1e-3), r["class"]
        assert r["voxels_generated"] == 2 * r["voxels_real"] > 0 and r["mean_abs_error"] == 0.0
        assert r["note"] == (NO_SPREAD if r["std_real"] == 0 else "")  # some classes are one level here
    assert intensity_summary(rows) == {"metric": "classes_outside_real_range", "mean": 0, "n": 4, "note": "",
                                       "std": pytest.approx(math.nan, nan_ok=True)}


def test_no_class_compared_is_na_not_zero_classes_outside() -> None:
    """Every test slice dropped: no class has pixels on both sides, and "0 classes outside" would read as a
    pass."""
    rows = [{"class": n, "voxels_real": 0, "voxels_generated": 0, "outside_real_range": False, "note": NO_PIXELS}
            for n in ("liver", "kidney")]
    summary = intensity_summary(rows)
    assert math.isnan(summary["mean"]) and summary["n"] == 0
    assert summary["note"].startswith("not computed: no class has test pixels on both sides")


def test_class_intensity_leaves_out_classes_only_the_image_dataset_labels(tmp_path: Path) -> None:
    def with_spleen(slices: CaseSlices) -> CaseSlices:  # a bright spleen in the body, id 4 in its table
        slices.images[:, 22:27, 20:26], slices.labels[:, 22:27, 20:26] = 0.9, 4
        return slices

    rows = {r["class"]: r for r in _intensity_against(tmp_path, ["background", "liver", "kidney", "body", "spleen"],
                                                      with_spleen)}
    # Its pixels are not the body's: the real body keeps its own intensity, and 30 pixels a slice fewer.
    assert rows["body"]["mean_real"] == pytest.approx(LEVELS["body"], abs=1e-6)
    assert rows["body"]["voxels_generated"] == 2 * (rows["body"]["voxels_real"] + 5 * 30)
    assert rows["body"]["note"].startswith(BODY_DIFFERS) and rows["liver"]["mean_abs_error"] == 0.0


def test_class_intensity_of_a_class_the_image_dataset_lacks_is_na_and_noted(tmp_path: Path) -> None:
    rows = {r["class"]: r for r in _intensity_against(tmp_path, ["background", "liver", "body"])}  # kidney: body
    assert rows["kidney"]["voxels_real"] == 0 and math.isnan(rows["kidney"]["mean_abs_error"])
    assert rows["kidney"]["voxels_generated"] > 0 and "no class of this name" in rows["kidney"]["note"]
    assert not rows["kidney"]["outside_real_range"] and rows["liver"]["mean_abs_error"] == 0.0
    summary = intensity_summary(list(rows.values()))
    assert summary["n"] == 3 and summary["note"] == "not compared: kidney (not in the image dataset's label table)"


def test_a_class_no_real_test_slice_shows_is_na_and_noted(tmp_path: Path) -> None:
    """Both tables name the kidney, but no real test slice holds one (relabelled body): NA, saying so, and
    the summary names it among the classes not compared."""
    def no_kidney(slices: CaseSlices) -> CaseSlices:
        slices.labels[slices.labels == SEG_NAMES.index("kidney")] = SEG_NAMES.index("body")
        return slices

    rows = {r["class"]: r for r in _intensity_against(tmp_path, SEG_NAMES, no_kidney)}
    assert rows["kidney"]["voxels_real"] == 0 and rows["kidney"]["voxels_generated"] > 0
    assert math.isnan(rows["kidney"]["mean_abs_error"]) and rows["kidney"]["note"] == NO_PIXELS.format("real")
    summary = intensity_summary(list(rows.values()))
    assert summary["n"] == 3 and "not compared: kidney (no test pixel of the class on one side)" in summary["note"]


def test_class_intensity_against_an_image_only_dataset_is_na_with_the_reason(tmp_path: Path) -> None:
    reason = "not computed: the image dataset mr has no label maps"
    rows = _intensity_against(tmp_path, None, not_computed=reason)
    assert all(r["voxels_real"] == 0 and math.isnan(r["mean_real"]) and r["note"] == reason for r in rows)
    assert all(r["voxels_generated"] > 0 and not r["outside_real_range"] for r in rows)
    summary = intensity_summary(rows)
    assert math.isnan(summary["mean"]) and summary["n"] == 0 and summary["note"] == reason
