"""FID and LPIPS (FID's maths: test_fid.py; KID: test_kid.py): the weight-folder rules, and the real
loaders run on weight files written here (random weights of the right architecture), never downloaded."""

from __future__ import annotations

import hashlib
import logging
import time
import warnings

import numpy as np
import pytest
import torch
import torchvision

from medsynth.metrics import fid as F, perceptual as P

CPU = torch.device("cpu")
LOGGER = "medsynth.metrics.perceptual"

# How pytorch-fid's InceptionV3 wrapper regroups the FID Inception's modules into its blocks
# (pool3 = block 3; the max/avg pools it adds have no state).
INCEPTION_BLOCKS = [
    ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"],
    ["Conv2d_3b_1x1", "Conv2d_4a_3x3"],
    ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"],
    ["Mixed_7a", "Mixed_7b", "Mixed_7c"],
]
# Where lpips puts torchvision's AlexNet `features[i]` convolutions: (slice, index).
ALEXNET_CONVS = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty torch home, no hub dir set, and any torch.hub download fails loudly and is recorded.

    Returns (attempted URLs, torch home). torch.hub's module-level hub dir is restored after the
    test whatever the code under test leaves in it.
    """
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("TORCH_HUB", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    attempts: list[str] = []

    def no_download(url, dst, *args, **kwargs):
        attempts.append(url)
        raise AssertionError(f"a download was attempted: {url} -> {dst}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    assert torch.hub.get_dir() == str(home / "hub")
    return attempts, home


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory, fid_inception_builder, batch_norm_calibrator):
    """A weights folder holding random FID-Inception weights under the upstream name (~95 MB, once).

    The batch-norm running statistics are calibrated on one random batch, so the stored buffers
    differ from a fresh network's and the features stay O(1) through the deep random network.
    """
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        net = batch_norm_calibrator(fid_inception_builder())
    state = {k: v.clone() for k, v in net.state_dict().items()}
    folder = tmp_path_factory.mktemp("weights-inception")
    P.weight_path(folder, P.INCEPTION_FILE).parent.mkdir(parents=True)
    torch.save(state, P.weight_path(folder, P.INCEPTION_FILE))
    return folder, state


@pytest.fixture
def alexnet_weights(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(99)
        state = torchvision.models.alexnet(weights=None).state_dict()
    folder = tmp_path / "weights-alexnet"
    P.weight_path(folder, P.ALEXNET_FILE).parent.mkdir(parents=True)
    torch.save(state, P.weight_path(folder, P.ALEXNET_FILE))
    return folder, state


def grey_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth-ish grey images in [-1, 1], (n, 1, size, size)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    phase = torch.rand(n, 1, 1, generator=g) * 6.28
    freq = 1 + 4 * torch.rand(n, 1, 1, generator=g)
    img = torch.sin(freq * xx + phase) * torch.cos(freq * yy) + 0.2 * torch.randn(n, size, size, generator=g)
    return img.clamp(-1, 1)[:, None]


# --------------------------------------------------------------------------------------------- weight folder


def test_weight_path_uses_torch_hub_layout(tmp_path):
    assert P.weight_path(tmp_path, P.INCEPTION_FILE) == tmp_path / "checkpoints" / P.INCEPTION_FILE
    assert P.weight_path(str(tmp_path), P.ALEXNET_FILE) == tmp_path / "checkpoints" / P.ALEXNET_FILE


def test_available_auto_with_empty_folder_logs_and_returns_false(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    assert P.available(tmp_path, (P.INCEPTION_FILE, P.ALEXNET_FILE), "auto") is False
    text = caplog.text
    assert "not computed: weights unavailable" in text
    for name in (P.INCEPTION_FILE, P.ALEXNET_FILE):
        assert str(tmp_path / "checkpoints" / name) in text


@pytest.mark.parametrize("name", [P.INCEPTION_FILE, P.ALEXNET_FILE])
def test_available_required_names_missing_path_and_url(tmp_path, name):
    with pytest.raises(P.WeightsUnavailable) as err:
        P.available(tmp_path, (name,), "required")
    message = str(err.value)
    assert str(tmp_path / "checkpoints" / name) in message
    assert P.WEIGHT_URLS[name] in message
    assert P.WEIGHT_URLS[name].startswith("https://") and P.WEIGHT_URLS[name].endswith("/" + name)


def test_available_required_names_only_the_missing_file(tmp_path):
    present = P.weight_path(tmp_path, P.ALEXNET_FILE)
    present.parent.mkdir(parents=True)
    present.write_bytes(b"x")
    with pytest.raises(P.WeightsUnavailable) as err:
        P.available(tmp_path, (P.ALEXNET_FILE, P.INCEPTION_FILE), "required")
    assert str(P.weight_path(tmp_path, P.INCEPTION_FILE)) in str(err.value)
    assert P.ALEXNET_FILE not in str(err.value)


def test_available_off_returns_false_silently(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert P.available(tmp_path, (P.INCEPTION_FILE,), "off") is False
    assert caplog.records == []


def test_available_rejects_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="auto, required or off"):
        P.available(tmp_path, (P.INCEPTION_FILE,), "yes")


@pytest.mark.parametrize("mode", ["auto", "required"])
def test_available_true_when_files_present(tmp_path, caplog, mode):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for name in (P.INCEPTION_FILE, P.ALEXNET_FILE):
        P.weight_path(tmp_path, name).parent.mkdir(parents=True, exist_ok=True)
        P.weight_path(tmp_path, name).write_bytes(b"not checked without check_hash")
    assert P.available(tmp_path, (P.INCEPTION_FILE, P.ALEXNET_FILE), mode) is True
    assert "not computed" not in caplog.text


def test_expected_sha256_prefix_of_upstream_names():
    assert P.expected_sha256_prefix(P.INCEPTION_FILE) == "6726825d"
    assert P.expected_sha256_prefix(P.ALEXNET_FILE) == "7be5be79"


def test_verify_rejects_a_file_whose_hash_does_not_match(tmp_path):
    path = tmp_path / P.INCEPTION_FILE
    path.write_bytes(b"certainly not the FID Inception weights")
    assert not hashlib.sha256(path.read_bytes()).hexdigest().startswith("6726825d")
    with pytest.raises(P.WeightsUnavailable) as err:
        P.verify(path)
    assert str(path) in str(err.value)


def test_verify_accepts_a_file_named_after_its_own_hash(tmp_path):
    data = b"weights" * 1000 + bytes(range(256)) * 5000  # > 1 MiB: several read chunks
    prefix = hashlib.sha256(data).hexdigest()[:8]
    path = tmp_path / f"thing-{prefix}.pth"
    path.write_bytes(data)
    assert P.expected_sha256_prefix(path.name) == prefix
    P.verify(path)  # no exception
    path.write_bytes(data + b"!")  # same name, different content
    with pytest.raises(P.WeightsUnavailable):
        P.verify(path)


def test_available_with_check_hash_rejects_non_upstream_file(alexnet_weights):
    folder, _ = alexnet_weights
    assert P.available(folder, (P.ALEXNET_FILE,), "required") is True  # present: enough without hashing
    with pytest.raises(P.WeightsUnavailable) as err:
        P.available(folder, (P.ALEXNET_FILE,), "required", check_hash=True)
    assert str(P.weight_path(folder, P.ALEXNET_FILE)) in str(err.value)


# --------------------------------------------------------------------------------------------- Inception


def test_load_inception_reads_the_weights_folder_without_network(inception_weights, offline):
    attempts, home = offline
    folder, saved = inception_weights
    hub_before = torch.hub.get_dir()
    model = P.load_inception(folder, CPU)
    assert attempts == []
    assert torch.hub.get_dir() == hub_before
    assert not home.exists() or not any(home.rglob("*"))  # nothing cached in the torch home
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    compared = set()
    for block, names in zip(model.blocks, INCEPTION_BLOCKS):
        for module, name in zip(block, names):
            for key, value in module.state_dict().items():
                assert torch.equal(value, saved[f"{name}.{key}"]), f"{name}.{key}"
                compared.add(f"{name}.{key}")
    # Everything the file holds reaches the model except the unused classifier.
    assert set(saved) - compared == {"fc.weight", "fc.bias"}


def test_inception_features_shape_range_and_grey_input(inception_weights, offline):
    folder, _ = inception_weights
    model = P.load_inception(folder, CPU)
    x = grey_images(3)
    grey = P.inception_features(model, x, batch=2)  # two batches: 2 + 1
    assert grey.shape == (3, 2048) and grey.dtype == np.float64
    assert np.isfinite(grey).all()
    assert np.abs(grey[0] - grey[1]).max() > 1e-3  # different images, different features
    # A grey image and its 3-channel copy are the same input.
    np.testing.assert_array_equal(P.inception_features(model, x[:2].repeat(1, 3, 1, 1)), grey[:2])
    # pytorch-fid's InceptionV3 takes [0, 1] (normalize_input maps it back to [-1, 1]); the
    # second batch holds the third image alone.
    with torch.no_grad():
        direct = model((x[2:].repeat(1, 3, 1, 1) + 1) / 2)[0].flatten().double().numpy()
    np.testing.assert_allclose(grey[2], direct, rtol=1e-6, atol=1e-6 * np.abs(direct).max())
    assert P.inception_features(model, x[:0]).shape == (0, 2048)
    # FID of a set with itself, on the first 128 feature dimensions: scipy's sqrtm of a singular
    # 2048 x 2048 product alone takes 10-80 s on two CPU cores.
    mu, sigma = F.gaussian_stats(grey[:, :128])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 samples: singular covariance
        fid = F.frechet_distance(mu, sigma, mu, sigma)
        other = F.frechet_distance(mu, sigma, *F.gaussian_stats(grey[:, 128:256]))
    assert np.trace(sigma) > 0
    assert abs(fid) < 1e-4 * np.trace(sigma)
    assert other > 1e3 * abs(fid)


# --------------------------------------------------------------------------------------------- LPIPS


def test_load_lpips_reads_the_weights_folder_without_network(alexnet_weights, offline):
    attempts, home = offline
    folder, saved = alexnet_weights
    hub_before = torch.hub.get_dir()
    model = P.load_lpips(folder, CPU)
    assert attempts == []
    assert torch.hub.get_dir() == hub_before
    assert not home.exists() or not any(home.rglob("*"))
    assert not model.training
    torch.testing.assert_close(model.net.slice1[0].weight, saved["features.0.weight"], rtol=0, atol=0)
    for index, slice_no in ALEXNET_CONVS.items():
        conv = getattr(model.net, f"slice{slice_no}")._modules[str(index)]
        assert torch.equal(conv.weight, saved[f"features.{index}.weight"])
        assert torch.equal(conv.bias, saved[f"features.{index}.bias"])


def test_lpips_distances(alexnet_weights, offline):
    folder, _ = alexnet_weights
    model = P.load_lpips(folder, CPU)
    x, y = grey_images(3, seed=1), grey_images(3, seed=2)
    same = P.lpips_distances(model, x, x)
    diff = P.lpips_distances(model, x, y)
    assert same.shape == (3,) and diff.shape == (3,)
    assert np.abs(same).max() < 1e-6
    assert (diff > 1e-4).all()
    np.testing.assert_allclose(P.lpips_distances(model, y, x), diff, rtol=1e-5)
    np.testing.assert_allclose(P.lpips_distances(model, x.repeat(1, 3, 1, 1), y, batch=2), diff, rtol=1e-5)
    assert P.lpips_distances(model, x[:0], y[:0]).shape == (0,)


def test_loading_leaves_torch_hub_dir_unpinned(alexnet_weights, offline, tmp_path, monkeypatch):
    folder, _ = alexnet_weights
    P.load_lpips(folder, CPU)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "later"))
    assert torch.hub.get_dir() == str(tmp_path / "later" / "hub")


# --------------------------------------------------------------------------------------------- missing weights


@pytest.mark.parametrize("loader, name", [(P.load_inception, P.INCEPTION_FILE), (P.load_lpips, P.ALEXNET_FILE)],
                         ids=["inception", "lpips"])
def test_loaders_fail_fast_naming_the_missing_file(tmp_path, offline, loader, name):
    attempts, home = offline
    folder = tmp_path / "empty-weights"
    folder.mkdir()
    start = time.perf_counter()
    with pytest.raises(P.WeightsUnavailable) as err:
        loader(folder, CPU)
    assert time.perf_counter() - start < 2.0
    assert attempts == []
    assert str(folder / "checkpoints" / name) in str(err.value)
    assert not home.exists() or not any(home.rglob("*"))


def test_load_inception_is_not_satisfied_by_the_other_file(alexnet_weights, offline):
    folder, _ = alexnet_weights  # only AlexNet there
    with pytest.raises(P.WeightsUnavailable, match=P.INCEPTION_FILE):
        P.load_inception(folder, CPU)
    assert offline[0] == []


def test_stream_of_empty_chunks_gives_nan_lpips_not_an_error(alexnet_weights, offline, tmp_path):
    """Every test case's slicing kept no slice: pairs of 0 rows reach the LPIPS queues, which then hold no
    batch (np.concatenate of none raised); LPIPS and diversity are NaN, as without the AlexNet weights."""
    folder, _ = alexnet_weights
    np.savez(tmp_path / "real.npz", available=False, reason="not computed: weights unavailable")
    stream = P.PerceptualStream(tmp_path / "real.npz", {"weights_dir": str(folder), "perceptual": "required"}, CPU)
    empty = torch.zeros(0, 1, 32, 32)
    stream.push(empty, empty)
    stream.push_pair(empty, empty)
    scores = stream.scores()
    assert np.isnan(scores["lpips"]) and np.isnan(scores["lpips_diversity"])
    assert stream.counts == {"fake": 0, "lpips": 0, "lpips_diversity": 0}


# --------------------------------------------------------------------------------------------- paired validation


def test_validations_kid_pairs_each_fake_with_the_real_image_of_its_label_map(tmp_path, calibrated_weights_dir, caplog):
    """Paired validation scores every few val slices (rows of the whole val set) against statistics of the whole
    set: with those rows as partners a perfect generator reads KID ~0; as independent sets the matched pairs
    pulled it below 0. Rows the statistics do not hold are not trusted: independent sets and a warning."""
    settings = {"weights_dir": str(calibrated_weights_dir), "perceptual": "required", "batch_size": 8,
                "kid_subsets": 5, "kid_subset_size": 10}
    real = grey_images(8, size=32, seed=3)
    stats = tmp_path / "inception_val.npz"
    assert P.save_real_stats(real, stats, settings, CPU)
    rows = np.array([0, 2, 5, 7])
    feats = P.inception_features(P.load_inception(calibrated_weights_dir, CPU), real[rows])
    perfect, independent = (P.perceptual_scores(real[rows], stats, settings, CPU, fake_features=feats,
                                                partner=partner)["kid"] for partner in (rows, None))
    other = P.perceptual_scores(0.3 * real[rows] + 0.5, stats, settings, CPU, partner=rows)["kid"]  # washed out
    assert other > 0 and independent < -1e-3 * other and abs(perfect) < 1e-6 * other
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        stale = P.perceptual_scores(real[rows], stats, settings, CPU, fake_features=feats, partner=rows + 4)["kid"]
    assert stale == pytest.approx(independent) and "hold 8 images, not those of the 4 generated" in caplog.text
