"""Preprocessing and slicing of one real abdominal CT (TotalSegmentator example, shared data)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from medsynth.data.labels import LabelTable
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.data.slicing import SliceSettings, slice_case
from medsynth.io.nifti import load_volume

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "totalseg-example"
SIZE = 64
MIN_BODY = 0.05
# Below the lowest labelled voxel there is still unlabelled body (posterior skin and fat:
# TotalSegmentator's "total" task has no body-outline class); the table lies further down.
MARGIN_MM = 24.0


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    ct_path, label_path = DATA / "ct.nii.gz", DATA / "label.nii.gz"
    if not (ct_path.is_file() and label_path.is_file()):
        pytest.skip(f"real CT example not available at {DATA}")
    source = load_volume(label_path, np.int32).array
    present = [int(v) for v in np.unique(source) if v != 0]
    table = LabelTable.from_config(
        [{"name": "background", "values": [0]}] + [{"name": f"ts_{v}", "values": [v]} for v in present]
    )
    out = tmp_path_factory.mktemp("real_ct")
    meta = preprocess_case("real", ct_path, label_path, out, table, PreprocessSettings("CT", None))
    image = load_volume(out / "image.nii.gz", np.float32)
    label = load_volume(out / "label.nii.gz", np.uint8)
    mask = load_volume(out / "mask.nii.gz", np.uint8)
    ct = load_volume(ct_path, np.float32)
    assert nib.aff2axcodes(ct.affine) == ("R", "A", "S")  # as documented: the grids coincide
    np.testing.assert_allclose(image.affine, ct.affine, atol=1e-4)
    slices = slice_case(image.array, label.array, mask.array, SliceSettings(SIZE, MIN_BODY))
    return SimpleNamespace(
        meta=meta,
        n_classes=table.num_classes,
        image=image.array,
        label=label.array,
        # TotalSegmentator's structures, without the body class that preprocessing derives
        organs=(label.array > 0) & (label.array != table.body_class),
        mask=mask.array.astype(bool),
        ct=ct.array,
        spacing_y=float(abs(ct.affine[1, 1])),
        slices=slices,
    )


def test_labels_map_to_all_classes(real) -> None:
    present = np.flatnonzero(np.bincount(real.label.ravel(), minlength=real.n_classes))
    assert real.n_classes > 30
    assert len(present) == real.n_classes  # each source value became a class and survived, and the body class


def test_unlabelled_tissue_inside_the_body_gets_the_body_class(real) -> None:
    assert real.meta["body_derived"] and real.meta["body_class"] == real.n_classes - 1
    body = real.label == real.meta["body_class"]
    np.testing.assert_array_equal(real.label > 0, real.mask)  # the body is labelled: organs or body class
    assert real.meta["body_class_voxels_from_mask"] == np.count_nonzero(body) > 0.1 * real.mask.sum()
    # Subcutaneous fat (-150..-50 HU) is body, not background.
    fat = (real.ct > -150) & (real.ct < -50) & real.mask & ~real.organs
    assert np.mean(body[fat]) > 0.99


def test_body_mask_is_non_empty_and_holds_every_label(real) -> None:
    assert real.mask.sum() > 0.1 * real.mask.size
    assert not np.any((real.label > 0) & ~real.mask)
    assert real.meta["labelled_voxels_outside_mask"] <= 0.01 * np.count_nonzero(real.label)
    np.testing.assert_array_equal(real.image[~real.mask], -1.0)
    assert real.image.min() >= -1.0 and real.image.max() <= 1.0


def test_ct_table_is_not_in_the_mask(real) -> None:
    y = np.arange(real.mask.shape[1])
    mask_rows = y[real.mask.any(axis=(0, 2))]
    label_rows = y[real.organs.any(axis=(0, 2))]
    lowest_label = label_rows.min()
    margin = MARGIN_MM / real.spacing_y
    # The mask stops just under the labelled anatomy (skin and fat), it does not run down into the table.
    assert mask_rows.min() >= lowest_label - margin, (mask_rows.min(), lowest_label)
    # Dense material (table) below the body is there, and outside the mask.
    dense = real.ct > -300
    below = y[None, :, None] < lowest_label
    dense_below_outside = dense & below & ~real.mask
    assert dense_below_outside.sum() >= 1000
    far_below = y[None, :, None] < lowest_label - margin
    assert (dense & far_below).sum() >= 300
    assert not np.any(real.mask & far_below)


def test_slices_follow_the_rule(real) -> None:
    s = real.slices
    assert len(s.z) >= 10
    assert s.images.shape == (len(s.z), SIZE, SIZE)
    assert len(set(s.z.tolist())) == len(s.z)
    for k in range(len(s.z)):
        assert s.masks[k].mean() >= MIN_BODY
        assert (s.labels[k] > 0).any()
        assert not np.any((s.labels[k] > 0) & (s.masks[k] == 0))
        np.testing.assert_array_equal(s.images[k][s.masks[k] == 0], -1.0)


def test_slices_are_windows_of_the_volume(real) -> None:
    s = real.slices
    for k in range(len(s.z)):
        x0, y0 = (int(v) for v in s.offsets[k])
        z = int(s.z[k])
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x0 + SIZE, real.label.shape[0]), min(y0 + SIZE, real.label.shape[1])
        np.testing.assert_array_equal(
            s.labels[k][sx0 - x0 : sx1 - x0, sy0 - y0 : sy1 - y0], real.label[sx0:sx1, sy0:sy1, z]
        )
        np.testing.assert_array_equal(
            s.images[k][sx0 - x0 : sx1 - x0, sy0 - y0 : sy1 - y0], real.image[sx0:sx1, sy0:sy1, z]
        )
