"""Files with the same bytes under other names (medsynth.data.same_files)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medsynth.data.same_files import identical_groups, voxel_copies_of


def test_groups_files_by_bytes_not_by_name_or_size(tmp_path) -> None:
    files = {name: tmp_path / name for name in ("a", "b", "c", "d", "e")}
    files["a"].write_bytes(b"x" * 10)
    files["b"].write_bytes(b"x" * 10)  # a's copy
    files["c"].write_bytes(b"y" * 10)  # a's size, other bytes
    files["d"].write_bytes(b"y" * 10)  # c's copy
    files["e"].write_bytes(b"x" * 11)
    (tmp_path / "series").mkdir()  # a DICOM folder is in no group
    paths = [*files.values(), tmp_path / "series", tmp_path / "missing", "", files["a"]]
    assert identical_groups(paths) == [[str(files["a"]), str(files["b"])], [str(files["c"]), str(files["d"])]]


def test_reads_only_files_whose_size_another_shares(tmp_path) -> None:
    read = []
    for name, size in (("a", 3), ("b", 4), ("c", 4)):
        (tmp_path / name).write_bytes(b"z" * size)

    def digest(path: str) -> str:
        read.append(path)
        return "same"
    assert identical_groups([tmp_path / n for n in "abc"], digest) == [[str(tmp_path / "b"), str(tmp_path / "c")]]
    assert sorted(read) == [str(tmp_path / "b"), str(tmp_path / "c")]


def test_copies_of_names_the_original_of_each_copy_and_only_of_the_files_asked_for(tmp_path) -> None:
    from medsynth.data.same_files import copies_of

    for name, body in (("test_a", b"a" * 8), ("test_b", b"b" * 8), ("copy_a", b"a" * 8), ("other", b"c" * 8),
                       ("train_a", b"a" * 8)):
        (tmp_path / name).write_bytes(body)
    p = {n: str(tmp_path / n) for n in ("test_a", "test_b", "copy_a", "other", "train_a")}
    found = copies_of([p["copy_a"], p["other"], p["test_b"]], [p["test_a"], p["test_b"]])
    # train_a shares the bytes too, but was not asked about; test_b is an original itself
    assert found == {p["copy_a"]: p["test_a"], p["test_b"]: p["test_b"]}


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array, affine), path)
    return str(path)


def test_voxel_copies_are_the_same_values_on_the_same_grid_whatever_the_bytes(tmp_path) -> None:
    """A label map saved again (.nii for .nii.gz, another data type, another axis order) is a copy; another
    grid, or one voxel changed, is not; a file that is no NIfTI (a DICOM folder, a broken file) is skipped, not an error."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (12, 10, 4)).astype(np.uint8)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = [100.0, 80.0, -300.0]
    shifted = affine.copy()
    shifted[0, 3] += 1.0
    edited = labels.copy()
    edited[0, 0, 0] = 7
    files = {name: _save(tmp_path / name, array, aff) for name, array, aff in (
        ("test.nii.gz", labels, affine), ("again.nii", labels, affine),  # other bytes: uncompressed
        ("as_int16.nii.gz", labels.astype(np.int16), affine), ("other_grid.nii.gz", labels, shifted),
        ("edited.nii.gz", edited, affine))}
    # The map (stored LPS, as DICOM orders it) stored RAS, and with its axes in another order: the same study.
    image = nib.Nifti1Image(labels, affine)
    for name, codes in (("as_ras.nii.gz", "RAS"), ("as_ipl.nii.gz", "IPL")):
        moved = image.as_reoriented(nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                                    nib.orientations.axcodes2ornt(codes)))
        assert nib.aff2axcodes(moved.affine) == tuple(codes)
        files[name] = _save(tmp_path / name, np.asanyarray(moved.dataobj), moved.affine)
    # Flipped voxels under the same header: another picture on that grid, not a copy.
    files["flipped.nii.gz"] = _save(tmp_path / "flipped.nii.gz", labels[::-1].copy(), affine)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    files["broken.nii.gz"] = str(tmp_path / "broken.nii.gz")
    assert Path(files["again.nii"]).read_bytes() != Path(files["test.nii.gz"]).read_bytes()
    found = voxel_copies_of([f for n, f in files.items() if n != "test.nii.gz"] + [files["test.nii.gz"]],
                            [files["test.nii.gz"], files["broken.nii.gz"]])
    assert found == {files[name]: files["test.nii.gz"] for name in ("again.nii", "as_int16.nii.gz", "as_ras.nii.gz",
                                                                    "as_ipl.nii.gz")}


def test_voxel_groups_read_the_voxels_of_a_file_only_where_another_shares_its_grid(tmp_path, monkeypatch) -> None:
    """A cohort resampled to one grid (every origin alike) reads each file once, not once per pair."""
    from medsynth.data import same_files

    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    maps = [np.random.default_rng(i).integers(0, 4, (8, 6, 3)).astype(np.uint8) for i in range(4)]
    paths = [_save(tmp_path / f"m{i}.nii.gz", m, affine) for i, m in enumerate(maps)]
    paths.append(_save(tmp_path / "m0_again.nii", maps[0].astype(np.float32), affine))  # saved again
    moved = affine.copy()
    moved[2, 3] = 40.0
    alone = _save(tmp_path / "alone.nii.gz", maps[1], moved)  # m1's voxels on another grid: another study
    read, voxel_digest = [], same_files.voxel_digest

    def digest(path: str) -> str:
        read.append(path)
        return voxel_digest(path)
    assert same_files.voxel_groups([*paths, alone, tmp_path / "missing.nii.gz"], digest) == [[paths[0], paths[4]]]
    assert sorted(read) == sorted(paths)  # alone's grid is its own: its voxels are never read

    read.clear()
    monkeypatch.setattr(same_files, "voxel_digest", digest)
    assert voxel_copies_of([paths[4], *paths[1:3]], [paths[0], paths[3], *paths[1:3]]) == {paths[4]: paths[0]}
    assert sorted(read) == sorted(paths)  # each once, though five files share one grid


def test_whole_values_are_one_digest_in_any_type_and_broken_voxels_are_in_no_group(tmp_path) -> None:
    from medsynth.data.same_files import nifti_grid, voxel_digest, voxel_groups

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    labels = np.arange(24, dtype=np.uint8).reshape(4, 3, 2) % 5
    digests = {voxel_digest(_save(tmp_path / f"{t}.nii.gz", labels.astype(t), affine))
               for t in (np.uint8, np.int16, np.float32, np.float64)}
    assert len(digests) == 1
    ct = np.linspace(-1000.5, 400.0, 24).reshape(4, 3, 2)  # not whole: compared as float64
    assert voxel_digest(_save(tmp_path / "a.nii", ct.astype(np.float64), affine)) != voxel_digest(
        _save(tmp_path / "b.nii", ct.astype(np.float32), affine))  # float32 rounds them: other values
    big = np.random.default_rng(0).integers(0, 200, (64, 64, 32)).astype(np.uint8)
    whole = _save(tmp_path / "whole.nii.gz", big, affine)
    cut = tmp_path / "cut.nii.gz"  # the header readable, the voxels cut off (an interrupted download)
    cut.write_bytes(Path(whole).read_bytes()[: Path(whole).stat().st_size // 2])
    again = _save(tmp_path / "again.nii", big, affine)
    assert nifti_grid(str(cut)) == nifti_grid(whole)
    assert voxel_groups([whole, cut, again]) == [sorted([whole, again])]
