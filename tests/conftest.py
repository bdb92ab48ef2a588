"""Shared fixtures: tiny deterministic data, so tests never need network or GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsynth.data.slice_set import SliceSet

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "totalseg-example"


def toy_slices(n: int = 8, size: int = 32, seed: int = 0) -> SliceSet:
    """Discs of three classes on a background, with class-dependent intensities and noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        cx, cy = (torch.randint(size // 3, 2 * size // 3, (2,), generator=g)).tolist()
        r = size // 3
        labels[i][(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = 1
        labels[i][(xx - cx) ** 2 + (yy - cy) ** 2 < (r // 2) ** 2] = 2
    levels = torch.tensor([-1.0, 0.0, 0.6])
    images = levels[labels][:, None] + 0.05 * torch.randn(n, 1, size, size, generator=g)
    return SliceSet(images.clamp(-1, 1), labels, (labels > 0).float()[:, None], ["toy"] * n, list(range(n)))


@pytest.fixture
def toy_set() -> SliceSet:
    return toy_slices()


@pytest.fixture
def make_toy_slices():
    """The toy-data factory, for tests that need more or larger slices."""
    return toy_slices


def spectral_sigma_errors(state: dict) -> dict[str, float]:
    """Per spectrally normalised layer of a state dict: |sigma as used - largest singular value| / the latter.

    sigma as used is u . (W v) with the stored u, v (what torch's hook divides by in eval mode);
    W is the weight as a (out, in * k * k) matrix.
    """
    out = {}
    for key, weight in state.items():
        if key.endswith("weight_orig"):
            prefix = key[: -len("orig")]
            w = weight.flatten(1).double()
            used = state[prefix + "u"].double() @ w @ state[prefix + "v"].double()
            true = torch.linalg.matrix_norm(w, 2)
            out[prefix[:-1]] = float(abs(used - true) / true)
    return out


@pytest.fixture
def sigma_errors():
    """``spectral_sigma_errors``: how far each spectral norm of a state dict is from exact."""
    return spectral_sigma_errors


def fid_inception_architecture() -> torch.nn.Module:
    """pytorch_fid.inception.fid_inception_v3's network, built as it does before loading its weights."""
    import torchvision
    from pytorch_fid import inception as fid

    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid.FIDInceptionE_1(1280)
    net.Mixed_7c = fid.FIDInceptionE_2(2048)
    return net


def calibrate_batch_norm(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` (in eval mode after) with its batch-norm running statistics set from one random batch of
    299 px images in [-1, 1]: through a deep random Inception its features then stay O(1)."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the running stats to its own
    net.train()
    with torch.no_grad():
        net(torch.rand(2, 3, 299, 299) * 2 - 1)
    return net.eval()


def write_random_weights(folder: Path, calibrated: bool = False) -> Path:
    """Random weights with the exact architectures and file names of the pretrained ones.

    The real loading code then runs offline; the numbers it produces test the
    plumbing, not image quality. Through the deep random Inception every feature
    shrinks towards 0; ``calibrated`` sets its batch-norm statistics from one
    random batch, which keeps them O(1): features then tell images apart.
    """
    import torchvision

    from medsynth.metrics.perceptual import ALEXNET_FILE, INCEPTION_FILE, weight_path

    torch.manual_seed(0)
    net = fid_inception_architecture()
    if calibrated:
        calibrate_batch_norm(net)
    weight_path(folder, INCEPTION_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), weight_path(folder, INCEPTION_FILE))
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), weight_path(folder, ALEXNET_FILE))
    return folder


@pytest.fixture(scope="session")
def fid_inception_builder():
    """The FID-Inception architecture builder, for tests that make their own weights from it."""
    return fid_inception_architecture


@pytest.fixture(scope="session")
def batch_norm_calibrator():
    """``calibrate_batch_norm``, for tests that make their own weights."""
    return calibrate_batch_norm


@pytest.fixture(scope="session")
def random_weights_dir(tmp_path_factory) -> Path:
    return write_random_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def calibrated_weights_dir(tmp_path_factory) -> Path:
    """Random weights whose Inception features tell images apart (``write_random_weights``)."""
    return write_random_weights(tmp_path_factory.mktemp("calibrated-weights"), calibrated=True)


def preprocess_and_slice(out: Path, image: Path, label: Path, table, modality: str, size: int,
                         spacing_xy: float | None = None):
    """A case through preprocessing and slicing as the workflow runs them; its CaseSlices."""
    import numpy as np

    from medsynth.data.preprocess import PreprocessSettings, preprocess_case
    from medsynth.data.slicing import SliceSettings, slice_case
    from medsynth.io.nifti import load_volume

    preprocess_case(Path(out).name, image, label, out, table, PreprocessSettings(modality, spacing_xy))
    volumes = [load_volume(Path(out) / f"{n}.nii.gz").array for n in ("image", "label", "mask")]
    return slice_case(volumes[0].astype(np.float32), volumes[1], volumes[2], SliceSettings(size, 0.05))


@pytest.fixture(scope="session")
def slice_volumes():
    """``preprocess_and_slice``, for tests that need a phantom or real case as training sees it."""
    return preprocess_and_slice


@pytest.fixture(scope="session")
def real_ct():
    """The real CT in ../shared/data: (ct path, label path, a table with one class per value present)."""
    import numpy as np

    from medsynth.data.labels import LabelTable
    from medsynth.io.nifti import load_volume

    ct, label = SHARED_DATA / "ct.nii.gz", SHARED_DATA / "label.nii.gz"
    if not (ct.is_file() and label.is_file()):
        pytest.skip(f"real CT example not available at {SHARED_DATA}")
    values = sorted(int(v) for v in np.unique(load_volume(label, np.int32).array))
    return ct, label, LabelTable.from_config([{"name": f"ts_{v}", "values": [v]} for v in values])


def level_segmenter(levels, names, path: Path) -> Path:
    """A segmenter file whose U-Net calls each pixel the class of the nearest of ``levels`` (one per class
    of ``names``): exact and deterministic, so segmentation scores can be checked by hand.

    One level, no pooling: the first conv and batch norm give ``x + 2`` and ``relu(x - level_k)`` per
    pixel, the second passes them on, and the head forms ``-|x - level_k| = (x - level_k) - 2 relu(x -
    level_k)`` from them.
    """
    from medsynth.models.segmenter import UNetSegmenter, save_segmenter

    levels = [float(v) for v in levels]
    c = len(levels)
    model = UNetSegmenter(c, channels=(c + 1,))
    conv1, bn1, _, conv2, bn2, _ = model.down[0]
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        conv1.weight[:, 0, 1, 1] = 1.0
        for k in range(c + 1):
            conv2.weight[k, k, 1, 1] = 1.0
        for bn, means in ((bn1, [-2.0, *levels]), (bn2, [0.0] * (c + 1))):
            bn.running_mean.copy_(torch.tensor(means))
            bn.running_var.fill_(1.0 - bn.eps)  # eval-mode batch norm then subtracts the mean, nothing else
            bn.weight.fill_(1.0)
        for k, level in enumerate(levels):
            model.head.weight[k, 0, 0, 0], model.head.weight[k, k + 1, 0, 0] = 1.0, -2.0
            model.head.bias[k] = -2.0 - level
    return save_segmenter(model.eval(), path, c, model.channels, names)


@pytest.fixture(scope="session")
def make_level_segmenter():
    """``level_segmenter``: a segmenter file that labels pixels by intensity level."""
    return level_segmenter
