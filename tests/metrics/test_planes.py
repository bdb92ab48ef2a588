"""Coronal and sagittal planes for three-plane FID: proportions, which planes, squares."""

import numpy as np
import pytest

from medsynth.metrics.planes import isotropic, plane_sets, side_plane_size, side_planes


def test_isotropic_resamples_only_along_z() -> None:
    vol = np.random.default_rng(0).random((8, 6, 10)).astype(np.float32)
    assert isotropic(vol, 6.0, 3.0).shape == (8, 6, 5)  # 3 mm slices on a 6 mm grid: half as many
    assert isotropic(vol, 2.0, 4.0).shape == (8, 6, 20)
    assert isotropic(vol, 3.0, 3.0) is vol


def test_side_planes_cross_the_body_and_are_square() -> None:
    images = np.full((4, 10, 12), -1.0, np.float32)
    masks = np.zeros((4, 10, 12), np.uint8)
    masks[:, 2:6, 3:10] = 1  # body: x 2..5, y 3..9
    images[masks > 0] = 0.5
    cor = side_planes(images, masks, np.arange(4), 1.0, 2.0, "coronal")
    sag = side_planes(images, masks, np.arange(4), 1.0, 2.0, "sagittal")
    assert cor.shape == (7, 10, 10) and sag.shape == (4, 12, 12)  # one plane per y (x) index with body
    # A coronal plane: 8 rows of z (4 slices at 2 mm on a 1 mm grid) centred in a 10 x 10 square of air.
    np.testing.assert_allclose(cor[:, 1:9, 4:8], 0.5, atol=1e-6)  # body x 2..5, the patient's right on the left
    assert (cor[:, 0] == -1).all() and (cor[:, 1:9, :4] == -1).all()
    with pytest.raises(ValueError, match="plane"):
        side_planes(images, masks, np.arange(4), 1.0, 2.0, "axial")


def test_plane_sets_pad_cases_of_different_size_to_one_square() -> None:
    a = (np.zeros((3, 8, 8), np.float32), np.ones((3, 8, 8), np.uint8), np.arange(3), 1.0, 1.0)
    b = (np.zeros((5, 8, 8), np.float32), np.ones((5, 8, 8), np.uint8), np.arange(5), 1.0, 2.0)
    sets = plane_sets([a, b])
    assert sets["coronal"].shape == (16, 1, 10, 10)  # 8 planes each; b is 10 slices tall after resampling
    assert float(sets["sagittal"][0, 0, 0, 0]) == -1.0  # a's 8 x 3 plane padded with air


def test_a_case_without_slices_or_body_has_no_planes_and_the_others_keep_theirs() -> None:
    """A test case whose slicing kept no slice (slice.require_classes) stops nothing: it adds no plane."""
    empty = (np.zeros((0, 8, 8), np.float32), np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64), 1.0, 1.0)
    air = (np.zeros((3, 8, 8), np.float32), np.zeros((3, 8, 8), np.uint8), np.arange(3), 1.0, 1.0)
    body = (np.zeros((3, 8, 8), np.float32), np.ones((3, 8, 8), np.uint8), np.arange(3), 1.0, 1.0)
    for plane in ("coronal", "sagittal"):
        assert side_planes(*empty, plane).shape[0] == side_planes(*air, plane).shape[0] == 0
    assert plane_sets([empty, body, air])["coronal"].shape == plane_sets([body])["coronal"].shape == (8, 1, 8, 8)


@pytest.mark.parametrize("spacing_xy, spacing_z, z", [(1.0, 2.0, [0, 1, 2, 3]), (6.0, 3.0, [2, 3, 4, 7, 8]),
                                                      (0.8, 2.5, list(range(13))), (1.0, 1.0, [5])])
def test_the_square_size_is_known_before_the_images(spacing_xy: float, spacing_z: float, z: list[int]) -> None:
    """Cases are cut one at a time into squares as large as the set's largest: the size comes from the
    stack's shape and z alone."""
    masks = np.ones((len(z), 10, 7), np.uint8)
    images = np.zeros((len(z), 10, 7), np.float32)
    for plane in ("coronal", "sagittal"):
        cuts = side_planes(images, masks, np.array(z), spacing_xy, spacing_z, plane)
        assert side_plane_size((10, 7), np.array(z), spacing_xy, spacing_z, plane) == cuts.shape[-1]


@pytest.mark.parametrize("spacing_z, z", [(3.0, [4]), (1.0, [4, 5])])
def test_a_stack_thinner_than_half_an_inplane_voxel_keeps_its_tissue_in_its_planes(spacing_z: float,
                                                                                   z: list[int]) -> None:
    """One 3 mm slice (or two 1 mm slices) on a 6 mm grid: resampled to the in-plane spacing it had rounded to
    no row, so its planes were air on both sides and any generator scored FID 0 against them."""
    masks = np.ones((len(z), 10, 7), np.uint8)
    images = np.full((len(z), 10, 7), 0.5, np.float32)
    for plane in ("coronal", "sagittal"):
        cuts = side_planes(images, masks, np.array(z), 6.0, spacing_z, plane)
        assert len(cuts) and (cuts > -1).any(axis=(1, 2)).all(), plane  # every plane shows the slab's tissue
        np.testing.assert_allclose(cuts.max(axis=(1, 2)), 0.5, atol=1e-6)
        assert side_plane_size((10, 7), np.array(z), 6.0, spacing_z, plane) == cuts.shape[-1]
