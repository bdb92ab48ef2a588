"""FID, KID and LPIPS with pretrained weights loaded from one folder, never from the internet.

The weights live in ``<weights_dir>/checkpoints/`` under their upstream file
names (torch.hub's layout): pytorch-fid's FID Inception and torchvision's
AlexNet trunk for LPIPS. ``fetch_weights`` downloads them once (a local rule:
compute nodes are often offline); metrics only ever read them. Missing weights
either stop the run with the file to place (``required``) or make the metrics
"not computed" (``auto``) — never a made-up number.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from medsynth.data.slice_batches import Rebatch
from medsynth.data.same_files import hash_file
from medsynth.metrics import INCEPTION_FILE
from medsynth.metrics.fid import FEATURES, fid_over_draws, gaussian_stats
from medsynth.metrics.kid import kernel_inception_distance

log = logging.getLogger(__name__)

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
WEIGHT_URLS = {
    INCEPTION_FILE: "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + INCEPTION_FILE,
    ALEXNET_FILE: "https://download.pytorch.org/models/" + ALEXNET_FILE,
}
PERCEPTUAL = ("fid", "kid", "lpips")


class WeightsUnavailable(RuntimeError):
    """Pretrained weights needed by a metric are not in the weights folder."""


def weight_path(weights_dir: Path, name: str) -> Path:
    return Path(weights_dir) / "checkpoints" / name


def expected_sha256_prefix(name: str) -> str:
    """Upstream file names end in the first hex digits of the file's SHA-256."""
    if "-" not in name:
        raise ValueError(f"{name}: expected an upstream weight file name ending in -<sha256 prefix>.pth")
    return name.rsplit("-", 1)[1].split(".")[0]


def verify(path: Path) -> None:
    digest = hash_file(path, ["sha256"])["sha256"]
    want = expected_sha256_prefix(path.name)
    if not digest.startswith(want):
        raise WeightsUnavailable(f"{path}: SHA-256 {digest[:16]}... does not start with {want}; "
                                 "the file is damaged or not the upstream one: delete it and fetch it again")


def available(weights_dir: Path, names: tuple[str, ...], mode: str, check_hash: bool = False) -> bool:
    """True when every weight file is present; otherwise raise (mode 'required') or say so (mode 'auto')."""
    if mode not in ("auto", "required", "off"):
        raise ValueError(f"metrics.perceptual must be auto, required or off, got {mode!r}")
    if mode == "off":
        return False
    missing = [weight_path(weights_dir, n) for n in names if not weight_path(weights_dir, n).is_file()]
    if missing:
        msg = (f"pretrained weights missing: {', '.join(map(str, missing))}; run `snakemake fetch_weights` "
               f"where there is internet, or download {', '.join(WEIGHT_URLS.get(p.name, p.name) for p in missing)} "
               f"and place the file(s) there")
        if mode == "required":
            raise WeightsUnavailable(msg)
        log.warning("not computed: weights unavailable (%s)", msg)
        return False
    if check_hash:
        try:
            for n in names:
                verify(weight_path(weights_dir, n))
        except WeightsUnavailable as exc:
            if mode == "required":
                raise
            log.warning("not computed: weights unavailable (%s)", exc)
            return False
    return True


@contextlib.contextmanager
def _hub_dir(weights_dir: Path):
    """torch.hub reads a file already in <hub dir>/checkpoints/ instead of downloading it."""
    # torch.hub keeps "not set" (follow TORCH_HOME) apart from a set folder: restore exactly that state.
    old = torch.hub._hub_dir
    torch.hub.set_dir(str(weights_dir))
    try:
        yield
    finally:
        torch.hub._hub_dir = old


def load_inception(weights_dir: Path, device: torch.device) -> torch.nn.Module:
    """pytorch-fid's FID InceptionV3 (pool3, 2048 features) from the weights folder."""
    from pytorch_fid.inception import InceptionV3

    available(weights_dir, (INCEPTION_FILE,), "required")
    with _hub_dir(weights_dir):
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[FEATURES]], resize_input=True, normalize_input=True)
    return model.to(device).eval()


def load_lpips(weights_dir: Path, device: torch.device) -> torch.nn.Module:
    """LPIPS with the AlexNet trunk from the weights folder (its small linear heads ship with lpips)."""
    import lpips

    available(weights_dir, (ALEXNET_FILE,), "required")
    with _hub_dir(weights_dir):
        model = lpips.LPIPS(net="alex", verbose=False)
    return model.to(device).eval()


def _rgb(images: torch.Tensor) -> torch.Tensor:
    """Grey [-1, 1] images as the 3-channel input the ImageNet networks expect."""
    return images.float().repeat(1, 3, 1, 1) if images.shape[1] == 1 else images.float()


@torch.no_grad()
def inception_features(model: torch.nn.Module, images: torch.Tensor | Iterable[torch.Tensor], batch: int = 50,
                       device: torch.device | None = None) -> np.ndarray:
    """(N, 2048) pool3 features of [-1, 1] images (N, C, H, W), or of chunks of them read one after the
    other (the batches of the joined set, without joining it); resized to 299 x 299 as pytorch-fid does."""
    device = device or next(model.parameters()).device

    def features(x: torch.Tensor) -> np.ndarray:
        x = (_rgb(x).to(device) + 1) / 2  # pytorch-fid takes [0, 1]
        return model(x)[0].squeeze(-1).squeeze(-1).double().cpu().numpy()

    run = Rebatch(features, batch)
    for chunk in [images] if isinstance(images, torch.Tensor) else images:
        run.push(chunk)
    feats = run.close()
    return np.concatenate(feats) if feats else np.zeros((0, FEATURES))


@torch.no_grad()
def lpips_distances(model: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, batch: int = 32,
                    device: torch.device | None = None) -> np.ndarray:
    """Per-pair LPIPS of [-1, 1] images (lpips' expected range: no normalize=True needed)."""
    run = Rebatch(_lpips_of(model, device or next(model.parameters()).device), batch)
    run.push(a, b)
    out = run.close()
    return np.concatenate(out) if out else np.zeros(0)


def _lpips_of(model: torch.nn.Module, device: torch.device):
    """One batch of pairs -> their LPIPS (float64), for ``Rebatch``."""
    @torch.no_grad()
    def distances(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        return model(_rgb(x).to(device), _rgb(y).to(device)).flatten().double().cpu().numpy()
    return distances


def save_real_stats(images: torch.Tensor | Iterable[torch.Tensor], path: Path, settings: dict,
                    device: torch.device) -> bool:
    """Inception mean/covariance/features of real [-1, 1] images (N, 1, H, W), or of chunks of them
    (``inception_features``), to ``path`` (.npz); False if not computed."""
    folder = Path(settings["weights_dir"])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not available(folder, (INCEPTION_FILE,), settings["perceptual"], settings.get("check_hash", False)):
        np.savez(path, available=False, reason="not computed: weights unavailable")
        return False
    feats = inception_features(load_inception(folder, device), images, settings.get("batch_size", 32), device)
    mu, sigma = gaussian_stats(feats)
    np.savez(path, available=True, mu=mu, sigma=sigma, features=feats.astype(np.float32), n=len(feats))
    return True


def perceptual_scores(fake: torch.Tensor, real_stats: Path, settings: dict, device: torch.device,
                      paired_real: torch.Tensor | None = None,
                      sample_pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
                      fake_features: np.ndarray | None = None, partner: np.ndarray | None = None) -> dict[str, float]:
    """FID, KID (mean, std), LPIPS to the paired real image (``paired_real[i]`` is the real image of
    ``fake[i]``'s label map), and diversity: the mean LPIPS over ``sample_pairs`` (two samples of the
    same label map, every pair). ``fake_features``: ``fake``'s Inception features when the caller
    has them already (``generated_features``). ``partner[i]``: the row of the real statistics that is the
    real image of ``fake[i]``'s label map (paired validation), so KID takes them as pairs (``kid.py``).

    NaN for whatever cannot be computed (weights missing, no paired reference,
    a single sample), so callers write "NA" rather than a made-up number.
    """
    out = {k: float("nan") for k in ("fid", "kid", "kid_std", "lpips", "lpips_diversity")}
    folder = Path(settings["weights_dir"])
    with np.load(real_stats) as f:
        stats = {k: f[k] for k in f.files}
    if bool(stats["available"]) and available(folder, (INCEPTION_FILE,), settings["perceptual"]):
        feats = fake_features if fake_features is not None else inception_features(
            load_inception(folder, device), fake, settings.get("batch_size", 32), device)
        if len(feats) != len(fake):
            raise ValueError(f"{len(feats)} Inception feature vectors for {len(fake)} generated images")
        out.update(feature_scores(feats, stats, settings, _checked_partner(partner, len(feats), stats)))
    needs_lpips = paired_real is not None or sample_pairs is not None
    if needs_lpips and available(folder, (ALEXNET_FILE,), settings["perceptual"]):
        model = load_lpips(folder, device)
        if paired_real is not None:
            if len(paired_real) != len(fake):
                raise ValueError(f"LPIPS needs one real image per generated image, got {len(paired_real)} "
                                 f"real for {len(fake)} generated")
            out["lpips"] = float(lpips_distances(model, fake, paired_real, device=device).mean())
        if sample_pairs is not None:
            out["lpips_diversity"] = float(lpips_distances(model, *sample_pairs, device=device).mean())
    return out


def _checked_partner(partner: np.ndarray | None, n: int, stats: dict) -> np.ndarray | None:
    """``partner`` when it gives ``n`` generated rows a row of the real statistics, else None: independent."""
    if partner is None:
        return None
    if len(partner) != n or (n and int(np.max(partner)) >= int(stats["n"])):
        # A statistics file of other slices: scored as independent sets rather than mis-paired.
        log.warning("the real statistics hold %d images, not those of the %d generated ones: KID takes them as "
                    "independent sets", int(stats["n"]), n)
        return None
    return np.asarray(partner)


def feature_scores(feats: np.ndarray, stats: dict, settings: dict, partner: np.ndarray | None = None,
                   draws: np.ndarray | None = None) -> dict[str, float]:
    """FID and KID (mean, std) of generated Inception features against real statistics (``save_real_stats``'
    arrays), and whether KID's subsets held the whole smaller set every time (``kid_whole_set``).
    ``partner``: KID's pairing of the generated rows with the real ones (``kernel_inception_distance``);
    ``draws``: which sample of its label map each row is (``fid.sample_draws``; None: one each), FID's
    sets (``fid_over_draws``' keys)."""
    out = fid_over_draws(feats, draws, stats["mu"], stats["sigma"])
    subset = settings.get("kid_subset_size", 1000)
    out["kid"], out["kid_std"] = kernel_inception_distance(
        feats, stats["features"].astype(np.float64), settings.get("kid_subsets", 100), subset, partner=partner)
    # Subsets as large as the smaller set draw it whole every time: their spread says little.
    out["kid_whole_set"] = float(subset >= min(len(feats), len(stats["features"])))
    return out


class PerceptualStream:
    """``perceptual_scores`` of a set read a case at a time: each generated image pushed with its paired
    real image (or None: unpaired), and the pairs of samples of one label map. Only what the scores need
    is kept: Inception features (2048 numbers a slice) and one LPIPS value per pair, computed in the
    batches one call over the joined set makes. ``fake_features``: the caller's features of the generated
    images, in push order (``generated_features``)."""

    def __init__(self, real_stats: Path, settings: dict, device: torch.device,
                 fake_features: np.ndarray | None = None) -> None:
        self.settings, self.device, self.fake_features = settings, device, fake_features
        self.folder = Path(settings["weights_dir"])
        with np.load(real_stats) as f:
            self.stats = {k: f[k] for k in f.files}
        self.inception = None  # Rebatch of the features, or None: not computed here
        self.scored = bool(self.stats["available"]) and available(self.folder, (INCEPTION_FILE,),
                                                                   settings["perceptual"])
        if self.scored and fake_features is None:
            model = load_inception(self.folder, device)
            self.inception = Rebatch(lambda x: inception_features(model, x, len(x), device),
                                     settings.get("batch_size", 32))
        self.lpips: dict[str, Rebatch] = {}
        self.counts = {"fake": 0, "lpips": 0, "lpips_diversity": 0}
        # Real test slices behind the statistics (None: not computed, no weights): FID and KID need two.
        self.real = int(self.stats["n"]) if self.scored else None
        self._lpips_model: torch.nn.Module | None | bool = False  # False: not looked for yet

    def push(self, fake: torch.Tensor, paired_real: torch.Tensor | None) -> None:
        """Generated images (n, 1, H, W) and the real images of their label maps (paired) or None."""
        self.counts["fake"] += len(fake)
        if self.inception is not None:
            self.inception.push(fake)
        if paired_real is not None:
            self._push_lpips("lpips", fake, paired_real)

    def push_pair(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Two samples (n, 1, H, W) of the same label maps: LPIPS diversity."""
        self._push_lpips("lpips_diversity", a, b)

    def _push_lpips(self, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
        self.counts[name] += len(a)
        if self._lpips_model is False:  # looked for at the first pair, as perceptual_scores does when it has pairs
            ok = available(self.folder, (ALEXNET_FILE,), self.settings["perceptual"])
            self._lpips_model = load_lpips(self.folder, self.device) if ok else None
        if self._lpips_model is not None:
            self.lpips.setdefault(name, Rebatch(_lpips_of(self._lpips_model, self.device), 32)).push(a, b)

    def scores(self, partner: np.ndarray | None = None, draws: np.ndarray | None = None) -> dict[str, float]:
        """``perceptual_scores``' dict; ``counts`` holds how many images and pairs each is over. ``partner``:
        for each pushed image, the row of the real statistics whose label map it was generated from
        (``kid.partners``; None: independent sets), for KID; ``draws``: its sample number, for FID
        (``feature_scores``)."""
        out = {k: float("nan") for k in ("fid", "kid", "kid_std", "lpips", "lpips_diversity")}
        if self.scored:
            feats = self.fake_features
            if feats is None:
                parts = self.inception.close()
                feats = np.concatenate(parts) if parts else np.zeros((0, FEATURES))
            if len(feats) != self.counts["fake"]:
                raise ValueError(f"{len(feats)} Inception feature vectors for {self.counts['fake']} generated images")
            out.update(feature_scores(feats, self.stats, self.settings, partner, draws))
        for name, run in self.lpips.items():
            parts = run.close()  # none when every pushed chunk was empty: NaN, as without the weights
            out[name] = float(np.concatenate(parts).mean()) if parts else float("nan")
        return out


def generated_features(images: torch.Tensor | Iterable[torch.Tensor], real_stats: Path, settings: dict,
                       device: torch.device) -> np.ndarray | None:
    """Inception features of generated [-1, 1] images (N, 1, H, W) or chunks of them (``inception_features``),
    or None when the weights or the real statistics they would be compared with are unavailable."""
    with np.load(real_stats) as f:
        if not bool(f["available"]):
            return None
    folder = Path(settings["weights_dir"])
    if not available(folder, (INCEPTION_FILE,), settings["perceptual"]):
        return None
    return inception_features(load_inception(folder, device), images, settings.get("batch_size", 32), device)


def fetch_weights(weights_dir: Path, mode: str, check_hash: bool = True,
                  urls: dict[str, str] | None = None) -> dict[str, str]:
    """Download each missing weight file once; returns a status per file.

    In ``auto`` mode a failed download is recorded (the metrics will say "not
    computed"); in ``required`` mode it stops with the file to place by hand.
    """
    from medsynth.data.download import DownloadError, fetch

    status = {}
    for name, url in (urls or WEIGHT_URLS).items():
        path = weight_path(weights_dir, name)
        try:
            if mode != "off" and not path.is_file():
                fetch(url, path, retries=1, backoff=1.0, timeout=30, progress=False)
            if path.is_file() and check_hash:
                verify(path)
            status[name] = "present" if path.is_file() else "not fetched (metrics.perceptual is off)"
        except (DownloadError, OSError, WeightsUnavailable) as exc:
            status[name] = f"unavailable: {exc}"
            log.warning("%s: %s", name, exc)
    if mode == "required":
        available(weights_dir, tuple((urls or WEIGHT_URLS)), "required", check_hash=check_hash)
    return status
