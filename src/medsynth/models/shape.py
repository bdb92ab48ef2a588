"""Shape consistency: the generated body must have the outline of the label map's body.

Differentiable end to end (the original research code cast to uint8 and used
numpy morphology, which passes no gradient): inside the label's body mask the
generated image must be tissue, a soft threshold ``sigmoid((x - t) / T)``;
outside it must be background, -1 after preprocessing. The outside term is
linear in the intensity, so a bright pixel where no body should be gets a
gradient however bright it is (a sigmoid there would saturate and go quiet).
"""

from __future__ import annotations

import torch

TEMPERATURE = 0.02


def soft_body_mask(image: torch.Tensor, threshold: float = -0.95, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Probability that a pixel is tissue rather than background (-1)."""
    return torch.sigmoid((image - threshold) / temperature)


def mask_loss(image: torch.Tensor, body: torch.Tensor, threshold: float = -0.95,
              temperature: float = TEMPERATURE) -> torch.Tensor:
    """Mean "not tissue" inside ``body`` plus mean brightness above background outside it; 0 when perfect.

    ``image`` (B, 1, H, W) in [-1, 1], ``body`` (B, 1, H, W) in {0, 1}.
    """
    image = image.float()
    inside = body.sum().clamp(min=1)
    outside = (1 - body).sum().clamp(min=1)
    missing = ((1 - soft_body_mask(image, threshold, temperature)) * body).sum() / inside
    spill = ((image + 1) / 2 * (1 - body)).sum() / outside
    return missing + spill
