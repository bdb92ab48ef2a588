"""Per-case preprocessing (medsynth.data.preprocess) on phantom cases and small synthetic volumes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from medsynth.data.geometry import resample_to_grid, to_canonical
from medsynth.data.labels import LabelError, LabelTable
from medsynth.data.intensity import IntensityMap
from medsynth.data.preprocess import PreprocessSettings, back_to_source, preprocess_case
from medsynth.io.nifti import VolumeError, check_same_grid, load_volume, save_volume, voxel_spacing

PHANTOM_CLASSES = list(range(10))
# The phantom's own names: class 1 is its body class, so preprocessing derives none.
TABLE = LabelTable.from_config([{"name": "body" if v == 1 else f"class{v}", "values": [v]} for v in PHANTOM_CLASSES])
SOURCE_SPACING = (4.0, 4.0, 6.0)

# (case index, spacing_xy): case 0 is stored RAS, case 1 LPS; None keeps the source 4 mm.
RUNS = [(0, 8.0), (1, 8.0), (0, None), (1, None)]
RUN_IDS = ["ras-8mm", "lps-8mm", "ras-native", "lps-native"]


def _write_case(case, folder: Path, image: str = "ct") -> tuple[Path, Path]:
    img = save_volume(folder / f"{image}.nii.gz", getattr(case, image), case.affine)
    lab = save_volume(folder / "label.nii.gz", case.label, case.affine)
    return img, lab


def _load_outputs(out: Path, meta: dict) -> SimpleNamespace:
    return SimpleNamespace(
        meta=meta,
        out=out,
        image=load_volume(out / "image.nii.gz", np.float32),
        label=load_volume(out / "label.nii.gz", np.uint8),
        mask=load_volume(out / "mask.nii.gz", np.uint8),
    )


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory: pytest.TempPathFactory, phantom_case):
    """(index, spacing_xy) -> outputs of preprocess_case on the phantom CT; computed once each."""
    cache: dict[tuple[int, float | None], SimpleNamespace] = {}

    def get(index: int, spacing_xy: float | None) -> SimpleNamespace:
        key = (index, spacing_xy)
        if key not in cache:
            case = phantom_case(index)
            root = tmp_path_factory.mktemp(f"pre_{index}_{spacing_xy}")
            img_path, lab_path = _write_case(case, root / "src")
            meta = preprocess_case(
                case.case_id, img_path, lab_path, root / "out", TABLE, PreprocessSettings("CT", spacing_xy)
            )
            res = _load_outputs(root / "out", meta)
            res.case, res.image_path, res.label_path = case, img_path, lab_path
            cache[key] = res
        return cache[key]

    return get


def _world_y(affine: np.ndarray, shape) -> np.ndarray:
    """World y (mm) of every voxel centre."""
    ijk = np.indices(shape).reshape(3, -1).astype(np.float64)
    return (affine[1, :3] @ ijk + affine[1, 3]).reshape(shape)


def _to_grid(indicator: np.ndarray, src_affine: np.ndarray, res: SimpleNamespace) -> np.ndarray:
    """Voxels of the preprocessed grid lying entirely inside ``indicator`` (a source-grid mask)."""
    frac = resample_to_grid(
        indicator.astype(np.float32), src_affine, res.image.affine, res.image.array.shape, order=1, cval=0.0
    )
    return frac > 0.999


def _table_indicator(case) -> np.ndarray:
    """Source voxels of the CT table: unlabelled, denser than -200 HU, below the lowest labelled voxel."""
    wy = _world_y(case.affine, case.ct.shape)
    lowest = wy[case.label > 0].min()
    return (case.label == 0) & (case.ct > -200) & (wy < lowest)


# ------------------------------------------------------------------ grid and files


@pytest.mark.parametrize("index, spacing_xy", RUNS, ids=RUN_IDS)
def test_outputs_exist_on_ras_grid_with_requested_spacing(preprocessed, index, spacing_xy) -> None:
    res = preprocessed(index, spacing_xy)
    for name in ("image.nii.gz", "label.nii.gz", "mask.nii.gz", "meta.json"):
        assert (res.out / name).is_file()
    assert res.case.orientation == ("RAS" if index == 0 else "LPS")
    check_same_grid(res.image, res.label)
    check_same_grid(res.image, res.mask)
    assert nib.aff2axcodes(res.image.affine) == ("R", "A", "S")
    expected_xy = SOURCE_SPACING[0] if spacing_xy is None else spacing_xy
    np.testing.assert_allclose(voxel_spacing(res.image.affine), [expected_xy, expected_xy, SOURCE_SPACING[2]])
    n_xy = round(96 * SOURCE_SPACING[0] / expected_xy)
    assert res.image.array.shape == (n_xy, n_xy, 16)
    assert res.image.array.dtype == np.float32
    # meta.json on disk agrees with the returned dict and the files.
    assert json.loads((res.out / "meta.json").read_text()) == json.loads(json.dumps(res.meta))
    assert res.meta["shape"] == list(res.image.array.shape)
    np.testing.assert_allclose(res.meta["affine"], res.image.affine, atol=1e-5)
    assert res.meta["source_shape"] == list(res.case.ct.shape)
    np.testing.assert_allclose(res.meta["source_affine"], res.case.affine)


@pytest.mark.parametrize("index, spacing_xy", RUNS, ids=RUN_IDS)
def test_field_of_view_is_kept_in_world_coordinates(preprocessed, index, spacing_xy) -> None:
    res = preprocessed(index, spacing_xy)
    src_aff, src_shape = res.case.affine, res.case.ct.shape
    src_corners = np.array(
        [src_aff[:3, :3] @ (np.array(c) - 0.5) + src_aff[:3, 3] for c in [(0, 0, 0), src_shape]]
    )
    new_aff, new_shape = res.image.affine, res.image.array.shape
    new_corners = np.array([new_aff[:3, :3] @ (np.array(c) - 0.5) + new_aff[:3, 3] for c in [(0, 0, 0), new_shape]])
    # Same box in world space (the corner order may differ with orientation).
    np.testing.assert_allclose(np.sort(new_corners, axis=0), np.sort(src_corners, axis=0), atol=1e-4)


# ------------------------------------------------------------------ labels and mask


@pytest.mark.parametrize("index, spacing_xy", RUNS, ids=RUN_IDS)
def test_every_labelled_voxel_is_inside_the_mask(preprocessed, index, spacing_xy) -> None:
    res = preprocessed(index, spacing_xy)
    label, mask = res.label.array, res.mask.array
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert not np.any((label > 0) & (mask == 0))
    # The widening the package does for labelled voxels outside the thresholded body is a
    # partial-volume fringe at the skin, not a real disagreement between mask and labels.
    assert res.meta["labelled_voxels_outside_mask"] <= 0.05 * np.count_nonzero(label)
    # And the mask is not simply the whole field of view.
    assert mask.mean() < 0.8


@pytest.mark.parametrize("index, spacing_xy", RUNS, ids=RUN_IDS)
def test_label_values_are_input_classes(preprocessed, index, spacing_xy) -> None:
    res = preprocessed(index, spacing_xy)
    assert res.label.array.dtype == np.uint8
    assert set(np.unique(res.label.array).tolist()) <= set(np.unique(res.case.label).tolist())
    assert res.meta["class_voxels"] == np.bincount(res.label.array.ravel(), minlength=10).tolist()


@pytest.mark.parametrize("index", [0, 1], ids=["ras", "lps"])
def test_native_spacing_label_is_the_reoriented_source(preprocessed, index) -> None:
    res = preprocessed(index, None)
    expected, _ = to_canonical(res.case.label, res.case.affine)
    np.testing.assert_array_equal(res.label.array, expected)


# ------------------------------------------------------------------ intensities


@pytest.mark.parametrize("index, spacing_xy", RUNS, ids=RUN_IDS)
def test_image_in_unit_range_and_minus_one_outside_mask(preprocessed, index, spacing_xy) -> None:
    res = preprocessed(index, spacing_xy)
    img, mask = res.image.array, res.mask.array.astype(bool)
    assert img.min() >= -1.0 and img.max() <= 1.0
    np.testing.assert_array_equal(img[~mask], -1.0)
    assert img[mask].std() > 0.05  # the body keeps its contrast
    assert res.meta["intensity"]["lo"] == -1000.0 and res.meta["intensity"]["hi"] == 1000.0
    assert res.meta["intensity"]["background"] == float(res.case.ct.min())


@pytest.mark.parametrize("index", [0, 1], ids=["ras", "lps"])
def test_ct_window_maps_hounsfield_units_linearly(preprocessed, index) -> None:
    res = preprocessed(index, None)
    ct, _ = to_canonical(res.case.ct.astype(np.float32), res.case.affine)
    mask = res.mask.array.astype(bool)
    expected = np.clip(ct, -1000.0, 1000.0) / 1000.0
    np.testing.assert_allclose(res.image.array[mask], expected[mask], atol=1e-6)
    back = IntensityMap.from_meta(res.meta["intensity"]).to_physical(res.image.array)
    inside = mask & (np.abs(ct) < 1000)
    np.testing.assert_allclose(back[inside], ct[inside], atol=0.01)


# ------------------------------------------------------------------ table and equipment


@pytest.mark.parametrize(
    "index, spacing_xy",
    [
        pytest.param(0, 8.0, id="ras-8mm"),
        pytest.param(1, 8.0, id="lps-8mm"),
        pytest.param(0, None, id="ras-native"),
        pytest.param(1, None, id="lps-native"),
    ],
)
def test_ct_table_is_outside_the_mask(preprocessed, index, spacing_xy) -> None:
    res = preprocessed(index, spacing_xy)
    source_table = _table_indicator(res.case)
    assert source_table.sum() > 500  # the phantom has a table below the patient
    table = _to_grid(source_table, res.case.affine, res)
    assert table.sum() > 100
    mask = res.mask.array.astype(bool)
    in_mask = int(np.count_nonzero(table & mask))
    if spacing_xy is None:
        assert in_mask == 0
    else:
        # At 8 mm the few-millimetre gap between skin and table is below one voxel: allow a
        # contact fringe, but the table as a whole must not be part of the body.
        assert in_mask <= 0.05 * table.sum(), f"{in_mask} of {table.sum()} table voxels in the mask"
    np.testing.assert_array_equal(res.image.array[table & ~mask], -1.0)


@pytest.mark.parametrize("index, spacing_xy", RUNS, ids=RUN_IDS)
def test_dense_equipment_is_outside_the_mask(preprocessed, index, spacing_xy) -> None:
    res = preprocessed(index, spacing_xy)
    source = (res.case.ct > 1000) & (res.case.label == 0)
    assert source.sum() > 0
    equipment = resample_to_grid(
        source.astype(np.uint8), res.case.affine, res.image.affine, res.image.array.shape, order=0
    ).astype(bool)
    assert equipment.sum() > 0
    assert not np.any(equipment & res.mask.array.astype(bool))
    np.testing.assert_array_equal(res.image.array[equipment], -1.0)


# ------------------------------------------------------------------ back to the source grid


@pytest.mark.parametrize("index, spacing_xy", RUNS, ids=RUN_IDS)
def test_back_to_source_gives_source_grid(preprocessed, index, spacing_xy) -> None:
    res = preprocessed(index, spacing_xy)
    back = back_to_source(res.label.array, res.meta, order=0, cval=0)
    src = res.case.label
    assert back.shape == src.shape
    if spacing_xy is None:
        np.testing.assert_array_equal(back, src)  # exact: only a permutation/flip was applied
    else:
        assert np.mean(back == src) > 0.85
        assert set(np.unique(back).tolist()) <= set(np.unique(src).tolist())


@pytest.mark.parametrize("storage", ["RAS", "LPS", "PLS"])
@pytest.mark.parametrize("order", [0, 1])
def test_back_to_source_covers_the_whole_field_of_view_when_the_grid_rounds_short(storage, order) -> None:
    """50 voxels of 0.7 mm on a 1.5 mm grid: 23 voxels, 0.5 mm short of the source's 35 mm. The source's
    last row and column (index 0 stored LPS) came back as cval, i.e. background under labels that reach
    the field of view's edge (a body cut by the scan's field of view). PLS: axes swapped, the general path."""
    from medsynth.data.geometry import inplane_grid

    n = 50
    # The world direction (x, y, z) of voxel axes 0 and 1.
    axis0, axis1 = {"RAS": ([0.7, 0, 0], [0, 0.7, 0]), "LPS": ([-0.7, 0, 0], [0, -0.7, 0]),
                    "PLS": ([0, -0.7, 0], [-0.7, 0, 0])}[storage]
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = axis0, axis1, [0, 0, 2.5], [17.0, 17.0, -100.0]
    assert "".join(nib.aff2axcodes(affine)) == storage
    src = np.full((n, n, 3), 5.0, np.float32) if order else np.full((n, n, 3), 2, np.uint8)
    canonical, aff_c = to_canonical(src, affine)
    shape, grid_affine = inplane_grid(canonical.shape, aff_c, 1.5)
    assert shape[:2] == (23, 23)
    grid = resample_to_grid(canonical, aff_c, grid_affine, shape, order=order, cval=0)
    meta = {"affine": grid_affine.tolist(), "source_affine": affine.tolist(), "source_shape": [n, n, 3]}
    back = back_to_source(grid, meta, order=order, cval=0)
    np.testing.assert_array_equal(back, src)  # every voxel, the last row and column included


def test_same_patient_stored_lps_gives_identical_outputs(tmp_path: Path, preprocessed) -> None:
    ras = preprocessed(0, 8.0)
    case = ras.case
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = case.ct.shape[0] - 1, case.ct.shape[1] - 1
    lps_affine = case.affine @ flip
    ct = save_volume(tmp_path / "ct.nii.gz", np.ascontiguousarray(case.ct[::-1, ::-1]), lps_affine)
    lab = save_volume(tmp_path / "label.nii.gz", np.ascontiguousarray(case.label[::-1, ::-1]), lps_affine)
    assert nib.aff2axcodes(lps_affine) == ("L", "P", "S")
    meta = preprocess_case("lps", ct, lab, tmp_path / "out", TABLE, PreprocessSettings("CT", 8.0))
    lps = _load_outputs(tmp_path / "out", meta)
    np.testing.assert_allclose(lps.image.affine, ras.image.affine, atol=1e-6)
    np.testing.assert_array_equal(lps.label.array, ras.label.array)
    np.testing.assert_array_equal(lps.mask.array, ras.mask.array)
    np.testing.assert_allclose(lps.image.array, ras.image.array, atol=1e-6)


# ------------------------------------------------------------------ refused inputs


def test_unknown_label_value_raises_naming_label_file(tmp_path: Path, phantom_case) -> None:
    case = phantom_case(0)
    assert (case.label == 9).any()
    img, lab = _write_case(case, tmp_path / "src")
    no_gas = LabelTable.from_config([{"name": f"class{v}", "values": [v]} for v in range(9)])
    with pytest.raises(LabelError) as exc:
        preprocess_case(case.case_id, img, lab, tmp_path / "out", no_gas, PreprocessSettings("CT", 8.0))
    assert str(lab) in str(exc.value) and "[9]" in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_image_label_shape_mismatch_names_both_files(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    img = save_volume(tmp_path / "ct.nii.gz", np.full((10, 10, 4), 40, dtype=np.int16), flipped_affine)
    lab = save_volume(tmp_path / "label.nii.gz", np.zeros((10, 10, 3), dtype=np.uint8), flipped_affine)
    with pytest.raises(VolumeError) as exc:
        preprocess_case("c", img, lab, tmp_path / "out", TABLE, PreprocessSettings("CT", None))
    assert str(img) in str(exc.value) and str(lab) in str(exc.value)


def test_image_label_affine_mismatch_names_both_files(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    img = save_volume(tmp_path / "ct.nii.gz", np.full((10, 10, 4), 40, dtype=np.int16), flipped_affine)
    moved = flipped_affine.copy()
    moved[2, 3] += 3.0
    lab = save_volume(tmp_path / "label.nii.gz", np.zeros((10, 10, 4), dtype=np.uint8), moved)
    with pytest.raises(VolumeError, match="affines differ") as exc:
        preprocess_case("c", img, lab, tmp_path / "out", TABLE, PreprocessSettings("CT", None))
    assert str(img) in str(exc.value) and str(lab) in str(exc.value)


def test_constant_image_is_refused(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    img = save_volume(tmp_path / "ct.nii.gz", np.full((10, 10, 4), -1000, dtype=np.int16), flipped_affine)
    lab = save_volume(tmp_path / "label.nii.gz", np.zeros((10, 10, 4), dtype=np.uint8), flipped_affine)
    with pytest.raises(ValueError, match="constant") as exc:
        preprocess_case("c", img, lab, tmp_path / "out", TABLE, PreprocessSettings("CT", None))
    assert str(img) in str(exc.value)


def test_settings_refuse_unknown_modality() -> None:
    with pytest.raises(ValueError, match="PET"):
        PreprocessSettings("PET", 4.0)


# ------------------------------------------------------------------ MR


@pytest.mark.parametrize("index", [0, 1], ids=["ras", "lps"])
def test_mr_is_scaled_to_unit_range_and_mask_holds_labels(tmp_path: Path, phantom_case, index) -> None:
    case = phantom_case(index)
    img, lab = _write_case(case, tmp_path / "src", image="mr")
    meta = preprocess_case(case.case_id, img, lab, tmp_path / "out", TABLE, PreprocessSettings("MR", 8.0))
    res = _load_outputs(tmp_path / "out", meta)
    image, mask = res.image.array, res.mask.array.astype(bool)
    assert image.min() >= -1.0 and image.max() <= 1.0
    assert not np.any((res.label.array > 0) & ~mask)
    np.testing.assert_array_equal(image[~mask], -1.0)
    lo, hi = meta["intensity"]["lo"], meta["intensity"]["hi"]
    assert 0.0 <= lo < hi <= float(case.mr.max())
    # lo/hi are the 0.5th/99.5th percentiles of the body: only ~0.5% of body voxels clip at each end.
    body = image[mask]
    assert np.mean(body <= -1.0 + 1e-6) < 0.02
    assert 0.001 < np.mean(body >= 1.0 - 1e-6) < 0.02
    assert mask.mean() < 0.8


# ------------------------------------------------------------------ the opening that detaches the table


def _bridged_table_case(folder: Path) -> tuple[Path, Path, np.ndarray]:
    """8 mm in-plane voxels: a body, and a table joined to it by a one-voxel-wide (8 mm) bridge."""
    shape = (40, 40, 3)
    ct = np.full(shape, -1000, dtype=np.int16)
    label = np.zeros(shape, dtype=np.uint8)
    x, y = np.mgrid[: shape[0], : shape[1]]
    body = ((x - 20) / 10.0) ** 2 + ((y - 25) / 8.0) ** 2 <= 1.0  # lowest body row: y = 17
    ct[body] = 40
    label[body] = 1
    table = np.zeros(shape, dtype=bool)
    table[5:36, 8:11] = True  # plate, 3 voxels thick, 6 rows (48 mm) below the body
    bridge = np.zeros(shape, dtype=bool)
    bridge[20, 11:17] = True  # one voxel wide: 8 mm, thinner than a 12 mm opening disk
    ct[table | bridge] = 200
    affine = np.diag([8.0, 8.0, 5.0, 1.0])
    affine[:3, 3] = [-160.0, -160.0, 0.0]
    img = save_volume(folder / "ct.nii.gz", ct, affine)
    lab = save_volume(folder / "label.nii.gz", label, affine)
    return img, lab, table


@pytest.mark.parametrize(
    "opening_mm",
    [
        6.0,
        8.0,
        12.0,
    ],
)
def test_opening_detaches_table_joined_by_thin_bridge(tmp_path: Path, opening_mm: float) -> None:
    img, lab, table = _bridged_table_case(tmp_path / "src")
    two = LabelTable.from_config([{"name": "background", "values": [0]}, {"name": "body", "values": [1]}])
    settings = PreprocessSettings("CT", None, opening_mm=opening_mm)
    preprocess_case("bridge", img, lab, tmp_path / "out", two, settings)
    mask = load_volume(tmp_path / "out" / "mask.nii.gz", np.uint8).array.astype(bool)
    label = load_volume(tmp_path / "out" / "label.nii.gz", np.uint8).array
    assert not np.any(table & mask), f"{np.count_nonzero(table & mask)} table voxels in the body mask"
    assert np.all(mask[label > 0])
    assert mask.sum() >= np.count_nonzero(label)


@pytest.mark.parametrize("spacing_xy", [2.5, 0.7])  # coarser and finer than the source
def test_label_lookup_before_or_after_resampling_gives_the_same_classes(spacing_xy: float) -> None:
    from medsynth.data.geometry import canonical_grid, inplane_grid
    from medsynth.data.preprocess import labels_on_grid
    from medsynth.io.nifti import Volume

    rng = np.random.default_rng(4)
    affine = np.array([[-1.2, 0, 0, 30.0], [0, -1.1, 0, 12.0], [0, 0, 3.0, -5.0], [0, 0, 0, 1]])
    raw = rng.choice(np.array([0, 2, 3, 5], dtype=np.uint8), size=(23, 19, 4))
    table = LabelTable.from_config([{"name": "bg", "values": [0]}, {"name": "a", "values": [1, 2, 3, 4]},
                                    {"name": "b", "values": [5]}])
    shape_c, aff_c = canonical_grid(raw.shape, affine)
    shape, grid = inplane_grid(shape_c, aff_c, spacing_xy)
    assert table.lists_every_value_of(raw)  # uint8 and every value known: looked up after resampling
    after = labels_on_grid(Volume(raw, affine, Path("lab.nii.gz")), affine, table, aff_c, grid, shape)
    before = labels_on_grid(Volume(raw.astype(np.int32), affine, Path("lab.nii.gz")), affine, table, aff_c, grid,
                             shape)
    assert after.dtype == before.dtype == np.uint8 and after.shape == tuple(shape)
    np.testing.assert_array_equal(after, before)
    assert set(np.unique(after)) == {0, 1, 2}


def test_label_map_is_reoriented_with_the_images_geometry(tmp_path: Path) -> None:
    """Near 45 degrees, affines a tolerated 4e-4 apart reorient to different axis orders; the label map,
    accepted as sharing the image's grid, must follow the image's reorientation, not its own."""
    c = np.sqrt(0.5)
    base = np.array([[c, -c, 0, 10.0], [c, c, 0, -5.0], [0, 0, 3.0, 0], [0, 0, 0, 1]])
    img_aff, lab_aff = base.copy(), base.copy()
    img_aff[0, 0] += 2e-4
    lab_aff[0, 0] -= 2e-4
    assert nib.aff2axcodes(img_aff) != nib.aff2axcodes(lab_aff)
    ct = np.full((40, 30, 5), -1000, dtype=np.int16)
    ct[5:35, 4:26] = 40
    raw = np.zeros(ct.shape, dtype=np.uint8)
    raw[8:20, 6:12] = 1  # asymmetric: a transposed or flipped copy would not match
    save_volume(tmp_path / "ct.nii.gz", ct, img_aff)
    save_volume(tmp_path / "label.nii.gz", raw, lab_aff)
    table = LabelTable.from_config([{"name": "background", "values": [0]}, {"name": "organ", "values": [1]}])
    preprocess_case("c", tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz", tmp_path / "out", table,
                    PreprocessSettings("CT", None, opening_mm=2.0))
    out = load_volume(tmp_path / "out/label.nii.gz").array
    organ = np.where(out == table.body_class, 0, out)  # the rest of the body is the derived body class
    np.testing.assert_array_equal(organ, to_canonical(raw, img_aff)[0])


def test_an_image_only_case_gets_its_body_mask_as_label_map(tmp_path: Path, phantom_case) -> None:
    """No label map (image-only, LPS-stored MR): the label map is the body class exactly inside the body
    mask, on the image's training grid, in RAS."""
    case = phantom_case(1)  # stored LPS
    img = save_volume(tmp_path / "src" / "mr.nii.gz", case.mr, case.affine)
    table = LabelTable.from_config(None)
    assert table.names == ("background", "body")
    meta = preprocess_case(case.case_id, img, None, tmp_path / "out", table, PreprocessSettings("MR", 8.0),
                           qc_path=tmp_path / "qc.png")
    out = _load_outputs(tmp_path / "out", meta)
    assert meta["image_only"] and meta["source_label"] == "" and meta["body_class"] == 1
    assert np.array_equal(out.label.array, out.mask.array)  # body class (1) exactly inside the mask
    assert out.mask.array.mean() > 0.05 and (tmp_path / "qc.png").is_file()
    assert nib.aff2axcodes(out.label.affine) == ("R", "A", "S")
    check_same_grid(out.image, out.label)
