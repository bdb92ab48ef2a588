"""Behaviour of the built-in synthetic cohort (medsynth.data.phantom)."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medsynth.data.phantom import PHANTOM_LABELS, PhantomCase, make_case, write_cohort
from medsynth.io.nifti import load_volume, voxel_spacing

SHAPE = (96, 96, 16)
SPACING = (4.0, 4.0, 6.0)
SEED = 7
N_CASES = 4
LIVER, SPLEEN, LUNG, GAS, MUSCLE, BODY = 3, 4, 6, 9, 2, 1


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom_a")
    return write_cohort(out, N_CASES, SEED, SHAPE, SPACING)


@pytest.fixture(scope="module")
def cases() -> list[PhantomCase]:
    return [make_case(i, SEED, SHAPE, SPACING) for i in range(N_CASES)]


def _world(case: PhantomCase, mask: np.ndarray) -> np.ndarray:
    """World (RAS mm) coordinates of the voxels in ``mask``, one row per voxel."""
    idx = np.argwhere(mask).astype(np.float64)
    return idx @ case.affine[:3, :3].T + case.affine[:3, 3]


def _rows(tsv: Path) -> list[dict[str, str]]:
    with tsv.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# ---------------------------------------------------------------- determinism


def test_same_inputs_give_identical_case() -> None:
    a = make_case(2, SEED, SHAPE, SPACING)
    b = make_case(2, SEED, SHAPE, SPACING)
    for name in ("ct", "mr", "label", "affine"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.case_id == b.case_id == "phantom_002"


def test_other_index_or_seed_gives_other_anatomy() -> None:
    base = make_case(2, SEED, SHAPE, SPACING)
    other_index = make_case(4, SEED, SHAPE, SPACING)  # same orientation as index 2
    other_seed = make_case(2, SEED + 1, SHAPE, SPACING)
    assert not np.array_equal(base.label, other_index.label)
    assert not np.array_equal(base.label, other_seed.label)
    assert not np.array_equal(base.ct, other_index.ct)


def test_rewriting_cohort_gives_identical_arrays(cohort: Path, tmp_path: Path) -> None:
    again = write_cohort(tmp_path / "b", N_CASES, SEED, SHAPE, SPACING)
    assert again.read_text() == cohort.read_text()
    for row in _rows(cohort):
        for column in ("image", "mr", "label"):
            first = nib.load(str(cohort.parent / row[column]))
            second = nib.load(str(again.parent / row[column]))
            assert first.get_data_dtype() == second.get_data_dtype()
            np.testing.assert_array_equal(np.asanyarray(first.dataobj), np.asanyarray(second.dataobj))
            np.testing.assert_array_equal(first.affine, second.affine)


def test_case_does_not_depend_on_the_rest_of_the_cohort(cohort: Path) -> None:
    alone = make_case(3, SEED, SHAPE, SPACING)
    saved = load_volume(cohort.parent / "phantom_003" / "label.nii.gz")
    np.testing.assert_array_equal(saved.array, alone.label)
    np.testing.assert_array_equal(load_volume(cohort.parent / "phantom_003" / "ct.nii.gz").array, alone.ct)


# ---------------------------------------------------------------- labels


def test_labels_and_dtypes(cases: list[PhantomCase]) -> None:
    for case in cases:
        present = set(np.unique(case.label).tolist())
        assert present <= set(PHANTOM_LABELS)
        assert len(present) >= 8, (case.case_id, present)
        assert (case.ct.dtype, case.mr.dtype, case.label.dtype) == (np.int16, np.int16, np.uint8)
        assert case.ct.shape == case.mr.shape == case.label.shape == SHAPE
        assert case.mr.min() >= 0


def test_default_grid_shows_every_class() -> None:
    for index in (0, 1):
        case = make_case(index, SEED)
        assert case.label.shape == (256, 256, 32)
        assert set(np.unique(case.label).tolist()) == set(PHANTOM_LABELS), case.case_id


# ---------------------------------------------------------------- files and geometry


def test_cases_tsv_lists_every_case(cohort: Path) -> None:
    assert cohort.name == "cases.tsv"
    header = cohort.read_text().splitlines()[0]
    assert header == "case_id\timage\tlabel\tmodality\tmr"
    rows = _rows(cohort)
    ids = [r["case_id"] for r in rows]
    assert ids == sorted(ids) == [f"phantom_{i:03d}" for i in range(N_CASES)]
    for row in rows:
        assert row["modality"] == "CT"
        assert row["image"] == f"{row['case_id']}/ct.nii.gz"
        for column in ("image", "label", "mr"):
            assert not Path(row[column]).is_absolute()
            assert (cohort.parent / row[column]).is_file()


def test_saved_files_keep_affine_spacing_and_orientation(cohort: Path, cases: list[PhantomCase]) -> None:
    codes = {}
    for case in cases:
        for name, dtype in (("ct", np.int16), ("mr", np.int16), ("label", np.uint8)):
            img = nib.load(str(cohort.parent / case.case_id / f"{name}.nii.gz"))
            np.testing.assert_allclose(img.affine, case.affine, atol=1e-5)
            np.testing.assert_allclose(voxel_spacing(img.affine), SPACING)
            assert img.get_data_dtype() == dtype
        img = nib.load(str(cohort.parent / case.case_id / "label.nii.gz"))
        codes[case.case_id] = "".join(nib.aff2axcodes(img.affine))
        assert codes[case.case_id] == case.orientation
        assert "".join(nib.aff2axcodes(nib.as_closest_canonical(img).affine)) == "RAS"
    assert {"RAS", "LPS"} <= set(codes.values())


def test_lps_case_maps_voxels_to_the_same_world_grid_as_ras(cases: list[PhantomCase]) -> None:
    ras, lps = cases[0], cases[1]
    canon = nib.as_closest_canonical(nib.Nifti1Image(lps.label, lps.affine))
    # Same grid as an unflipped case: the flip changed storage, not geometry.
    np.testing.assert_allclose(canon.affine, ras.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(canon.dataobj), np.flip(lps.label, axis=(0, 1)))
    # The volume is centred near the world origin.
    centre = ras.affine @ np.append((np.asarray(SHAPE) - 1) / 2.0, 1.0)
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-6)


def test_anatomy_is_drawn_in_millimetres() -> None:
    """The same patient on a grid twice as fine has the same organ volumes in mm^3."""
    coarse = make_case(0, SEED, SHAPE, SPACING)
    fine = make_case(0, SEED, (192, 192, 32), (2.0, 2.0, 3.0))
    for cls in (LIVER, SPLEEN, 5):
        v_coarse = (coarse.label == cls).sum() * np.prod(SPACING)
        v_fine = (fine.label == cls).sum() * 2.0 * 2.0 * 3.0
        assert v_fine == pytest.approx(v_coarse, rel=0.15), PHANTOM_LABELS[cls]


# ---------------------------------------------------------------- anatomy


def test_every_label_lies_inside_one_closed_body(cases: list[PhantomCase]) -> None:
    for case in cases:
        body = case.label > 0
        for z in range(body.shape[2]):
            _, n = ndimage.label(body[:, :, z])
            assert n == 1, (case.case_id, z)
            # No background hole inside the outline: everything within is labelled.
            np.testing.assert_array_equal(ndimage.binary_fill_holes(body[:, :, z]), body[:, :, z])
        # Labelled tissue is tissue: well inside each structure, CT is not air
        # (lung and gas are the air-filled exceptions).
        for cls in set(np.unique(case.label).tolist()) - {0, LUNG, GAS}:
            core = ndimage.binary_erosion(case.label == cls)
            assert (case.ct[core] > -500).all(), (case.case_id, PHANTOM_LABELS[cls])


def test_table_lies_below_the_body_in_every_slice(cases: list[PhantomCase]) -> None:
    for case in cases:
        lowest_body_y = _world(case, case.label > 0)[:, 1].min()
        dense = (case.ct > 0) & (case.label == 0)
        world_y = np.full(case.label.shape, np.inf)
        world_y[dense] = _world(case, dense)[:, 1]
        table = dense & (world_y < lowest_body_y)
        assert table.any(axis=(0, 1)).all(), case.case_id  # spans all z
        # Wider than the body, like a real couch (its curved edges rise
        # beside the body, so count all dense background below body centre).
        body_xyz = _world(case, case.label > 0)
        couch = dense & (case.ct < 1000) & (world_y < body_xyz[:, 1].mean())
        assert np.ptp(_world(case, couch)[:, 0]) > np.ptp(body_xyz[:, 0])
        # Invisible on MR.
        assert np.median(case.mr[table]) < 0.1 * np.median(case.mr[case.label == BODY])


def test_equipment_is_outside_and_apart_from_the_body(cases: list[PhantomCase]) -> None:
    for case in cases:
        metal = (case.ct > 1000) & (case.label == 0)
        assert metal.sum() >= 3, case.case_id
        # Not part of the table: it lies above the body's lowest point.
        lowest_body_y = _world(case, case.label > 0)[:, 1].min()
        assert _world(case, metal)[:, 1].min() > lowest_body_y
        # Not touching: at least a few mm of air between it and any label.
        dist_mm = ndimage.distance_transform_edt(case.label == 0, sampling=SPACING)
        assert dist_mm[metal].min() >= 8.0, case.case_id


def test_liver_is_on_patient_right_in_world_coordinates(cases: list[PhantomCase]) -> None:
    # RAS+ world: +x is the patient's right, so the liver has x > 0 and the spleen x < 0
    # (as TotalSegmentator's labels of the real CT in ../shared/data: liver at x = +64 mm).
    # Checked for RAS- and LPS-stored cases alike, through each affine.
    assert {c.orientation for c in cases} == {"RAS", "LPS"}
    for case in cases:
        liver_x = _world(case, case.label == LIVER)[:, 0].mean()
        spleen_x = _world(case, case.label == SPLEEN)[:, 0].mean()
        aorta_x = _world(case, case.label == 8)[:, 0].mean()
        assert spleen_x < aorta_x < 0 < liver_x, case.case_id  # aorta left of the midline, IVC right


def test_lungs_only_in_cranial_slices(cases: list[PhantomCase]) -> None:
    for case in cases:
        z_lung = _world(case, case.label == LUNG)[:, 2]
        z_kidney = _world(case, case.label == 5)[:, 2]
        assert np.median(z_lung) > np.median(z_kidney)
        assert z_lung.min() > _world(case, case.label > 0)[:, 2].min()


def test_small_field_of_view_shrinks_patient_to_fit() -> None:
    shape, spacing = (48, 48, 8), (2.0, 2.0, 4.0)  # 96 mm: a third of a real abdomen
    case = make_case(0, SEED, shape, spacing)
    body = case.label > 0
    xs, ys = np.nonzero(body.any(axis=2))
    margin_x, margin_y = int(0.05 * shape[0]), int(0.05 * shape[1])
    assert xs.min() >= margin_x and xs.max() < shape[0] - margin_x
    assert ys.min() >= margin_y
    dense = (case.ct > 0) & (case.label == 0)
    assert dense[:, : ys.min(), :].any()  # table still in view below the body (RAS: low y)
    assert len(np.unique(case.label)) >= 8


# ---------------------------------------------------------------- intensities


def test_ct_values_are_plausible(cases: list[PhantomCase]) -> None:
    for case in cases:
        assert 30 <= np.median(case.ct[case.label == LIVER]) <= 90
        assert np.median(case.ct[case.label == LUNG]) < -700
        assert np.median(case.ct[case.label == GAS]) < -700
        # Air in front of the body (anterior = high world y), away from table.
        top_body_y = _world(case, case.label > 0)[:, 1].max()
        air = np.zeros(case.label.shape, dtype=bool)
        air[case.label == 0] = _world(case, case.label == 0)[:, 1] > top_body_y + 10.0
        assert air.sum() > 100
        assert np.median(case.ct[air]) < -900
        # Scanner noise (sigma 10-20 HU): air is not a constant. Interquartile
        # range, because the cable may lie in this region.
        q25, q75 = np.percentile(case.ct[air], [25, 75])
        assert 5 < q75 - q25 < 40


def test_mr_has_t1_like_contrasts(cases: list[PhantomCase]) -> None:
    for case in cases:
        med = {cls: np.median(case.mr[case.label == cls]) for cls in PHANTOM_LABELS}
        assert med[LIVER] > med[SPLEEN]
        assert med[BODY] > med[MUSCLE]
        assert med[LUNG] < 0.2 * med[LIVER]
        assert med[0] < 0.1 * med[BODY]  # background near zero


def test_mr_air_is_noisy_and_tissue_shaded_like_a_real_scan(cases: list[PhantomCase]) -> None:
    """What a real abdominal MR has and a body mask must cope with: Rician noise in the air at a
    few per cent of tissue intensity, and a smooth bias field across the body."""
    for case in cases:
        fat = np.median(case.mr[case.label == BODY])
        air = case.mr[(case.label == 0) & (ndimage.distance_transform_edt(case.label == 0) > 3)]
        # Rayleigh (magnitude of complex noise): mean/sd = sqrt(pi / (4 - pi)) = 1.91
        assert 0.015 * fat < air.std() < 0.05 * fat, case.case_id
        assert 1.6 < air.mean() / air.std() < 2.3, case.case_id
        # Fat (CT below -80 HU inside the body class): a smooth quadratic fitted to its MR
        # intensity over the body spans more than 8 % of its mean (the coil shading).
        fat_voxels = (case.label == BODY) & (case.ct < -80)
        idx = np.argwhere(fat_voxels).astype(np.float64)
        x, y, z = ((idx - idx.mean(axis=0)) / idx.std(axis=0)).T
        design = np.c_[np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z]
        values = case.mr[fat_voxels].astype(np.float64)
        smooth = design @ np.linalg.lstsq(design, values, rcond=None)[0]
        assert np.ptp(np.percentile(smooth, [2, 98])) > 0.08 * values.mean(), case.case_id


def test_invalid_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="index"):
        make_case(-1, SEED, SHAPE, SPACING)
    with pytest.raises(ValueError, match="spacing"):
        make_case(0, SEED, SHAPE, (4.0, 0.0, 6.0))
    with pytest.raises(ValueError, match="shape"):
        make_case(0, SEED, (8, 8, 4), SPACING)
    with pytest.raises(ValueError, match="n_cases"):
        write_cohort(tmp_path, 0, SEED, SHAPE, SPACING)
