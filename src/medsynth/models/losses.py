"""OASIS losses: class-balanced (N+1)-class cross-entropy and LabelMix.

Discriminator channel 0 means "fake"; semantic class c is channel c + 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_balance_weights(onehot: torch.Tensor) -> torch.Tensor:
    """Per-pixel weights inversely proportional to class frequency in the batch (OASIS eq. 3).

    Rare classes (a small organ) weigh as much in total as frequent ones (background).
    """
    counts = onehot.sum(dim=(0, 2, 3))
    present = (counts > 0).sum().clamp(min=1)
    coeff = torch.where(counts > 0, onehot[:, 0].numel() / (counts * present), torch.zeros_like(counts))
    return (coeff[None, :, None, None] * onehot).sum(dim=1)


def seg_ce_real(logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Loss for 'this is real and shows these classes' (D on real, G's adversarial loss)."""
    target = onehot.argmax(dim=1) + 1
    ce = F.cross_entropy(logits, target, reduction="none")
    return (ce * class_balance_weights(onehot.detach())).mean()


def seg_ce_fake(logits: torch.Tensor) -> torch.Tensor:
    """Loss for 'every pixel is fake' (D on generated images)."""
    target = torch.zeros(logits.shape[0], *logits.shape[2:], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def labelmix_mask(labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary (B,1,H,W) mask choosing, per class of each image, real (1) or fake (0).

    One coin per (image, class) is drawn on the CPU from ``generator`` (a few
    bytes to the device); the mask is then a lookup on the labels' own device,
    with no per-image loop and no copy of the labels to the host.
    """
    b = labels.shape[0]
    coins = torch.randint(0, 2, (b, num_classes), generator=generator).to(labels.device, torch.float32)
    return coins.gather(1, labels.long().reshape(b, -1)).reshape(b, 1, *labels.shape[1:])


def labelmix_loss(
    logits_mixed: torch.Tensor,
    mask: torch.Tensor,
    logits_real: torch.Tensor,
    logits_fake: torch.Tensor,
) -> torch.Tensor:
    """LabelMix consistency: D's output on the mix ``mask * real + (1 - mask) * fake`` must
    equal the same mix of its outputs on real and fake."""
    target = mask * logits_real + (1 - mask) * logits_fake
    return F.mse_loss(logits_mixed, target)


MIN_TEXTURE_PIXELS = 16  # a class's std within a slice counts only where it covers at least this many pixels


def class_stats(x: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, std, pixel count) of ``x`` inside each class of each image, each (B, C)."""
    x = x.float()
    counts = onehot.sum(dim=(2, 3))
    mean = (onehot * x).sum(dim=(2, 3)) / counts.clamp(min=1)
    sq = (onehot * x * x).sum(dim=(2, 3)) / counts.clamp(min=1)
    return mean, (sq - mean * mean).clamp(min=1e-8).sqrt(), counts


def _masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.where(keep, values, torch.zeros_like(values)).sum() / keep.sum().clamp(min=1)


def class_stats_l1(fake: torch.Tensor, real: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Paired mode: |mean_fake - mean_real| + |std_fake - std_real| inside each class of each image.

    Not OASIS: a short run's discriminator learns to tell classes apart by shape
    before it learns their intensity and texture, so organs keep a wrong HU and a
    blotchy texture for thousands of steps. Matching only each region's mean and
    spread leaves the texture's pattern, and so the noise's variety, to the
    adversarial loss. Means average over (image, class present), stds over
    (image, class covering >= MIN_TEXTURE_PIXELS). 0 for fake = real.
    """
    mean_f, std_f, counts = class_stats(fake, onehot)
    mean_r, std_r, _ = class_stats(real, onehot)
    return (_masked_mean((mean_f - mean_r).abs(), counts > 0)
            + _masked_mean((std_f - std_r).abs(), counts >= MIN_TEXTURE_PIXELS))


def class_stats_to_targets_l1(fake: torch.Tensor, onehot: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Unpaired mode: each class's batch-pooled mean and per-image std against the image dataset's.

    ``targets`` (2, C) are the image dataset's own (``class_targets`` of its
    labelled training slices: row 0 the mean, row 1 the typical within-slice std;
    NaN where it never shows a class, which is then skipped). The mean is pooled
    over the batch rather than taken per image: the label maps are not the
    images' own, so only an organ's dataset-level intensity is known, not each
    slice's. 0 when the batch's statistics equal the targets.
    """
    mean_f, std_f, per_image = class_stats(fake, onehot)
    counts = per_image.sum(dim=0)
    pooled = (mean_f * per_image).sum(dim=0) / counts.clamp(min=1)  # the batch's class sums over its pixel counts
    mean_t, std_t = targets[0], targets[1]
    return (_masked_mean((pooled - torch.nan_to_num(mean_t)).abs(), (counts > 0) & torch.isfinite(mean_t))
            + _masked_mean((std_f - torch.nan_to_num(std_t)[None]).abs(),
                           (per_image >= MIN_TEXTURE_PIXELS) & torch.isfinite(std_t)[None]))


def class_targets(images: torch.Tensor, labels: torch.Tensor, num_classes: int, chunk: int = 256) -> torch.Tensor:
    """(2, C) of a whole slice set: each class's mean intensity, and its mean within-slice std.

    The std averages over the slices where the class covers >= MIN_TEXTURE_PIXELS
    (an edge sliver's spread says nothing about texture). NaN for a class the set
    never shows. In chunks, so a large set is never converted to float at once.
    """
    c = num_classes
    n_px = torch.zeros(c, dtype=torch.float64)
    s_px = torch.zeros(c, dtype=torch.float64)
    s_std = torch.zeros(c, dtype=torch.float64)
    n_std = torch.zeros(c, dtype=torch.float64)
    for at in range(0, images.shape[0], chunk):
        img = images[at : at + chunk].reshape(-1).double()
        lab = labels[at : at + chunk].long()
        # One bin per (slice, class): slice i's class k is bin i * C + k.
        key = (lab + c * torch.arange(lab.shape[0])[:, None, None]).reshape(-1)
        size = lab.shape[0] * c
        cnt = torch.bincount(key, minlength=size).double().view(-1, c)
        s1 = torch.bincount(key, weights=img, minlength=size).view(-1, c)
        s2 = torch.bincount(key, weights=img * img, minlength=size).view(-1, c)
        var = (s2 / cnt.clamp(min=1) - (s1 / cnt.clamp(min=1)) ** 2).clamp(min=0)
        ok = cnt >= MIN_TEXTURE_PIXELS
        n_px += cnt.sum(0)
        s_px += s1.sum(0)
        s_std += torch.where(ok, var.sqrt(), torch.zeros_like(var)).sum(0)
        n_std += ok.sum(0)
    nan = torch.full((c,), float("nan"), dtype=torch.float64)
    return torch.stack([torch.where(n_px > 0, s_px / n_px.clamp(min=1), nan),
                        torch.where(n_std > 0, s_std / n_std.clamp(min=1), nan)]).float()


def diversity_reward(fake: torch.Tensor, body: torch.Tensor, margin: float) -> torch.Tensor:
    """Mode seeking on a batch whose second half repeats the first half's label maps with other noise.

    Minus the mean absolute difference of the two halves inside the body, clipped at
    ``margin`` (DSGAN-style): a generator that ignores its noise gets 0, one that makes
    the samples differ by ``margin`` or more gets -margin, and no more for adding noise.
    """
    half = fake.shape[0] // 2
    inside = body[:half]
    diff = ((fake[:half] - fake[half : 2 * half]).abs().float() * inside).sum() / inside.sum().clamp(min=1)
    return -diff.clamp(max=margin)
