"""Shape consistency: nothing bright outside the label map's body.

The generator sees the body outline (every label table has a body class, see
``medsynth.data.labels``), so drawing tissue inside it is the adversarial
losses' job. What is left for this loss is the outside: there the image must be
background, -1 after preprocessing. The penalty is the mean brightness above
background outside the body, linear in the intensity, so a bright pixel where
no body should be gets a gradient however bright it is (a sigmoid would
saturate and go quiet). Nothing inside the body is penalised: lung air and
bowel gas are as dark as the air outside, and a real image must cost nothing.
"""

from __future__ import annotations

import torch


def mask_loss(image: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
    """Mean of ``(image + 1) / 2`` over the pixels outside ``body``; 0 for a real image.

    ``image`` (B, 1, H, W) in [-1, 1], ``body`` (B, 1, H, W) in {0, 1}.
    """
    image = image.float()
    outside = 1 - body
    return ((image + 1) / 2 * outside).sum() / outside.sum().clamp(min=1)
