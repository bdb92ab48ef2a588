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


def class_mean_l1(fake: torch.Tensor, real: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Paired mode: mean over (image, class present) of |mean of fake - mean of real| inside the class.

    Not OASIS: a short run's discriminator learns to tell classes apart by shape
    before it learns their intensity, so organs keep a wrong HU for thousands of
    steps. Matching only each region's mean leaves its texture, and so the
    noise's variety, to the adversarial loss. 0 for fake = real.
    """
    fake, real = fake.float(), real.float()
    counts = onehot.sum(dim=(2, 3))  # (B, C)
    present = counts > 0
    mean_f = (onehot * fake).sum(dim=(2, 3)) / counts.clamp(min=1)
    mean_r = (onehot * real).sum(dim=(2, 3)) / counts.clamp(min=1)
    return ((mean_f - mean_r).abs() * present).sum() / present.sum().clamp(min=1)
