"""The canvas generation runs on (medsynth.inference.canvas): every labelled slice, the whole labelled extent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsynth.inference.canvas import crop, generate_stack, paste, plan_canvas, tile_starts, tile_weight

CPU = torch.device("cpu")


def test_the_canvas_covers_every_labelled_slice_and_the_whole_labelled_extent() -> None:
    label = np.zeros((100, 90, 12), np.uint8)
    label[10:81, 20:60, 2:9] = 1  # a body 71 x 40 px, wider than the 32 px crop
    label[50, 50, 10] = 3  # one labelled voxel on a slice with almost no body
    c = plan_canvas(label, size=32, multiple=8)
    assert c.z.tolist() == [2, 3, 4, 5, 6, 7, 8, 10]
    assert (c.width, c.height) == (72, 40)  # the box rounded up to the multiple; at least the crop size
    assert c.x0 <= 10 and c.x0 + c.width >= 81 and c.y0 <= 20 and c.y0 + c.height >= 60
    stack = crop(label, c.x0, c.y0, c.width, c.height, c.z, 0)
    assert stack.shape == (8, 72, 40) and int((stack > 0).sum()) == int((label > 0).sum())
    back = np.zeros_like(label)
    paste(back, stack, c)
    np.testing.assert_array_equal(back, label)
    small = np.zeros((100, 90, 3), np.uint8)
    small[40:45, 40:44, 1] = 2
    s = plan_canvas(small, size=32, multiple=8)
    assert (s.width, s.height) == (32, 32) and s.z.tolist() == [1]  # never below the training size
    with pytest.raises(ValueError, match="only background"):
        plan_canvas(np.zeros((8, 8, 2), np.uint8), 32, 8)


def test_a_canvas_beyond_the_volume_reads_background_and_writes_only_inside() -> None:
    label = np.zeros((20, 20, 2), np.uint8)
    label[:, :, 0] = 1  # labelled to the volume's edges
    c = plan_canvas(label, size=32, multiple=8)
    stack = crop(label, c.x0, c.y0, c.width, c.height, c.z, 0)
    assert stack.shape == (1, 32, 32) and int(stack.sum()) == 400
    out = np.zeros((20, 20, 2), np.float32)
    paste(out, np.ones((1, 32, 32), np.float32), c)
    assert out[:, :, 0].all() and not out[:, :, 1].any()


def test_tiles_overlap_by_half_and_end_flush() -> None:
    assert tile_starts(32, 32) == [0]
    assert tile_starts(72, 32) == [0, 16, 32, 40]
    w = tile_weight(32)
    assert float(w.min()) > 0 and w[16, 16] == w.max() and torch.allclose(w, w.T)


class PointwiseG(torch.nn.Module):
    """A generator whose output at a pixel depends only on that pixel's label and noise: tiles and one
    canvas must then give the same image."""

    context_slices, spatial_noise, z_dim, num_up = 0, True, 2, 0

    def noise(self, batch, height, width, generator=None, device=None):
        return torch.randn((batch, self.z_dim, height, width), generator=generator, device=device)

    def forward(self, onehot: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        ramp = torch.arange(onehot.shape[1], dtype=torch.float32)[None, :, None, None]
        return torch.tanh((onehot * ramp).sum(1, keepdim=True) * 0.3 + 0.1 * z[:, :1] - 0.5)


def test_tiles_blend_to_the_canvas_image_for_a_pointwise_generator_and_outside_is_background() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(3, 72, 40)).astype(np.uint8)
    labels[:, :5] = 0  # outside the body
    z = np.array([4, 5, 9])
    args = (PointwiseG(), 4, labels, z, 11, 2, CPU, "volume", 1.0)
    canvas = generate_stack(*args, inplane="canvas")
    tiles = generate_stack(*args, inplane="tiles", tile=32)
    np.testing.assert_allclose(tiles, canvas, atol=1e-6)
    assert (canvas[labels == 0] == -1).all() and (canvas[labels > 0] > -1).all()
    corner = labels.copy()
    corner[:, :40, :] = 0  # the first tiles see only background: skipped, still -1 there and right elsewhere
    skipped = generate_stack(PointwiseG(), 4, corner, z, 11, 2, CPU, "volume", 1.0, inplane="tiles", tile=32)
    np.testing.assert_allclose(skipped, generate_stack(PointwiseG(), 4, corner, z, 11, 2, CPU, "volume", 1.0,
                                                       inplane="canvas"), atol=1e-6)
    with pytest.raises(ValueError, match="generate.inplane"):
        generate_stack(*args, inplane="strips")
