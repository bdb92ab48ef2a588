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


def labelmix_mask(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binary (B,1,H,W) mask choosing, per class present in each image, real (1) or fake (0)."""
    masks = []
    for lab in labels:
        classes = torch.unique(lab)
        pick = torch.randint(0, 2, (len(classes),), generator=generator).to(lab.device)
        lut = torch.zeros(int(classes.max()) + 1, dtype=torch.float32, device=lab.device)
        lut[classes] = pick.float()
        masks.append(lut[lab.long()])
    return torch.stack(masks)[:, None]


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
