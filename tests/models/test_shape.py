"""Shape consistency (medsynth.models.shape): nothing bright outside the body, real images cost nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsynth.data.labels import LabelTable
from medsynth.data.phantom import PHANTOM_LABELS, make_case
from medsynth.io.nifti import save_volume
from medsynth.models.registry import ModelSpec, build_generator
from medsynth.models.shape import mask_loss
from medsynth.data.slice_set import one_hot


def disc(size: int, radius: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < radius**2).float()[None, None]


def _tensors(slices):
    return torch.from_numpy(slices.images)[:, None], torch.from_numpy(slices.masks)[:, None].float()


def test_real_ct_slices_cost_nothing(tmp_path: Path, real_ct, slice_volumes) -> None:
    """A perfect generator (fake = real) on the real CT, whose lungs and bowel gas are as dark as air."""
    ct, label, table = real_ct
    images, body = _tensors(slice_volumes(tmp_path / "pre", ct, label, table, "CT", 128))
    assert (images[body > 0] < -0.95).float().mean() > 0.01  # there is dark tissue inside the body
    assert float(mask_loss(images, body)) < 1e-6


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_phantom_slices_cost_nothing(tmp_path: Path, modality: str, slice_volumes) -> None:
    case = make_case(0, seed=0, shape=(96, 96, 12), spacing=(4.0, 4.0, 6.0))
    save_volume(tmp_path / "image.nii.gz", case.ct if modality == "CT" else case.mr, case.affine)
    save_volume(tmp_path / "label.nii.gz", case.label, case.affine)
    table = LabelTable.from_config([{"name": n, "values": [v]} for v, n in sorted(PHANTOM_LABELS.items())])
    images, body = _tensors(slice_volumes(tmp_path / "pre", tmp_path / "image.nii.gz", tmp_path / "label.nii.gz",
                                          table, modality, 96))
    assert float(mask_loss(images, body)) < 1e-6


def test_bright_outside_costs_dark_inside_does_not():
    body = disc(32, 10)
    real = body * 0.3 - (1 - body)
    assert float(mask_loss(real, body)) == 0.0
    lungs = real.clone()
    lungs[disc(32, 5) > 0] = -1.0  # air inside the body: legitimately dark
    assert float(mask_loss(lungs, body)) == 0.0
    spill = real.clone()
    spill[..., :2, :] = 1.0  # bright rows where no body is
    spill.requires_grad_(True)
    loss = mask_loss(spill, body)
    loss.backward()
    outside = (1 - body).sum()
    assert float(loss.detach()) == pytest.approx(float(64 / outside))  # 64 pixels, each fully bright
    assert (spill.grad[..., :2, :] > 0).all() and (spill.grad[body > 0] == 0).all()


def test_mask_loss_alone_darkens_the_generators_outside():
    torch.manual_seed(0)
    spec = ModelSpec(g_channels=(16, 16, 8), d_channels=(8, 16), z_dim=4, spade_hidden=8)
    G = build_generator(spec, 2)
    body = disc(16, 5).repeat(2, 1, 1, 1)
    onehot = one_hot(body[:, 0].long(), 2)
    z = G.noise(2, 16, 16)
    with torch.no_grad():
        start = float(mask_loss(G(onehot, z), body))
    opt = torch.optim.Adam(G.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        loss = mask_loss(G(onehot, z), body)
        loss.backward()
        opt.step()
    with torch.no_grad():
        outside = G(onehot, z)[body == 0]
    assert float(loss.detach()) < 0.2 * start
    assert float(outside.mean()) < -0.9
