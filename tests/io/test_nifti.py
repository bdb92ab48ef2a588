"""NIfTI input/output (medsynth.io.nifti): geometry kept exactly, unusable files refused by name."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsynth.io.nifti import (Volume, VolumeError, check_same_grid, default_workers, load_volume, save_volume,
                               voxel_spacing)

SHAPE = (7, 6, 5)


@pytest.fixture
def flipped_affine() -> np.ndarray:
    """Stored L-P-S, anisotropic, off-origin; exact in float32 so round trips compare bit for bit."""
    return np.array(
        [
            [-2.5, 0.0, 0.0, 31.0],
            [0.0, -1.75, 0.0, -12.5],
            [0.0, 0.0, 3.0, -40.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _data(dtype: type) -> np.ndarray:
    rng = np.random.default_rng(1)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -3000), min(info.max, 3000), size=SHAPE, endpoint=True).astype(dtype)
    return (rng.normal(size=SHAPE) * 500.0).astype(dtype)


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_keeps_array_dtype_and_affine(tmp_path: Path, flipped_affine: np.ndarray, dtype: type) -> None:
    data = _data(dtype)
    path = save_volume(tmp_path / "sub" / "vol.nii.gz", data, flipped_affine)
    assert path == tmp_path / "sub" / "vol.nii.gz" and path.is_file()

    vol = load_volume(path)
    assert vol.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_array_equal(vol.affine, flipped_affine)
    assert vol.affine.dtype == np.float64
    assert vol.path == path
    np.testing.assert_allclose(vol.spacing, [2.5, 1.75, 3.0])


def test_both_sform_and_qform_are_set_with_code_1(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    path = save_volume(tmp_path / "vol.nii.gz", _data(np.int16), flipped_affine)
    img = nib.load(str(path))
    sform, scode = img.header.get_sform(coded=True)
    qform, qcode = img.header.get_qform(coded=True)
    assert int(scode) == 1 and int(qcode) == 1
    np.testing.assert_allclose(sform, flipped_affine, atol=1e-5)
    # The qform alone (what some tools read) must describe the same grid.
    np.testing.assert_allclose(qform, flipped_affine, atol=1e-4)
    assert img.header.get_xyzt_units()[0] == "mm"
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")


def test_save_leaves_no_temporary_file(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    save_volume(tmp_path / "vol.nii.gz", _data(np.uint8), flipped_affine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.nii.gz"]


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_a_dotted_name_near_the_file_systems_limit_is_written(tmp_path: Path, flipped_affine: np.ndarray,
                                                               ending: str) -> None:
    """Two DICOM UIDs in a case id (~120 characters, dots throughout): the temporary name had every suffix
    again, twice the name, past the file system's 255 bytes."""
    uid = "1.3.6.1.4.1.14519.5.2.1.4219.6651.27088469123456789012345678901234"
    name = f"{uid}.{uid}_0000{ending}"
    assert 2 * len(name) > 255
    path = save_volume(tmp_path / name, _data(np.int16), flipped_affine)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    np.testing.assert_array_equal(load_volume(path).array, _data(np.int16))


@pytest.mark.parametrize("name", ["vol.nii.gz", "vol.nii"])
def test_failed_save_leaves_nothing_behind(tmp_path: Path, flipped_affine: np.ndarray, name: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(self, file_map=None, *args, **kwargs):
        fh = (file_map or self.file_map)["image"].get_prepare_fileobj(mode="wb")
        fh.write(b"half a header")
        fh.close()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib.Nifti1Image, "to_file_map", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_volume(tmp_path / name, _data(np.int16), flipped_affine)
    assert list(tmp_path.iterdir()) == []


def test_load_converts_to_requested_dtype(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    data = _data(np.int16)
    path = save_volume(tmp_path / "ct.nii.gz", data, flipped_affine)
    vol = load_volume(path, np.float32)
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, data.astype(np.float32))


def test_float_stored_integer_labels_load_as_integers(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    labels = _data(np.uint8) % 10
    path = save_volume(tmp_path / "label.nii.gz", labels.astype(np.float32), flipped_affine)
    vol = load_volume(path, np.int32)
    assert vol.array.dtype == np.int32
    np.testing.assert_array_equal(vol.array, labels)


def test_singleton_fourth_dimension_is_squeezed(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    data = _data(np.int16)
    path = tmp_path / "one_volume.nii.gz"
    nib.save(nib.Nifti1Image(data[..., None], flipped_affine), str(path))
    vol = load_volume(path)
    assert vol.array.shape == SHAPE
    np.testing.assert_array_equal(vol.array, data)


def test_written_files_are_plain_gzip_nifti_that_nibabel_reads(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    # We write with ISA-L's gzip; other tools read with zlib, so the bytes must be ordinary gzip.
    data = _data(np.float32)
    path = save_volume(tmp_path / "vol.nii.gz", data, flipped_affine)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    img = nib.load(str(path))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    np.testing.assert_array_equal(img.affine, flipped_affine)


@pytest.mark.parametrize("klass", [nib.Nifti2Image, nib.Nifti1Image])
@pytest.mark.parametrize("order", ["<", ">"])
def test_nifti2_and_big_endian_files_from_other_tools_load(
    tmp_path: Path, flipped_affine: np.ndarray, klass: type, order: str
) -> None:
    data = _data(np.int16)
    header = klass.header_class(endianness=order)
    img = klass(data.astype(np.dtype(np.int16).newbyteorder(order)), flipped_affine, header)
    path = tmp_path / "other.nii.gz"
    nib.save(img, str(path))
    vol = load_volume(path)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_array_equal(vol.affine, flipped_affine)


def test_voxel_spacing_is_column_norm() -> None:
    affine = np.array([[0.0, 0.0, 2.0, 1.0], [-3.0, 0.0, 0.0, 2.0], [0.0, 0.5, 0.0, 3.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(voxel_spacing(affine), [3.0, 0.5, 2.0])


def test_save_refuses_invalid_affine(tmp_path: Path) -> None:
    bad = np.eye(4)
    bad[0, 3] = np.nan
    path = tmp_path / "vol.nii.gz"
    with pytest.raises(ValueError, match="invalid affine") as exc:
        save_volume(path, _data(np.uint8), bad)
    assert str(path) in str(exc.value)
    with pytest.raises(ValueError, match="invalid affine"):
        save_volume(path, _data(np.uint8), np.eye(3))
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ refused files


def test_multi_volume_4d_is_refused_naming_file(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 2), dtype=np.int16), flipped_affine), str(path))
    with pytest.raises(VolumeError, match="3D") as exc:
        load_volume(path)
    assert str(path) in str(exc.value)
    assert "(7, 6, 5, 2)" in str(exc.value) and "split them" in str(exc.value)


def test_singleton_dimensions_past_3d_are_one_volume_and_a_slice_is_refused(tmp_path: Path,
                                                                           flipped_affine: np.ndarray) -> None:
    """(x, y, z, 1, 1) is how some converters write a plain volume; a 2D file was told to split a 4D series."""
    data = _data(np.int16)
    path = tmp_path / "five.nii.gz"
    nib.save(nib.Nifti1Image(data.reshape(*SHAPE, 1, 1), flipped_affine), str(path))
    np.testing.assert_array_equal(load_volume(path).array, data)
    flat = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(data[:, :, 0], flipped_affine), str(flat))
    with pytest.raises(VolumeError, match=r"slice.nii.gz: expected a 3D volume, found shape \(7, 6\): a single slice"):
        load_volume(flat)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused_naming_file(tmp_path: Path, flipped_affine: np.ndarray, bad: float) -> None:
    data = _data(np.float32)
    data[3, 2, 1] = bad
    path = save_volume(tmp_path / "nan.nii.gz", data, flipped_affine)
    with pytest.raises(VolumeError, match="NaN or infinite") as exc:
        load_volume(path)
    assert str(path) in str(exc.value)
    with pytest.raises(VolumeError, match="NaN or infinite"):
        load_volume(path, np.float32)


def test_truncated_gzip_gives_volume_error_naming_file(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    good = save_volume(tmp_path / "good.nii.gz", _data(np.float32), flipped_affine)
    raw = good.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeError, match="not a readable NIfTI") as exc:
        load_volume(cut)
    assert str(cut) in str(exc.value)


def test_corrupt_gzip_gives_volume_error_naming_file(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    good = save_volume(tmp_path / "good.nii.gz", _data(np.float32), flipped_affine)
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)  # a damaged block: deflate or CRC check fails
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(VolumeError, match="not a readable NIfTI") as exc:
        load_volume(bad)
    assert str(bad) in str(exc.value)


@pytest.mark.parametrize("damage", ["not-nifti", "bad-magic", "bad-header-size"])
def test_gzipped_non_nifti_gives_volume_error_naming_file(tmp_path: Path, flipped_affine: np.ndarray,
                                                          damage: str) -> None:
    import gzip

    raw = bytearray(gzip.decompress(save_volume(tmp_path / "good.nii.gz", _data(np.int16), flipped_affine).read_bytes()))
    if damage == "not-nifti":
        raw = bytearray(b"hello world" * 10)
    elif damage == "bad-magic":
        raw[344:348] = b"xyz\0"  # the "n+1" magic of a single-file NIfTI-1
    else:
        raw[0:4] = (1234).to_bytes(4, "little")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(VolumeError, match="not a readable NIfTI") as exc:
        load_volume(bad)
    assert str(bad) in str(exc.value)


def test_truncated_uncompressed_nifti_gives_volume_error(tmp_path: Path, flipped_affine: np.ndarray) -> None:
    good = save_volume(tmp_path / "good.nii", _data(np.float32), flipped_affine)
    raw = good.read_bytes()
    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeError) as exc:
        load_volume(cut)
    assert str(cut) in str(exc.value)


@pytest.mark.parametrize("name", ["notes.nii.gz", "notes.nii", "notes.txt"])
def test_text_file_gives_volume_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("case_id\timage\tlabel\n" * 40)
    with pytest.raises(VolumeError, match="not a readable NIfTI") as exc:
        load_volume(path)
    assert str(path) in str(exc.value)


def test_missing_file_gives_volume_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.nii.gz"
    with pytest.raises(VolumeError, match="not found") as exc:
        load_volume(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_non_integer_float_labels_refused_for_integer_dtype(
    tmp_path: Path, flipped_affine: np.ndarray, dtype: type
) -> None:
    labels = (_data(np.uint8) % 5).astype(np.float32)
    labels[2, 2, 2] = 2.5  # what linear interpolation of a label map produces
    path = save_volume(tmp_path / "label.nii.gz", labels, flipped_affine)
    with pytest.raises(VolumeError, match="non-integer") as exc:
        load_volume(path, dtype)
    assert str(path) in str(exc.value)
    # As an image (float) the same file is fine.
    assert load_volume(path, np.float32).array[2, 2, 2] == 2.5


def test_float_labels_are_rounded_within_one_tolerance_for_every_value(tmp_path: Path,
                                                                       flipped_affine: np.ndarray) -> None:
    """Stored as float: 1e-7 near background is as integer as 117.00001 near a TotalSegmentator class
    (allclose's relative tolerance refused the first and would have let 117.0005 pass as 117)."""
    labels = (_data(np.uint8) % 5).astype(np.float32) * 29  # 0, 29, ..., 116
    labels[labels == 0] = 1e-7
    labels[labels == 116] = 117.00001
    rounded = load_volume(save_volume(tmp_path / "label.nii.gz", labels, flipped_affine), np.integer).array
    np.testing.assert_array_equal(rounded, np.rint(labels))
    labels[1, 1, 1] = 117.0005 + 1e-3
    with pytest.raises(VolumeError, match=r"non-integer values \(e\.g\. 117\.00"):
        load_volume(save_volume(tmp_path / "off.nii.gz", labels, flipped_affine), np.integer)


# ------------------------------------------------------------------ grids


def _vol(path: str, shape: tuple[int, int, int], affine: np.ndarray) -> Volume:
    return Volume(np.zeros(shape, dtype=np.float32), affine, Path(path))


def test_check_same_grid_passes_for_equal_grids(flipped_affine: np.ndarray) -> None:
    a = _vol("/data/ct.nii.gz", SHAPE, flipped_affine)
    b = _vol("/data/label.nii.gz", SHAPE, flipped_affine.copy())
    check_same_grid(a, b)
    nudged = flipped_affine.copy()
    nudged[0, 3] += 5e-4  # below the default tolerance: header round-off, not another grid
    check_same_grid(a, _vol("/data/label.nii.gz", SHAPE, nudged))


def test_check_same_grid_shape_mismatch_names_both_files(flipped_affine: np.ndarray) -> None:
    a = _vol("/data/ct.nii.gz", SHAPE, flipped_affine)
    b = _vol("/data/label.nii.gz", (7, 6, 4), flipped_affine)
    with pytest.raises(VolumeError, match="shapes differ") as exc:
        check_same_grid(a, b)
    assert "/data/ct.nii.gz" in str(exc.value) and "/data/label.nii.gz" in str(exc.value)


@pytest.mark.parametrize(
    "entry, delta",
    [((0, 3), 1.0), ((1, 1), 0.25), ((0, 0), -5.0)],  # translation, spacing, flip of x
)
def test_check_same_grid_affine_mismatch_names_both_files(
    flipped_affine: np.ndarray, entry: tuple[int, int], delta: float
) -> None:
    other = flipped_affine.copy()
    other[entry] += delta
    a = _vol("/data/ct.nii.gz", SHAPE, flipped_affine)
    b = _vol("/data/label.nii.gz", SHAPE, other)
    with pytest.raises(VolumeError, match="affines differ") as exc:
        check_same_grid(a, b)
    assert "/data/ct.nii.gz" in str(exc.value) and "/data/label.nii.gz" in str(exc.value)


@pytest.mark.parametrize(("omp", "cpus", "expected"), [("1", 64, 1), ("2", 64, 2), ("16", 64, 4), (None, 3, 3),
                                                      (None, 64, 4), ("", 2, 2), ("0", 2, 2)])
def test_volume_threads_are_the_jobs_share_not_the_nodes(monkeypatch: pytest.MonkeyPatch, omp: str | None,
                                                          cpus: int, expected: int) -> None:
    """A SLURM job of 2 CPUs on a 64-core node: Snakemake's OMP_NUM_THREADS (the rule's threads) decides,
    else the CPUs the process may run on (its cgroup), never the node's count; at most 4."""
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert default_workers() == expected


@pytest.mark.parametrize("name", ["noorient.nii.gz", "noorient.nii"])
def test_a_header_that_states_no_orientation_is_refused_naming_the_file(tmp_path: Path, name: str) -> None:
    """sform_code and qform_code 0 (an ANALYZE-era conversion): nibabel would make an affine up, and the
    outputs written with it would claim an orientation nobody knows."""
    img = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), None)  # no affine: both codes stay 0
    img.header.set_zooms((0.8, 0.8, 2.0))
    nib.save(img, tmp_path / name)
    assert nib.load(tmp_path / name).header["sform_code"] == 0 == nib.load(tmp_path / name).header["qform_code"]
    with pytest.raises(VolumeError, match=rf"{name}: its header states no orientation \(sform_code and "
                                          r"qform_code 0\).*DICOM"):
        load_volume(tmp_path / name)


def test_a_header_whose_sform_and_qform_disagree_is_read_by_its_sform_with_a_warning(tmp_path: Path,
                                                                                    flipped_affine, caplog) -> None:
    """ITK-based tools may read such a file by its qform: 10 mm elsewhere here. A qform equal to the sform
    but for float32 rounding is no disagreement."""
    img = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), flipped_affine)
    moved = flipped_affine.copy()
    moved[0, 3] += 10.0
    img.header.set_sform(flipped_affine, code=1)
    img.header.set_qform(moved, code=1)
    nib.save(img, tmp_path / "two.nii.gz")
    with caplog.at_level("WARNING"):
        volume = load_volume(tmp_path / "two.nii.gz")
    np.testing.assert_allclose(volume.affine, flipped_affine)
    assert "two.nii.gz: its sform and qform differ (by up to 10 mm); medsynth uses the sform" in caplog.text
    caplog.clear()
    img.header.set_qform(flipped_affine, code=1)
    nib.save(img, tmp_path / "one.nii.gz")
    with caplog.at_level("WARNING"):
        load_volume(tmp_path / "one.nii.gz")
    assert "sform and qform differ" not in caplog.text


def test_a_volume_in_its_stored_order_holds_the_same_voxels_without_the_transposing_copy(tmp_path):
    labels = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    path = save_volume(tmp_path / "l.nii.gz", labels, np.diag([-1.0, -1.0, 2.0, 1.0]))
    as_used, stored = load_volume(path, np.integer), load_volume(path, np.integer, stored_order=True)
    assert as_used.array.flags.c_contiguous and stored.array.flags.f_contiguous and not stored.array.flags.c_contiguous
    np.testing.assert_array_equal(stored.array, labels)
    np.testing.assert_array_equal(as_used.affine, stored.affine)
