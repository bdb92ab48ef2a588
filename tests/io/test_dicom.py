"""DICOM series input (medsynth.io.dicom): the same voxels and RAS+ geometry as the series written
as NIfTI, and a refusal naming the folder for every series that is not one regular grid."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_series import lps_geometry_affine, oblique_direction, set_transfer_syntax, write_series

from medsynth.io.dicom import load_series, transfer_syntax
from medsynth.io.nifti import VolumeError, load_volume, save_volume

SHAPE = (7, 6, 5)
SPACING = (0.8, 0.9, 2.5)
ORIGIN = (10.0, -20.0, 30.0)


@pytest.fixture
def hu() -> np.ndarray:
    """CT values a slope of 2 and intercept of -1024 store exactly, no two voxels alike along x."""
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) * 2 - 1024).astype(np.float32)


def test_oblique_series_reads_as_its_nifti_conversion(tmp_path, hu):
    direction = oblique_direction()
    folder = tmp_path / "ct"
    write_series(folder, hu, SPACING, direction, ORIGIN)
    vol = load_series(folder)
    np.testing.assert_array_equal(vol.array, hu)  # slope and intercept applied, slices by position
    np.testing.assert_allclose(vol.affine, lps_geometry_affine(SPACING, direction, ORIGIN), atol=1e-6)
    # The same series converted to NIfTI by SimpleITK, read back by nibabel: voxel for voxel, same world.
    nifti = tmp_path / "ct.nii.gz"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    sitk.WriteImage(reader.Execute(), str(nifti))
    ref = nib.load(nifti)
    np.testing.assert_array_equal(vol.array, np.asarray(ref.dataobj))
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-4)


def test_world_directions_are_ras(tmp_path, hu):
    """An axial series whose columns run to the patient's left (DICOM +x) has RAS x pointing the other way."""
    write_series(tmp_path / "ct", hu, SPACING, np.eye(3), ORIGIN)
    affine = load_series(tmp_path / "ct").affine
    assert affine[0, 0] == pytest.approx(-SPACING[0]) and affine[1, 1] == pytest.approx(-SPACING[1])
    assert affine[2, 2] == pytest.approx(SPACING[2])
    np.testing.assert_allclose(affine[:3, 3], [-ORIGIN[0], -ORIGIN[1], ORIGIN[2]])


def test_a_volume_saved_on_the_series_grid_reads_back_in_the_series_lps_frame(tmp_path, hu):
    """What the README promises for generated volumes: saved as NIfTI with the series' affine, ITK reads
    them in the series' own LPS frame, and flipping x and y of the affine gives the LPS points."""
    direction = oblique_direction()
    write_series(tmp_path / "ct", hu, SPACING, direction, ORIGIN)
    vol = load_series(tmp_path / "ct")
    save_volume(tmp_path / "sample_0.nii.gz", vol.array, vol.affine)
    back = sitk.ReadImage(str(tmp_path / "sample_0.nii.gz"))
    np.testing.assert_allclose(back.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(np.reshape(back.GetDirection(), (3, 3)), direction, atol=1e-5)
    lps = np.diag([-1, -1, 1, 1]) @ nib.load(tmp_path / "sample_0.nii.gz").affine
    np.testing.assert_allclose(lps @ [2, 3, 4, 1], [*back.TransformIndexToPhysicalPoint((2, 3, 4)), 1], atol=1e-4)


def test_load_volume_takes_a_series_folder_with_the_asked_type(tmp_path, hu):
    write_series(tmp_path / "ct", hu, SPACING)
    vol = load_volume(tmp_path / "ct", np.float32)
    assert vol.array.dtype == np.float32 and vol.path == tmp_path / "ct"
    np.testing.assert_array_equal(vol.array, hu)


def test_several_series_need_a_uid(tmp_path, hu):
    write_series(tmp_path / "mixed", hu, SPACING, series_uid="1.2.3.1")
    write_series(tmp_path / "other", hu + 100, SPACING, series_uid="1.2.3.2")
    for f in (tmp_path / "other").iterdir():
        shutil.move(f, tmp_path / "mixed" / f"b_{f.name}")
    with pytest.raises(VolumeError, match=r"mixed: 2 DICOM series, 1\.2\.3\.1 .*1\.2\.3\.2 .*image_series"):
        load_series(tmp_path / "mixed")
    np.testing.assert_array_equal(load_volume(tmp_path / "mixed", series_uid="1.2.3.2").array, hu + 100)
    with pytest.raises(VolumeError, match=r"no series '9\.9'"):
        load_series(tmp_path / "mixed", "9.9")


def test_refuses_missing_slices(tmp_path, hu):
    write_series(tmp_path / "ct", hu, SPACING)
    (tmp_path / "ct" / "IM0004.dcm").unlink()  # the 3rd slice (files are written out of order)
    with pytest.raises(VolumeError, match=r"ct: uneven slice spacing \(5 mm .* 2\.5 mm elsewhere\): slices are missing"):
        load_series(tmp_path / "ct")


def test_refuses_mixed_orientations(tmp_path, hu):
    tilted = {3: {"0020|0037": "1\\0\\0\\0\\0.9950041653\\0.0998334166"}}
    write_series(tmp_path / "ct", hu, SPACING, tag_overrides=tilted)
    with pytest.raises(VolumeError, match="ct: mixed slice orientations.*folder of their own"):
        load_series(tmp_path / "ct")


def test_refuses_mixed_sizes(tmp_path, hu):
    write_series(tmp_path / "ct", hu, SPACING)
    write_series(tmp_path / "big", np.zeros((8, 6, 1), np.float32), SPACING, origin=(0, 0, 100))
    shutil.move(tmp_path / "big" / "IM0000.dcm", tmp_path / "ct" / "IM0099.dcm")
    with pytest.raises(VolumeError, match="ct: mixed slice sizes"):
        load_series(tmp_path / "ct")


def test_refuses_a_gantry_tilt(tmp_path, hu):
    # Slices move 0.5 mm along y (posterior) per 2.5 mm along z: sheared, an 11 degree tilt.
    positions = np.array([[0.0, 0.5 * k, 2.5 * k] for k in range(SHAPE[2])])
    write_series(tmp_path / "ct", hu, SPACING, origin=(0, 0, 0), positions=positions)
    with pytest.raises(VolumeError, match=r"ct: gantry tilt of about 11\.3 degrees"):
        load_series(tmp_path / "ct")


def test_a_slight_tilt_over_a_long_series_is_refused_and_rounded_positions_are_not(tmp_path):
    """Positions written to 2 decimals (0.625 mm slices: -99.38, -98.75, ...; an oblique MR) are one
    regular grid; a drift of 0.2 mm over the series is a tilt, however small per slice."""
    from dicom_series import oblique_direction

    values = np.zeros((6, 5, 40), np.float32)
    origin = np.array([-123.4567, 87.6543, -301.2345])
    for name, spacing, direction in (("axial", (0.7, 0.7, 0.625), np.eye(3)),
                                     ("oblique", (0.9, 0.9, 4.0), oblique_direction())):
        positions = np.round([origin + k * spacing[2] * direction[:, 2] for k in range(40)], 2)
        write_series(tmp_path / name, values, spacing, direction, origin, positions=positions)
        assert load_series(tmp_path / name).array.shape == values.shape
    sheared = np.array([[0.0, 0.005 * k, 1.0 * k] for k in range(40)])  # 0.2 mm over 39 mm: 0.29 degrees
    write_series(tmp_path / "tilted", values, (0.7, 0.7, 1.0), origin=(0, 0, 0), positions=sheared)
    with pytest.raises(VolumeError, match=r"tilted: gantry tilt of about 0\.29 degrees .*0\.195 mm over"):
        load_series(tmp_path / "tilted")


def test_slices_with_their_own_rescale_keep_their_fractions(tmp_path):
    """PET and Philips MR scale each slice on its own: a first slice of slope 1 must not make the series an
    integer one (8.094 was read as 8)."""
    values = np.round(np.random.default_rng(0).uniform(0, 30, (6, 5, 4)), 3).astype(np.float32)
    values[..., 0] = np.round(values[..., 0])
    whole = write_series(tmp_path / "slope1", values, SPACING, slope=1, intercept=0)
    fine = write_series(tmp_path / "slope0.001", values, SPACING, slope=0.001, intercept=0)
    (tmp_path / "mixed").mkdir()
    for a, b in zip(sorted(whole), sorted(fine)):
        first = a.name == "IM0000.dcm"  # slice 0 (files are named out of slice order)
        shutil.copyfile(a if first else b, tmp_path / "mixed" / a.name)
    volume = load_series(tmp_path / "mixed")
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, values, atol=1e-3)


def test_refuses_a_series_that_is_not_an_image(tmp_path, hu):
    write_series(tmp_path / "rt", hu, SPACING, modality="RTSTRUCT")
    with pytest.raises(VolumeError, match="rt: IM0000.dcm is not an image slice \\(modality RTSTRUCT"):
        load_series(tmp_path / "rt")


def test_refuses_pixel_data_it_cannot_decode(tmp_path, hu):
    files = write_series(tmp_path / "ct", hu, SPACING)
    assert transfer_syntax(files[0]) == "1.2.840.10008.1.2"  # implicit VR little endian, as GDCM writes
    set_transfer_syntax(files[2], "1.2.840.10008.1.2.4.110")  # JPEG XL: newer than the reader
    with pytest.raises(VolumeError, match=rf"ct: {files[2].name} is encoded in transfer syntax "
                                          r"1\.2\.840\.10008\.1\.2\.4\.110, which the DICOM reader cannot decode; "
                                          "decompress"):
        load_series(tmp_path / "ct")


# GDCM lists the HTJ2K files as a series of their own and leaves the JPEG XL ones out of its listing.
@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.110"])
def test_an_undecodable_file_of_another_series_blocks_only_that_series(tmp_path, hu, syntax):
    """A hospital folder mixes series: a file the reader cannot decode keeps its own series from being read,
    not the CT named in the cases table; unnamed, the folder lists it among its series."""
    escaped = syntax.replace(".", r"\.")
    write_series(tmp_path / "ct", hu, SPACING, series_uid="1.2.3.1")
    other = write_series(tmp_path / "other", hu + 100, SPACING, series_uid="1.2.3.2")
    for f in other[:1]:  # one is enough (GDCM takes ~0.5 s for each such file at every scan of the folder)
        set_transfer_syntax(f, syntax)  # HTJ2K, JPEG XL: newer than the reader
        shutil.move(f, tmp_path / "ct" / f"b_{f.name}")
    np.testing.assert_array_equal(load_series(tmp_path / "ct", "1.2.3.1").array, hu)
    with pytest.raises(VolumeError, match=r"ct: 2 DICOM series, 1\.2\.3\.1 \(CT.*; 1\.2\.3\.2 \(.*1 file\(s\), 1 in "
                                          rf"transfer syntax {escaped}, which the reader cannot decode\)"):
        load_series(tmp_path / "ct")
    with pytest.raises(VolumeError, match=rf"b_IM\d+\.dcm is encoded in transfer syntax {escaped}"):
        load_series(tmp_path / "ct", "1.2.3.2")


def test_a_localizer_in_the_series_is_left_out(tmp_path, hu):
    """Some scanners store the scout view under the axial series' UID; it is no slice of the volume, and
    sorting along its (sagittal) normal must not reorder the axial slices."""
    uid = "1.2.826.0.1.3680043.2.1125.7.1"
    write_series(tmp_path / "ct", hu, SPACING, origin=ORIGIN, series_uid=uid)
    sagittal = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # rows along y, columns along -z
    scout = {0: {"0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER", "0008|0018": uid + ".999"}}
    (loc,) = write_series(tmp_path / "scout", np.ones((9, 4, 1), np.float32), (1.0, 1.0, 1.0), sagittal,
                          (0.0, -50.0, 60.0), series_uid=uid, tag_overrides=scout)
    shutil.move(loc, tmp_path / "ct" / "AA_scout.dcm")
    vol = load_series(tmp_path / "ct")
    np.testing.assert_array_equal(vol.array, hu)
    np.testing.assert_allclose(vol.affine, lps_geometry_affine(SPACING, np.eye(3), ORIGIN), atol=1e-6)
    for f in (tmp_path / "ct").glob("IM*.dcm"):
        f.unlink()
    with pytest.raises(VolumeError, match="only localizer"):
        load_series(tmp_path / "ct")


def test_refuses_a_folder_without_series(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no DICOM here")
    with pytest.raises(VolumeError, match="empty: no DICOM series found"):
        load_series(tmp_path / "empty")


def test_reading_a_series_leaves_the_process_locale_as_it_was(tmp_path, hu):
    """GDCM sets the C locale; left so, every later text file of the process opened as ASCII (CI failed so)."""
    import locale

    before = locale.setlocale(locale.LC_ALL)
    write_series(tmp_path / "ct", hu, SPACING)
    load_series(tmp_path / "ct")
    assert locale.setlocale(locale.LC_ALL) == before
    (tmp_path / "log.txt").write_text("train: 100%|██████████|", encoding="utf-8")
    assert "█" in (tmp_path / "log.txt").read_text()  # the default encoding, as the tests' log checks use
