"""3D -> 2D axial slices (medsynth.data.slicing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth.data.slicing import (
    CaseSlices,
    SliceSettings,
    axial_stack,
    crop_offset,
    paste,
    slice_case,
    window,
    write_pngs,
)
from medsynth.io.images import display_view, encode_png, load_png, save_png, unit_to_uint8

# ------------------------------------------------------------------ window / paste


@pytest.mark.parametrize(
    "x0, y0, size",
    [(2, 1, 4), (0, 0, 10), (-3, -2, 6), (7, 5, 6), (-2, -3, 16), (8, -4, 5), (-5, 1, 3)],
    ids=["inside", "exact", "neg-offsets", "past-far-edge", "larger-than-volume", "mixed", "fully-outside-x"],
)
def test_window_and_paste_are_inverses(x0: int, y0: int, size: int) -> None:
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(10, 9, 3)).astype(np.float32)
    win = window(vol, x0, y0, size, fill=-7.0)
    assert win.shape == (size, size, 3) and win.dtype == vol.dtype

    # Inside the volume the window shows the volume; outside it shows the fill.
    inside = np.zeros((size, size), dtype=bool)
    for i in range(size):
        for j in range(size):
            x, y = x0 + i, y0 + j
            if 0 <= x < vol.shape[0] and 0 <= y < vol.shape[1]:
                inside[i, j] = True
                np.testing.assert_array_equal(win[i, j], vol[x, y])
    np.testing.assert_array_equal(win[~inside], -7.0)

    # paste() writes back exactly the covered region and nothing else.
    restored = np.full_like(vol, 99.0)
    for z in range(vol.shape[2]):
        paste(restored, win[:, :, z], x0, y0, z)
    covered = np.zeros(vol.shape[:2], dtype=bool)
    covered[max(x0, 0) : max(min(x0 + size, 10), 0), max(y0, 0) : max(min(y0 + size, 9), 0)] = True
    assert covered.sum() == inside.sum()
    np.testing.assert_array_equal(restored[covered], vol[covered])
    np.testing.assert_array_equal(restored[~covered], 99.0)


@pytest.mark.parametrize("x0, y0, size", [(2, 1, 4), (-3, -2, 6), (7, 5, 6), (-2, -3, 16), (-5, 1, 3)])
@pytest.mark.parametrize("tile", [1, 3, 32])
def test_axial_stack_is_the_window_with_the_slice_axis_first(x0: int, y0: int, size: int, tile: int) -> None:
    rng = np.random.default_rng(3)
    vol = rng.normal(size=(10, 9, 7)).astype(np.float32)
    z = np.array([0, 2, 3, 6])
    stack = axial_stack(vol, x0, y0, size, -7.0, z, tile=tile)
    assert stack.shape == (4, size, size) and stack.flags.c_contiguous
    np.testing.assert_array_equal(stack, np.moveaxis(window(vol, x0, y0, size, -7.0)[:, :, z], 2, 0))


def test_paste_touches_only_its_slice() -> None:
    vol = np.zeros((6, 6, 3), dtype=np.float32)
    paste(vol, np.ones((4, 4), dtype=np.float32), -1, 3, 1)
    assert vol[:, :, 0].sum() == 0 and vol[:, :, 2].sum() == 0
    expected = np.zeros((6, 6))
    expected[0:3, 3:6] = 1
    np.testing.assert_array_equal(vol[:, :, 1], expected)


# ------------------------------------------------------------------ crop offset


def test_crop_window_is_centred_on_body_bounding_box() -> None:
    mask = np.zeros((50, 40, 4), dtype=bool)
    mask[10:21, 5:14, 1] = True  # x 10..20, y 5..13
    mask[12:30, 8:12, 3] = True  # x 12..29, y 8..11 -> bbox over all slices: x 10..29, y 5..13
    x0, y0 = crop_offset(mask, 16)
    assert x0 == 12 and y0 in (1, 2)
    # Window centre (x0 + size/2) vs bbox centre ((lo + hi + 1) / 2): at most half a voxel apart.
    assert abs((x0 + 8) - (10 + 29 + 1) / 2) <= 0.5
    assert abs((y0 + 8) - (5 + 13 + 1) / 2) <= 0.5


def test_crop_window_larger_than_volume_has_negative_offsets() -> None:
    mask = np.zeros((10, 12, 2), dtype=bool)
    mask[2:8, 3:9, 0] = True
    x0, y0 = crop_offset(mask, 32)
    assert (x0, y0) == (5 - 16, 6 - 16)


def test_crop_window_without_body_is_volume_centre() -> None:
    assert crop_offset(np.zeros((40, 30, 2), dtype=bool), 16) == (12, 7)


# ------------------------------------------------------------------ slice rule


SIZE = 16


def _synthetic_case():
    """24x24x7 volume; body/labels per slice chosen to exercise every branch of the slice rule.

    The crop window is x, y in [4, 20) (body bounding box 4..19 in x and y over all slices).
    """
    shape = (24, 24, 7)
    mask = np.zeros(shape, dtype=np.uint8)
    label = np.zeros(shape, dtype=np.uint8)
    mask[4:20, 4:20, 0] = 1  # z0: full body, labels -> keep
    label[8:12, 8:12, 0] = 3
    mask[6:18, 6:18, 1] = 1  # z1: large body, no labels -> drop
    mask[10:12, 10:12, 2] = 1  # z2: 4 px body (1.6%) with labels, class 1 only here -> keep
    label[10, 10, 2] = 1
    mask[8:21, 10, 3] = 1  # z3: 13 px, 12 of them inside the window: 12/256 = 4.7%, class 2 as z4 -> drop
    label[9, 10, 3] = 2
    mask[8:21, 10:12, 4] = 1  # z4: 26 px, 24 inside the window: 9.4% -> keep
    label[9, 10, 4] = 2
    # z5: nothing -> drop
    mask[5:15, 5:15, 6] = 1  # z6: 100 px with labels -> keep
    label[6:8, 6:8, 6] = 5
    image = np.where(mask > 0, 0.25, -1.0).astype(np.float32)
    image += np.linspace(0, 0.5, shape[0], dtype=np.float32)[:, None, None] * mask  # position-dependent values
    return image, label, mask


def test_slice_case_keeps_exactly_the_slices_of_the_documented_rule(caplog) -> None:
    image, label, mask = _synthetic_case()
    with caplog.at_level("WARNING", logger="medsynth"):
        slices = slice_case(image, label, mask, SliceSettings(size=SIZE, min_body_fraction=0.05))
    np.testing.assert_array_equal(slices.z, [0, 2, 4, 6])
    assert "kept 1 slice(s) with less body than slice.min_body_fraction (z [2]): only they carry class id(s) [1]" \
        in caplog.text
    # Check against the rule itself, computed here on the cropped window.
    x0, y0 = slices.offsets[0]
    assert (x0, y0) == (4, 4)
    crop = (slice(x0, x0 + SIZE), slice(y0, y0 + SIZE))
    bodied = [z for z in range(image.shape[2]) if mask[crop + (z,)].mean() >= 0.05 and label[crop + (z,)].any()]
    seen = set(np.unique(label[crop + (bodied,)]).tolist()) | {0}
    for z in range(image.shape[2]):
        thin_but_only_here = label[crop + (z,)].any() and not set(np.unique(label[crop + (z,)]).tolist()) <= seen
        assert (z in slices.z) == (z in bodied or thin_but_only_here)
    # The count of each class in the kept slices, for the model card.
    assert slices.class_voxels.shape == (256,)
    np.testing.assert_array_equal(slices.class_voxels, np.bincount(slices.labels.ravel(), minlength=256))
    assert slices.class_voxels[1] == 1 and slices.class_voxels[3] == 16


def test_a_thin_slice_whose_classes_a_bodied_slice_carries_is_dropped() -> None:
    """With class 1 on the full slice z0 too, z2 holds nothing training lacks: the body rule drops it."""
    image, label, mask = _synthetic_case()
    label[12, 12, 0] = 1
    slices = slice_case(image, label, mask, SliceSettings(size=SIZE, min_body_fraction=0.05))
    np.testing.assert_array_equal(slices.z, [0, 4, 6])


def test_slice_case_threshold_is_inclusive() -> None:
    image, label, mask = _synthetic_case()
    # z3 has exactly 12/256 body pixels inside the window.
    slices = slice_case(image, label, mask, SliceSettings(size=SIZE, min_body_fraction=12 / 256))
    assert 3 in slices.z.tolist()
    slices = slice_case(image, label, mask, SliceSettings(size=SIZE, min_body_fraction=0.0))
    np.testing.assert_array_equal(slices.z, [0, 2, 3, 4, 6])  # labels are still required


def test_slice_arrays_match_the_volume_at_recorded_offsets() -> None:
    image, label, mask = _synthetic_case()
    slices = slice_case(image, label, mask, SliceSettings(size=SIZE))
    n = len(slices.z)
    assert slices.images.shape == slices.labels.shape == slices.masks.shape == (n, SIZE, SIZE)
    assert slices.images.dtype == np.float32 and slices.labels.dtype == np.uint8 and slices.masks.dtype == np.uint8
    assert slices.offsets.shape == (n, 2)
    for k in range(n):
        x0, y0 = slices.offsets[k]
        z = slices.z[k]
        for i, j in [(0, 0), (5, 7), (SIZE - 1, SIZE - 1), (3, 12), (10, 4)]:
            assert slices.images[k, i, j] == image[x0 + i, y0 + j, z]
            assert slices.labels[k, i, j] == label[x0 + i, y0 + j, z]
            assert slices.masks[k, i, j] == mask[x0 + i, y0 + j, z]
        np.testing.assert_array_equal(slices.images[k], image[x0 : x0 + SIZE, y0 : y0 + SIZE, z])


def test_padding_when_volume_is_smaller_than_size() -> None:
    shape = (10, 12, 2)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[1:9, 2:10, :] = 1
    label = mask * 4
    image = np.where(mask > 0, 0.5, -0.9).astype(np.float32)
    slices = slice_case(image, label, mask, SliceSettings(size=32, min_body_fraction=0.05))
    np.testing.assert_array_equal(slices.z, [0, 1])
    x0, y0 = slices.offsets[0]
    assert x0 < 0 and y0 < 0
    for k in range(2):
        img = slices.images[k]
        np.testing.assert_array_equal(img[-x0 : -x0 + 10, -y0 : -y0 + 12], image[:, :, k])
        outside = np.ones((32, 32), dtype=bool)
        outside[-x0 : -x0 + 10, -y0 : -y0 + 12] = False
        np.testing.assert_array_equal(img[outside], -1.0)  # padding is image background
        assert slices.labels[k][outside].max() == 0 and slices.masks[k][outside].max() == 0
        # Reinserting a slice reproduces the volume.
        back = np.zeros_like(image)
        paste(back, img, int(x0), int(y0), int(slices.z[k]))
        np.testing.assert_array_equal(back[:, :, k], image[:, :, k])


def test_no_kept_slices_gives_empty_arrays() -> None:
    image, label, mask = _synthetic_case()
    slices = slice_case(image, np.zeros_like(label), mask, SliceSettings(size=SIZE))
    assert slices.z.shape == (0,) and slices.images.shape == (0, SIZE, SIZE) and slices.offsets.shape == (0, 2)


# ------------------------------------------------------------------ storage


def test_case_slices_save_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    image, label, mask = _synthetic_case()
    slices = slice_case(image, label, mask, SliceSettings(size=SIZE))
    slices.images = rng.uniform(-1, 1, size=slices.images.shape).astype(np.float32)
    path = slices.save(tmp_path / "deep" / "slices.npz")
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == ["slices.npz"]
    loaded = CaseSlices.load(path)
    assert loaded.images.dtype == np.float32
    # float16 storage: relative precision 2**-11 in [-1, 1].
    np.testing.assert_allclose(loaded.images, slices.images, atol=2**-11, rtol=0)
    assert np.abs(loaded.images - slices.images).max() > 0  # it really is float16 on disk
    for name in ("labels", "masks", "z", "offsets", "class_voxels"):
        got, want = getattr(loaded, name), getattr(slices, name)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_write_pngs_writes_display_oriented_images_and_labels(tmp_path: Path) -> None:
    image, label, mask = _synthetic_case()
    slices = slice_case(image, label, mask, SliceSettings(size=SIZE))
    names = write_pngs("case_a", slices, tmp_path)
    assert names == ["case_a_z000.png", "case_a_z002.png", "case_a_z004.png", "case_a_z006.png"]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == names
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == names
    for k, name in enumerate(names):
        lab_png = load_png(tmp_path / "labels" / name)
        assert lab_png.dtype == np.uint8 and lab_png.shape == (SIZE, SIZE)
        np.testing.assert_array_equal(lab_png, display_view(slices.labels[k]))
        img_png = load_png(tmp_path / "images" / name)
        np.testing.assert_array_equal(img_png, unit_to_uint8(display_view(slices.images[k])))
    # Orientation, concretely: in z6 the class-5 block sits at low x (RAS: the patient's left)
    # and low y (posterior): radiologically that is the right of the bottom rows.
    png = load_png(tmp_path / "labels" / "case_a_z006.png")
    rows, cols = np.nonzero(png == 5)
    assert rows.min() > SIZE // 2 and cols.min() >= SIZE // 2


def test_unit_to_uint8_and_display_view() -> None:
    np.testing.assert_array_equal(unit_to_uint8(np.array([-1.0, -1.5, 0.0, 1.0, 2.0])), [0, 0, 128, 255, 255])
    sl = np.zeros((3, 4))  # RAS: x (patient left -> right), y (posterior -> anterior)
    sl[2, 3] = 1  # patient right, anterior
    sl[0, 0] = 2  # patient left, posterior
    view = display_view(sl)
    assert view.shape == (4, 3)
    assert view[0, 0] == 1  # top-left of the screen: anterior, patient right (radiological)
    assert view[3, 2] == 2  # bottom-right: posterior, patient left


def test_save_png_round_trip(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = save_png(tmp_path / "a" / "b.png", arr)
    np.testing.assert_array_equal(load_png(path), arr)


@pytest.mark.parametrize("shape", [(256, 256), (3, 7), (7, 3), (1, 1), (1, 300)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_png_files_decode_with_pillow_to_the_same_pixels(tmp_path: Path, shape: tuple[int, int], dtype: type) -> None:
    from PIL import Image

    rng = np.random.default_rng(5)
    top = 2 if dtype is np.bool_ else 256
    arr = rng.integers(0, top, size=shape).astype(dtype)
    path = save_png(tmp_path / "x.png", arr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # no temporary left behind
    with Image.open(path) as img:
        img.load()  # decodes every chunk: CRC, zlib stream and the filter bytes must all be valid
        assert img.format == "PNG" and img.mode == "L" and img.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(img), arr.astype(np.uint8))


def test_png_of_a_smooth_slice_is_compressed() -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    assert len(encode_png(ramp)) < ramp.size // 4


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 2), np.uint8), np.zeros((0, 4), np.uint8),
                                 np.full((2, 2), 256), np.full((2, 2), -1), np.zeros((2, 2), np.float32)])
def test_png_refuses_what_it_cannot_store_exactly(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="PNG slice"):
        encode_png(bad)


def test_required_classes_keep_only_the_slices_that_carry_one() -> None:
    """Whole-body label maps against pelvis-only images: only slices with a pelvic class are kept."""
    label = np.zeros((16, 16, 6), np.uint8)
    label[2:14, 2:14, :] = 1  # body everywhere
    label[5:8, 5:8, 1:3] = 4  # the 'pelvic' class on slices 1 and 2
    label[5:8, 5:8, 4] = 5  # another class on slice 4
    mask = (label > 0).astype(np.uint8)
    image = np.zeros(label.shape, np.float32)
    assert slice_case(image, label, mask, SliceSettings(16)).z.tolist() == [0, 1, 2, 3, 4, 5]
    assert slice_case(image, label, mask, SliceSettings(16, require=(4,))).z.tolist() == [1, 2]
    assert slice_case(image, label, mask, SliceSettings(16, require=(4, 5))).z.tolist() == [1, 2, 4]


def test_a_body_wider_than_the_crop_is_said_with_its_share(caplog) -> None:
    """512 px at 0.8 mm on a 1.5 mm grid is 273 px: a 256 crop cut the flanks without a word."""
    image = np.full((40, 24, 3), -1.0, np.float32)
    label, mask = np.zeros(image.shape, np.uint8), np.zeros(image.shape, np.uint8)
    mask[2:38, 4:20] = 1  # 36 px wide, cropped to 32: 4 columns of 16 px on 3 slices leave
    label[10:30, 8:16] = 1
    with caplog.at_level("WARNING", logger="medsynth"):
        cut = slice_case(image, label, mask, SliceSettings(size=32, min_body_fraction=0.0))
    assert "192 of the kept slices' 1728 body voxels (11.1 %) lie outside the 32 x 32 crop" in caplog.text
    assert cut.crop_cut == (192, 1728)  # what the model card adds up over the training cases
    caplog.clear()
    mask[:] = 0
    mask[6:34, 4:20] = 1
    with caplog.at_level("WARNING", logger="medsynth"):
        whole = slice_case(image, label, mask, SliceSettings(size=32, min_body_fraction=0.0))
    assert "outside" not in caplog.text and whole.crop_cut == (0, 28 * 16 * 3)


def test_the_body_outside_the_crop_is_stored_with_the_slices(tmp_path: Path) -> None:
    image, label, mask = _synthetic_case()
    slices = slice_case(image, label, mask, SliceSettings(size=SIZE))
    assert slices.crop_cut is not None and slices.crop_cut[1] == int(mask[:, :, slices.z].sum())
    assert CaseSlices.load(slices.save(tmp_path / "slices.npz")).crop_cut == slices.crop_cut
    # Slices written before the count: unknown, not none.
    np.savez(tmp_path / "old.npz", images=slices.images, labels=slices.labels, masks=slices.masks, z=slices.z,
             offsets=slices.offsets)
    assert CaseSlices.load(tmp_path / "old.npz").crop_cut is None
