"""SSIM, PSNR and RMSE on batches of images, in torch (CPU or CUDA).

Every function takes the data range explicitly: our images live in [-1, 1],
so the range is 2, not the 1 or 255 a library would otherwise guess.
SSIM follows Wang et al. 2004 (Gaussian window sigma 1.5, K1 0.01, K2 0.03,
population covariance), the same as scikit-image with
``gaussian_weights=True, use_sample_covariance=False``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from medsynth.data.body_mask import fill_holes_inplane


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5, device=None, dtype=torch.float32) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float, body: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM per image for (B, 1, H, W) tensors; borders the window cannot cover are excluded.

    With ``body`` (B, 1, H, W) it is SSIM inside the body, independent of every
    pixel outside it: the Gaussian window is restricted to body pixels and
    renormalised (normalised convolution), so the local means, variances and
    covariance at a body pixel are weighted averages over body pixels only,
    and the map is averaged over the body. Whatever a generator paints outside
    the body (or the real image holds there) cannot change it.
    """
    x = x.double()
    y = y.double()
    g = _gaussian_window(device=x.device, dtype=x.dtype)
    k = g.numel()
    gx, gy = g.view(1, 1, 1, k), g.view(1, 1, k, 1)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    if body is None:
        def blur(t: torch.Tensor) -> torch.Tensor:
            return F.conv2d(F.conv2d(t, gx), gy)
    else:
        m = (body > 0.5).double()
        r = (k - 1) // 2
        weight = F.conv2d(F.conv2d(m, gx, padding=(0, r)), gy, padding=(r, 0))

        def blur(t: torch.Tensor) -> torch.Tensor:
            s_ = F.conv2d(F.conv2d(t * m, gx, padding=(0, r)), gy, padding=(r, 0))
            return s_ / weight.clamp(min=1e-12)

    mx, my = blur(x), blur(y)
    vx = (blur(x * x) - mx * mx).clamp(min=0)
    vy = (blur(y * y) - my * my).clamp(min=0)
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    if body is None:
        return s.mean(dim=(1, 2, 3)).float()
    return ((s * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3)).clamp(min=1)).float()


def _mse(x: torch.Tensor, y: torch.Tensor, body: torch.Tensor | None) -> torch.Tensor:
    err = (x.double() - y.double()) ** 2
    dims = tuple(range(1, x.dim()))
    if body is None:
        return err.mean(dim=dims)
    m = body.double()
    return (err * m).sum(dim=dims) / m.sum(dim=dims).clamp(min=1)


def rmse(x: torch.Tensor, y: torch.Tensor, body: torch.Tensor | None = None) -> torch.Tensor:
    return torch.sqrt(_mse(x, y, body)).float()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float, body: torch.Tensor | None = None) -> torch.Tensor:
    return (10 * torch.log10(data_range**2 / _mse(x, y, body).clamp(min=1e-20))).float()


def paired_metrics(fake: torch.Tensor, real: torch.Tensor, data_range: float = 2.0,
                   body: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-image SSIM, PSNR and RMSE of generated vs real images of the same label map.

    With ``body`` also ``*_body``: the same inside the body mask only, where the
    background (easy: -1 everywhere) cannot flatter the score.
    """
    out = {"ssim": ssim(fake, real, data_range), "psnr": psnr(fake, real, data_range), "rmse": rmse(fake, real)}
    if body is not None:
        out.update(ssim_body=ssim(fake, real, data_range, body), psnr_body=psnr(fake, real, data_range, body),
                   rmse_body=rmse(fake, real, body))
    return out


def body_outline(image: torch.Tensor, threshold: float = -0.95) -> torch.Tensor:
    """The body an image shows: its tissue (intensity > ``threshold``) with in-plane holes filled.

    Lung air and bowel gas are as dark as the air around the patient; they are
    holes in the tissue, so filling them gives the outline, as the
    preprocessing's body mask holds them (the same in-plane hole filling).
    (B, 1, H, W) -> float {0, 1}.
    """
    tissue = (image[:, 0] > threshold).cpu().numpy()  # (B, H, W): slices along the last axis for filling
    filled = fill_holes_inplane(np.moveaxis(tissue, 0, -1))
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(filled, -1, 0)))[:, None].float()


def body_dice(image: torch.Tensor, body: torch.Tensor, threshold: float = -0.95) -> torch.Tensor:
    """Per image Dice of the body the image shows (``body_outline``) against the label map's body mask.

    A perfect generator (fake = real) scores 1: a real image's tissue with its
    holes filled is its body mask.
    """
    hard = body_outline(image, threshold)
    body = (body.cpu() > 0.5).float()
    inter = (hard * body).sum(dim=(1, 2, 3))
    total = hard.sum(dim=(1, 2, 3)) + body.sum(dim=(1, 2, 3))
    dice = ((2 * inter + 1.0) / (total + 1.0)).float()
    # A NaN pixel is neither tissue nor air: NA, not a slice scored as if it were air there.
    dice[~torch.isfinite(image.cpu()).flatten(1).all(dim=1)] = float("nan")
    return dice


def intensity_w1(fake: torch.Tensor, fake_body: torch.Tensor, real: torch.Tensor, real_body: torch.Tensor,
                 bins: int = 256) -> float:
    """Wasserstein-1 distance between the intensity distributions inside the body, in [-1, 1] units.

    ``fake_body`` is the body of the label maps the images were generated from
    (what the generator was asked to fill), ``real_body`` the real images' body
    masks: the same kind of region on both sides, dark tissue (lung, gas, dark
    MR tissue) included, so a perfect generator scores 0 and one that paints
    dark tissue grey scores worse. Needs no pixel-aligned reference, so it
    works for unpaired data too. ``IntensityHistogram`` computes it for sets
    read a chunk at a time.
    """
    generated, reference = IntensityHistogram(bins), IntensityHistogram(bins)
    generated.add(fake, fake_body)
    reference.add(real, real_body)
    return generated.w1(reference)


class IntensityHistogram:
    """``intensity_w1``'s histogram of the intensities inside the body, summed as images are added: the
    counts are integers, so any split of a set into chunks gives the histogram of the whole set."""

    def __init__(self, bins: int = 256) -> None:
        self.bins = bins
        self.counts = torch.zeros(bins, dtype=torch.float64)  # exact integers far beyond float32's 2 ** 24
        self.nonfinite = 0  # NaN pixels inside the body: histc skips them, so W1 is NA, not their absence

    def add(self, images: torch.Tensor, body: torch.Tensor) -> None:
        values = images[body > 0.5].float().clamp(-1, 1).cpu()
        self.nonfinite += int((~torch.isfinite(values)).sum())
        if values.numel():
            self.counts += torch.histc(values, bins=self.bins, min=-1, max=1).double()

    def cdf(self) -> torch.Tensor:
        # float32 arithmetic, as one histc over the whole set gave: the same numbers for sets below 2 ** 24 pixels.
        hist = self.counts.float()
        if hist.sum() == 0:
            return torch.full((self.bins,), float("nan"))
        return torch.cumsum(hist, 0) / hist.sum()

    def w1(self, other: "IntensityHistogram") -> float:
        """W1 between this distribution and ``other``'s, in [-1, 1] units; NaN where either holds NaN pixels."""
        if self.nonfinite or other.nonfinite:
            return float("nan")
        width = torch.linspace(-1, 1, self.bins + 1)
        return float((self.cdf() - other.cdf()).abs().sum() * (width[1] - width[0]))


def sample_diversity(samples: torch.Tensor, body: torch.Tensor) -> tuple[float, float]:
    """(sum, pixel count) of the per-pixel variance across K samples of the same label maps, inside the body.

    ``samples`` (K, N, 1, H, W), ``body`` (N, 1, H, W). Sum and count, so several cases
    pool into one value; :func:`diversity` turns them into the pixel standard deviation.
    The variance is the unbiased one (divisor K - 1) and is pooled before the square
    root, so 2 and 4 samples estimate the same spread; with divisor K (or a mean of
    per-pixel stds) 2 samples read about 0.7x and 4 samples 0.87x of it. 0 when every
    sample is the same image, so a generator that ignores its noise scores 0.
    """
    if samples.shape[0] < 2:
        raise ValueError(f"diversity needs at least two samples per label map, got {samples.shape[0]}")
    if samples[0].numel() == 0:  # a case without slices: torch's var would warn of zero degrees of freedom
        return 0.0, 0.0
    var = samples.float().var(dim=0, unbiased=True)
    return float((var * body).sum()), float(body.sum())


def diversity(total: float, pixels: float) -> float:
    """Pixel-std diversity, [-1, 1] units, from :func:`sample_diversity`'s pooled sums; NaN without pixels."""
    return math.sqrt(total / pixels) if pixels > 0 else math.nan
