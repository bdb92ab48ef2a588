"""Non-saturating GAN losses and the R1 penalty for the unconditional (unpaired-mode) discriminator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def nonsat_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss: -log sigmoid(D(real)) - log(1 - sigmoid(D(fake))), batch means.

    softplus is the numerically stable form of both terms.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def nonsat_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss -log sigmoid(D(fake)).

    The non-saturating form keeps gradients large early on, when D rejects fakes confidently
    and log(1 - sigmoid(D(fake))) would be flat.
    """
    return F.softplus(-fake_logits).mean()


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """R1: batch mean of ||grad_x D(x)||^2 on real images x (Mescheder et al. 2018).

    Why: penalising D's slope on the real data keeps D from growing sharp around the real
    manifold, which is what makes an unnormalised D (no spectral norm) train stably.

    The graph is kept (``create_graph=True``) so the returned value can be backpropagated
    into D's parameters. ``real`` is detached and made a fresh leaf here, so pass it as is.

    The caller applies the weight: the full term is ``gamma / 2 * r1_penalty(D, real)``. With
    lazy regularisation (StyleGAN2) it is only computed every k-th D step and then multiplied
    by k, so its average strength is unchanged while the costly double backward runs 1/k as often.
    """
    real = real.detach().requires_grad_(True)
    logits = discriminator(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(start_dim=1).sum(dim=1).mean()
