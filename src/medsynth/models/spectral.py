"""Spectral norm of a model that never trains: refresh its power-iteration vectors before use.

``torch.nn.utils.spectral_norm`` divides a weight by sigma = u^T W v, where u and
v are buffers that one power iteration per *training* forward keeps close to
W's top singular vectors. In eval mode the stored u, v are used as they are.
The EMA generator runs in eval mode only, and its u, v are averages of the
trained generator's (``EMA.update`` lerps every floating buffer): an average
of unit vectors is not a unit vector, nor W_ema's singular vector, so the
sigma it uses can be far from W_ema's largest singular value. OASIS refreshes
the EMA model before each evaluation and save; this is that refresh, by power
iteration to convergence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm


def _hooks(model: nn.Module) -> list[tuple[nn.Module, SpectralNorm]]:
    return [(m, h) for m in model.modules() for h in m._forward_pre_hooks.values() if isinstance(h, SpectralNorm)]


@torch.no_grad()
def _power_iterate(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor, eps: float, max_iterations: int,
                   tol: float) -> float:
    """Update u, v in place towards W's top singular pair; returns the final sigma = u^T W v."""
    w = w.float()
    uf, vf = F.normalize(u.float(), dim=0, eps=eps), v.float()
    sigma = 0.0
    for _ in range(max_iterations):
        vf = F.normalize(torch.mv(w.t(), uf), dim=0, eps=eps)
        wv = torch.mv(w, vf)
        uf = F.normalize(wv, dim=0, eps=eps)
        # ||W v|| never decreases under power iteration, so a tiny step means it has levelled off.
        new = float(wv.norm())
        if new - sigma <= tol * new:
            sigma = new
            break
        sigma = new
    u.copy_(uf)
    v.copy_(vf)
    return float(torch.dot(uf, torch.mv(w, vf)))


@torch.no_grad()
def refresh_spectral_norm(model: nn.Module, max_iterations: int = 1000, tol: float = 1e-7) -> float:
    """Converge every spectrally normalised layer's u, v to its weight's top singular pair.

    Starts from the stored vectors (so the signs, and a nearly converged pair, are kept) and
    recomputes the normalised weight. The averaged weights themselves are left alone. Returns the
    largest relative change of a sigma as used, |sigma_old - sigma_new| / sigma_new: how far off
    the model was.
    """
    worst = 0.0
    for module, hook in _hooks(model):
        w = hook.reshape_weight_to_matrix(getattr(module, hook.name + "_orig"))
        u, v = getattr(module, hook.name + "_u"), getattr(module, hook.name + "_v")
        before = float(torch.dot(u.float(), torch.mv(w.float(), v.float())))
        after = _power_iterate(w, u, v, hook.eps, max_iterations, tol)
        worst = max(worst, abs(before - after) / max(after, hook.eps))
        # The weight attribute is otherwise stale until the next forward recomputes it.
        setattr(module, hook.name, hook.compute_weight(module, do_power_iteration=False))
    return worst
