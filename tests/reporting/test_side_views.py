"""Side views: radiological orientation, the stack's gaps, and the figure."""

import numpy as np
from PIL import Image

from medsynth.io.images import coronal, sagittal, stack
from medsynth.reporting.side_views import body_centre, case_views, side_views_figure


def _marked_volume() -> np.ndarray:
    """(x, y, z) = (8, 6, 5) RAS+ volume: 1 on the patient's right (high x), anterior (high y), superior (high z)."""
    vol = np.zeros((8, 6, 5), np.float32)
    vol[6:, :, :] += 1  # right
    vol[:, 4:, :] += 10  # anterior
    vol[:, :, 4] += 100  # superior
    return vol


def test_coronal_shows_the_patients_right_on_the_left_and_superior_at_the_top() -> None:
    view = coronal(_marked_volume(), j=0)  # a posterior plane: no anterior mark
    assert view.shape == (5, 8)  # rows z, columns x
    assert (view[0] >= 100).all() and (view[1:] < 100).all()  # top row: the most superior slice
    assert (view[:, :2] % 10 == 1).all() and (view[:, 2:] % 10 == 0).all()  # right side on the screen's left


def test_sagittal_shows_anterior_on_the_left_and_superior_at_the_top() -> None:
    view = sagittal(_marked_volume(), i=0)  # a plane on the patient's left: no right mark
    assert view.shape == (5, 6)  # rows z, columns y
    assert (view[0] >= 100).all() and (view[1:] < 100).all()
    assert ((view[:, :2] % 100) == 10).all() and ((view[:, 2:] % 100) == 0).all()  # anterior on the left


def test_stack_puts_slices_at_their_z_and_fills_gaps() -> None:
    slices = np.stack([np.full((4, 3), v, np.float32) for v in (1, 2, 3)])
    vol = stack(slices, np.array([5, 6, 8]), fill=-1)
    assert vol.shape == (4, 3, 4)
    np.testing.assert_array_equal(vol[0, 0], [1, 2, -1, 3])


def test_body_centre_and_the_figure(tmp_path) -> None:
    masks = np.zeros((3, 16, 16), np.uint8)
    masks[:, 2:9, 10:15] = 1
    assert body_centre(masks) == (5, 12)  # centre of rows 2..8 and columns 10..14
    labels = masks * 2
    images = np.where(masks > 0, 0.5, -1).astype(np.float32)
    views = case_views(labels, masks, np.arange(3), [("sample 1", images), ("real", images)])
    assert [v[0] for v in views] == ["label", "sample 1", "real"]
    np.testing.assert_array_equal(views[1][1], views[2][1])
    out = side_views_figure(tmp_path / "side.png", [("c0", views, 2.0), ("c1", views[:2], 0.5)], num_classes=3)
    assert np.asarray(Image.open(out)).shape[0] > 100
