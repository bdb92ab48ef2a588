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


def test_voxel_copies_are_the_same_values_on_the_same_grid_whatever_the_bytes(tmp_path) -> None:
    """A label map saved again (.nii for .nii.gz, another data type) is a copy; another grid, or one voxel
    changed, is not; a file that is no NIfTI (a DICOM folder, a broken file) is skipped, not an error."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, (12, 10, 4)).astype(np.uint8)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = [100.0, 80.0, -300.0]
    files = {}

    def save(name: str, array: np.ndarray, aff: np.ndarray = affine) -> None:
        files[name] = str(tmp_path / name)
        nib.save(nib.Nifti1Image(array, aff), files[name])

    save("test.nii.gz", labels)
    save("again.nii", labels)  # other bytes: uncompressed
    save("as_int16.nii.gz", labels.astype(np.int16))
    shifted = affine.copy()
    shifted[0, 3] += 1.0
    save("other_grid.nii.gz", labels, shifted)
    edited = labels.copy()
    edited[0, 0, 0] = 7
    save("edited.nii.gz", edited)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    files["broken.nii.gz"] = str(tmp_path / "broken.nii.gz")
    assert Path(files["again.nii"]).read_bytes() != Path(files["test.nii.gz"]).read_bytes()
    found = voxel_copies_of([f for n, f in files.items() if n != "test.nii.gz"] + [files["test.nii.gz"]],
                            [files["test.nii.gz"], files["broken.nii.gz"]])
    assert found == {files["again.nii"]: files["test.nii.gz"], files["as_int16.nii.gz"]: files["test.nii.gz"]}
