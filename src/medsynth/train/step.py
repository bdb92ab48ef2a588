"""One training iteration of each mode, on a bundle of networks and optimisers.

Paired (OASIS): images and labels from one dataset. D segments real images
into their classes and generated ones into the extra "fake" class (LabelMix
regularises it); G must make D segment its images into the input labels.

Unpaired (USIS-style): labels from dataset A, images from dataset B, never
matched. D is trained on generated images only, to segment them into their
input labels (segmentation consistency), and an unconditional wavelet
discriminator Du judges realism against B's images (non-saturating loss, lazy
R1). In both modes a shape-consistency loss keeps everything outside the
label map's body dark (background).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from medsynth.models import build_discriminator, build_generator
from medsynth.models.adversarial import nonsat_d_loss, nonsat_g_loss, r1_penalty
from medsynth.models.ema import EMA
from medsynth.models.losses import (class_stats_l1, class_stats_to_targets_l1, diversity_reward, labelmix_loss,
                                    labelmix_mask, seg_ce_fake, seg_ce_real)
from medsynth.models.registry import ModelSpec, build_wavelet_discriminator
from medsynth.models.shape import mask_loss
from medsynth.data.slice_set import generator_input, one_hot


@dataclass(frozen=True)
class LossWeights:
    labelmix: float = 10.0  # OASIS
    mask: float = 1.0  # shape consistency
    class_stats: float = 0.0  # each class's mean and std as in the real image (paired) or image dataset (unpaired)
    diversity: float = 0.0  # mode seeking: the batch's two halves share label maps (not OASIS)
    diversity_margin: float = 0.1  # ... rewarded up to this mean absolute difference inside the body
    seg: float = 1.0  # unpaired: segmentation consistency in G's loss
    adv: float = 1.0  # unpaired: wavelet discriminator in G's loss
    r1_gamma: float = 1.0  # unpaired: R1 weight (applied as gamma / 2)
    r1_every: int = 16  # unpaired: lazy R1 every k steps, scaled by k


@dataclass
class Nets:
    G: nn.Module
    D: nn.Module
    ema: EMA
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    Du: nn.Module | None = None
    opt_du: torch.optim.Optimizer | None = None
    # What forward passes call: the modules themselves, their DDP wrappers or compiled versions.
    g_call: nn.Module | None = None
    d_call: nn.Module | None = None
    du_call: nn.Module | None = None

    def __post_init__(self) -> None:
        self.g_call = self.g_call or self.G
        self.d_call = self.d_call or self.D
        self.du_call = self.du_call or self.Du

    def state(self) -> dict:
        out = {"G": self.G.state_dict(), "D": self.D.state_dict(), "ema": self.ema.state_dict(),
               "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}
        if self.Du is not None:
            out.update(Du=self.Du.state_dict(), opt_du=self.opt_du.state_dict())
        return out

    def load(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.Du is not None:
            self.Du.load_state_dict(state["Du"])
            self.opt_du.load_state_dict(state["opt_du"])


def build_nets(spec: ModelSpec, num_classes: int, mode: str, lr_g: float, lr_d: float, betas: tuple[float, float],
               ema_decay: float, device: torch.device) -> Nets:
    G = build_generator(spec, num_classes).to(device)
    D = build_discriminator(spec, num_classes).to(device)
    nets = Nets(G, D, EMA(G, ema_decay),
                torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas),
                torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas))
    if mode == "unpaired":
        nets.Du = build_wavelet_discriminator(spec).to(device)
        nets.du_call = nets.Du
        nets.opt_du = torch.optim.Adam(nets.Du.parameters(), lr=lr_d, betas=betas)
    return nets


def allreduce_grads(module: nn.Module) -> None:
    """Average gradients over processes (multi-GPU); a no-op in a single process.

    The discriminators are synchronised by hand rather than wrapped in
    DistributedDataParallel: their steps run several forwards per backward,
    the R1 penalty needs a double backward, and G's step freezes them, all of
    which the DDP wrapper's bucketing does not support.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _autocast(device: torch.device, bf16: bool):
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def paired_step(nets: Nets, real: torch.Tensor, labels: torch.Tensor, body: torch.Tensor, num_classes: int,
                w: LossWeights, mix_rng: torch.Generator, bf16: bool = False,
                context: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One OASIS iteration; returns detached losses. G runs once: its output is reused, detached, for D.

    ``context`` (B, 2k, H, W): the neighbouring slices' label maps, for G only; D segments the slice itself.
    """
    onehot = one_hot(labels, num_classes)
    with _autocast(real.device, bf16):
        nets.D.requires_grad_(False)
        fake = nets.g_call(generator_input(labels, context, num_classes))
        loss_adv = seg_ce_real(nets.D(fake).float(), onehot)
        loss_mask = mask_loss(fake, body)
        loss_cs = class_stats_l1(fake, real, onehot)
        loss_div = diversity_reward(fake, body, w.diversity_margin) if w.diversity > 0 else fake.new_zeros(())
        loss_g = loss_adv + w.mask * loss_mask + w.class_stats * loss_cs + w.diversity * loss_div
    nets.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    nets.opt_g.step()
    nets.D.requires_grad_(True)
    nets.ema.update(nets.G)

    fake = fake.detach()
    mask = labelmix_mask(labels, num_classes, mix_rng)
    mixed = mask * real + (1 - mask) * fake
    with _autocast(real.device, bf16):
        # One forward of D over fake, real and LabelMix images together.
        logits_fake, logits_real, logits_mixed = nets.d_call(torch.cat([fake, real, mixed])).float().chunk(3)
        loss_fake = seg_ce_fake(logits_fake)
        loss_real = seg_ce_real(logits_real, onehot)
        loss_lm = w.labelmix * labelmix_loss(logits_mixed, mask, logits_real, logits_fake)
    nets.opt_d.zero_grad(set_to_none=True)
    (loss_fake + loss_real + loss_lm).backward()
    allreduce_grads(nets.D)
    nets.opt_d.step()
    return {"loss_g": loss_g.detach(), "loss_g_adv": loss_adv.detach(), "loss_g_mask": loss_mask.detach(),
            "loss_g_class_stats": loss_cs.detach(), "loss_g_diversity": loss_div.detach(),
            "loss_d_real": loss_real.detach(), "loss_d_fake": loss_fake.detach(), "loss_d_labelmix": loss_lm.detach()}


def unpaired_step(nets: Nets, real_b: torch.Tensor, labels: torch.Tensor, body: torch.Tensor, num_classes: int,
                  w: LossWeights, step: int, bf16: bool = False,
                  class_targets: torch.Tensor | None = None,
                  context: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One unpaired iteration: labels/body from A, ``real_b`` from B (not matched to the labels).

    ``class_targets`` (2, C): B's mean and within-slice std per class, where B is labelled
    with A's label table; with ``w.class_stats`` > 0 each generated class is pulled to them.
    ``context``: as in ``paired_step``.
    """
    onehot = one_hot(labels, num_classes)
    with _autocast(real_b.device, bf16):
        nets.D.requires_grad_(False)
        nets.Du.requires_grad_(False)
        fake = nets.g_call(generator_input(labels, context, num_classes))
        loss_seg = seg_ce_real(nets.D(fake).float(), onehot)
        loss_adv = nonsat_g_loss(nets.Du(fake).float())
        loss_mask = mask_loss(fake, body)
        loss_cs = (class_stats_to_targets_l1(fake, onehot, class_targets) if class_targets is not None
                   else fake.new_zeros(()))
        loss_div = diversity_reward(fake, body, w.diversity_margin) if w.diversity > 0 else fake.new_zeros(())
        loss_g = (w.adv * loss_adv + w.seg * loss_seg + w.mask * loss_mask + w.class_stats * loss_cs
                  + w.diversity * loss_div)
    nets.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    nets.opt_g.step()
    nets.D.requires_grad_(True)
    nets.Du.requires_grad_(True)
    nets.ema.update(nets.G)

    fake = fake.detach()
    with _autocast(real_b.device, bf16):
        # D learns to segment generated images into their labels (no real images of A exist here).
        loss_d_seg = seg_ce_real(nets.d_call(fake).float(), onehot)
    nets.opt_d.zero_grad(set_to_none=True)
    loss_d_seg.backward()
    allreduce_grads(nets.D)
    nets.opt_d.step()

    with _autocast(real_b.device, bf16):
        logits_real, logits_fake = nets.du_call(torch.cat([real_b, fake])).float().chunk(2)
        loss_du = nonsat_d_loss(logits_real, logits_fake)
    nets.opt_du.zero_grad(set_to_none=True)
    loss_du.backward()
    loss_r1 = torch.zeros((), device=real_b.device)
    if w.r1_every > 0 and step % w.r1_every == 0:
        # Lazy R1 (StyleGAN2): every k-th step, scaled by k, so its average weight is unchanged.
        # In float32: a gradient penalty is too fine for bf16.
        loss_r1 = (w.r1_gamma / 2) * w.r1_every * r1_penalty(nets.Du, real_b.float())
        loss_r1.backward()
    allreduce_grads(nets.Du)
    nets.opt_du.step()
    return {"loss_g": loss_g.detach(), "loss_g_adv": loss_adv.detach(), "loss_g_seg": loss_seg.detach(),
            "loss_g_mask": loss_mask.detach(), "loss_g_class_stats": loss_cs.detach(),
            "loss_g_diversity": loss_div.detach(), "loss_d_seg": loss_d_seg.detach(), "loss_du": loss_du.detach(),
            "loss_du_r1": loss_r1.detach()}


LOSS_NAMES = {
    "paired": ["loss_g", "loss_g_adv", "loss_g_mask", "loss_g_class_stats", "loss_g_diversity", "loss_d_real",
               "loss_d_fake", "loss_d_labelmix"],
    "unpaired": ["loss_g", "loss_g_adv", "loss_g_seg", "loss_g_mask", "loss_g_class_stats", "loss_g_diversity",
                 "loss_d_seg", "loss_du", "loss_du_r1"],
}
