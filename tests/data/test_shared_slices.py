"""A study cropped and saved again under another patient id: found by slices that count the same voxels of
every label; other studies, and copies too short to tell, are not."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.data.shared_slices import MIN_VOXELS, RUN, overlapping_maps, slice_prints
from medsynth.data.split import same_study_cases
from medsynth.io.nifti import save_volume
from tests.helpers.cropped import body_box_copy, cropped_copy, phantom_maps


@pytest.fixture
def studies(tmp_path):
    """Three phantom patients' label maps and a copy of the first, cropped to its middle 12 slices and to the
    body's box, stored in LPS order."""
    maps = phantom_maps(tmp_path, 3)
    paths, labels = [p for p, *_ in maps], [(label, affine) for _, label, affine in maps]
    paths.append(save_volume(tmp_path / "copy.nii.gz", *body_box_copy(*labels[0], slice(6, 18))))
    return paths, labels


def test_a_cropped_copy_in_lps_order_is_found_and_other_patients_are_not(studies):
    paths, _ = studies
    first, *others, copy = map(str, paths)
    spacing, prints = slice_prints(copy)
    assert spacing == (5.0, 5.0) and len(prints) == 12 and all(p is not None for p in prints)
    assert prints == slice_prints(first)[1][6:18]  # the same slices, inferior to superior
    assert overlapping_maps(paths) == [(first, copy, 12)]
    assert overlapping_maps([first, *others]) == []


def test_fewer_slices_alike_than_a_run_or_a_map_cut_through_its_labels_are_not_taken_for_a_copy(studies, tmp_path):
    paths, labels = studies
    label, affine = labels[0]
    short, moved = cropped_copy(label, affine, slice(0, 64), slice(0, 64), slice(6, 6 + RUN - 1))
    cut, cut_affine = cropped_copy(label, affine, slice(0, 32), slice(0, 64), slice(6, 18))  # half the body
    assert overlapping_maps([paths[0], save_volume(tmp_path / "short.nii.gz", short, moved)]) == []
    assert overlapping_maps([paths[0], save_volume(tmp_path / "cut.nii.gz", cut, cut_affine)]) == []
    # A slice with fewer labelled voxels than MIN_VOXELS has no print (the tip of a map says too little).
    tip = np.zeros((64, 64, 6), np.uint8)
    tip[:5, :5, :] = 3
    assert slice_prints(save_volume(tmp_path / "tip.nii.gz", tip, affine))[1] == [None] * 6 and 25 < MIN_VOXELS


def test_the_split_refuses_a_cropped_copy_of_a_test_study_and_warns_within_one_part(studies):
    paths, _ = studies
    rows = [{"case_id": f"s{i}", "patient_id": f"p{i}", "image": "", "label": str(p)} for i, p in enumerate(paths)]
    parts = {"s0": "test", "s1": "train", "s2": "val", "s3": "train"}
    with pytest.raises(ValueError, match=r"cases s0 \(patient p0, test\), s3 \(patient p3, train\) are one study under "
                                         r"two patient ids \(12 axial slices of their label maps count the same voxels"):
        same_study_cases(rows, parts, "cases.tsv")
    (warning,) = same_study_cases(rows, {**parts, "s3": "test"}, "cases.tsv")
    assert "cropped from the other" in warning and "both are in test" in warning
    # One patient's own two studies: the split keeps them together already.
    assert same_study_cases([*rows[:3], {**rows[3], "patient_id": "p0"}], parts, "cases.tsv") == []


def test_a_structure_alike_on_every_slice_of_two_patients_is_no_copy(tmp_path):
    """Two patients' maps with a scanner table labelled beyond their bodies (the same profile on every
    slice, on one scanner): every table slice prints alike at any offset, yet one print is no study."""
    (_, a, affine), (_, b, _) = phantom_maps(tmp_path, 2)
    paths = []
    for name, label in (("a", a), ("b", b)):
        tall = np.zeros((64, 64, 24 + 10), np.uint8)
        tall[:, :, 10:] = label
        tall[:, 58:62, :] = 9  # the table, under the body on every slice
        paths.append(save_volume(tmp_path / f"{name}_table.nii.gz", tall, affine))
    assert len(set(slice_prints(paths[0])[1][:10])) == 1  # the ten table-only slices: one print
    assert overlapping_maps(paths) == []


def test_the_real_totalsegmentator_map_cropped_and_stored_lps_is_found(tmp_path):
    """The real abdominal map (RAS storage, 3 mm): its middle 20 slices cut to the box of its labels and
    stored in DICOM's order are found; the phantoms' maps on another spacing are not matched to it."""
    from pathlib import Path

    from medsynth.io.nifti import load_volume

    real = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "totalseg-example" / "label.nii.gz"
    if not real.is_file():
        pytest.skip(f"real label map not available at {real}")
    volume = load_volume(real, np.integer)
    xs, ys, _ = np.nonzero(volume.array)
    crop, moved = cropped_copy(volume.array, volume.affine, slice(xs.min(), xs.max() + 1),
                               slice(ys.min(), ys.max() + 1), slice(5, 25))
    copy = save_volume(tmp_path / "copy.nii.gz", crop, moved)
    phantoms = [p for p, *_ in phantom_maps(tmp_path, 2)]
    ((a, b, n),) = overlapping_maps([real, copy, *phantoms])
    assert {a, b} == {str(real), str(copy)} and n == 20


def test_maps_no_check_can_read_are_left_to_their_own_stage(tmp_path, studies):
    """A cut-off download, a folder of files that are no DICOM, a float map, a missing file: no print, no
    crash (generation runs this check after a month of training)."""
    paths, _ = studies
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(paths[0].read_bytes()[:200])
    folder = tmp_path / "not_dicom"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    floats = save_volume(tmp_path / "floats.nii.gz", np.full((8, 8, 8), 0.5, np.float32), np.eye(4))
    assert [slice_prints(p) for p in (broken, folder, floats, tmp_path / "absent.nii.gz")] == [None] * 4
    assert overlapping_maps([*paths, broken, folder, floats, tmp_path / "absent.nii.gz"]) == [
        (str(paths[0]), str(paths[3]), 12)]


def _disks(areas: list[int]) -> np.ndarray:
    """A single-organ map (one label): per slice a blob of exactly the given area."""
    volume = np.zeros((40, 40, len(areas)), np.uint8)
    for z, area in enumerate(areas):
        volume[:, :, z].reshape(-1)[:area] = 1  # the count is all a single-label print holds
    return volume


def test_two_patients_single_organ_maps_sharing_a_few_areas_by_chance_are_no_copy(tmp_path):
    """A spleen dataset: one label, so a print is one area. Two patients' maps whose areas agree on 5 of 30
    overlapping slices (chance, among hundreds of patients) are no study; a crop of one of them is."""
    rng = np.random.default_rng(0)
    first = list(rng.integers(200, 1400, 30))
    second = list(rng.integers(200, 1400, 30))
    for z in (3, 9, 14, 20, 27):
        second[z] = first[z]
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    a, b = (save_volume(tmp_path / f"{n}.nii.gz", _disks(v), affine) for n, v in (("a", first), ("b", second)))
    crop = save_volume(tmp_path / "crop.nii.gz", _disks(first[5:25]), affine)
    assert overlapping_maps([a, b, crop]) == [(str(a), str(crop), 20)]


def test_label_values_beyond_a_counting_array_are_printed_by_sorting(tmp_path):
    """Label values up to 2e9 (the schema sets no bound): no array of 2e9 counts, the copy still found."""
    label = np.zeros((30, 30, 8), np.int32)
    label[5:25, 5:25, :] = 2_000_000_000
    for z in range(8):
        label[5:10 + z, 5:9, z] = 7
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    paths = [save_volume(tmp_path / f"{n}.nii.gz", label, affine) for n in ("a", "b")]
    assert overlapping_maps(paths) == [(str(paths[0]), str(paths[1]), 8)]


def test_a_print_found_in_many_maps_is_no_fingerprint():
    from medsynth.data.shared_slices import COMMON, _candidates

    table, own = b"table" * 3, [bytes([i, z]) * 6 for i in range(COMMON + 1) for z in range(3)]
    prints = {f"m{i}": ((1.0, 1.0), [table, table, *own[3 * i:3 * i + 3]]) for i in range(COMMON + 1)}
    assert _candidates(prints) == {}
    assert _candidates(dict(list(prints.items())[:2])) == {("m0", "m1", 0): 1, ("m0", "m1", 1): 1, ("m0", "m1", -1): 1}


def test_a_slice_prints_alike_whichever_way_its_labels_are_counted(tmp_path, monkeypatch):
    """Counting by sorting (label values past LARGEST_COUNTED somewhere in a map) and by a count per value give
    one print: a crop that lost the map's largest value still matches its original."""
    import medsynth.data.shared_slices as shared

    (path, label, affine), = phantom_maps(tmp_path, 1)
    counted = slice_prints(path)[1]
    monkeypatch.setattr(shared, "LARGEST_COUNTED", -1)
    sorted_ = shared._read_prints(path)[1]
    assert counted == sorted_ and sum(p is not None for p in counted) > 10
