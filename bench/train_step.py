"""Median seconds per training iteration (G, D, Du steps; R1 and EMA amortised) for a preset.

    python bench/train_step.py --preset oasis-256 --size 64 --batch 2 [--mode unpaired] [--bf16]

``--straightforward`` also times a plain implementation of the same paired
step for comparison: EMA through one state_dict() call per key, the generator
run again for the D step, and 3-channel (RGB) output for 1-channel data.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medsynth.models import build_discriminator, build_generator, get_preset
from medsynth.models.losses import labelmix_loss, labelmix_mask, seg_ce_fake, seg_ce_real
from medsynth.data.slice_set import one_hot
from medsynth.models.devices import resolve_device
from medsynth.train.step import LossWeights, build_nets, paired_step, unpaired_step


def timed(fn, iters: int, warmup: int, device: torch.device) -> list[float]:
    times = []
    for i in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def straightforward(spec, classes, labels, device):
    """The comparison point: what a direct port of the research code does per iteration."""
    G = build_generator(spec, classes, image_channels=3).to(device)
    D = build_discriminator(spec, classes, image_channels=3).to(device)
    G_ema = build_generator(spec, classes, image_channels=3).to(device)
    opt_g = torch.optim.Adam(G.parameters(), 1e-4, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 4e-4, betas=(0.0, 0.999))
    real = torch.rand(labels.shape[0], 3, *labels.shape[1:], device=device) * 2 - 1
    oh = one_hot(labels, classes)
    rng = torch.Generator().manual_seed(0)

    def step(_):
        fake = G(oh)
        loss_g = seg_ce_real(D(fake), oh)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        with torch.no_grad():
            fake = G(oh)  # the generator again for the D step
        lf, lr_ = D(fake), D(real)
        mask = labelmix_mask(labels, classes, rng)
        lm = labelmix_loss(D(mask * real + (1 - mask) * fake), mask, lr_, lf)
        opt_d.zero_grad()
        (seg_ce_fake(lf) + seg_ce_real(lr_, oh) + 10 * lm).backward()
        opt_d.step()
        with torch.no_grad():  # EMA one key at a time through state_dict()
            for key in G_ema.state_dict():
                G_ema.state_dict()[key].data.copy_(
                    G_ema.state_dict()[key].data * 0.999 + G.state_dict()[key].data * 0.001)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--mode", choices=("paired", "unpaired"), default="paired")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--straightforward", action="store_true", help="also time the plain implementation")
    args = ap.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    spec = get_preset(args.preset)
    nets = build_nets(spec, args.classes, args.mode, 1e-4, 4e-4, (0.0, 0.999), 0.999, device)
    if device.type == "cuda":
        for net in (nets.G, nets.D, nets.Du, nets.ema.model):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    labels = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)
    body = (labels > 0).float()[:, None]
    real = (torch.rand(args.batch, 1, args.size, args.size, device=device) * 2 - 1)
    w = LossWeights()
    rng = torch.Generator().manual_seed(0)
    if args.mode == "paired":
        def fn(i):
            paired_step(nets, real, labels, body, args.classes, w, rng, args.bf16)
    else:
        def fn(i):
            unpaired_step(nets, real, labels, body, args.classes, w, i + 1, args.bf16)
    times = timed(fn, args.iters, args.warmup, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    n_g = sum(p.numel() for p in nets.G.parameters()) / 1e6
    n_d = sum(p.numel() for p in nets.D.parameters()) / 1e6
    print(f"medsynth {args.mode}: device={device} ({name}), threads={torch.get_num_threads()}, preset={args.preset} "
          f"(G {n_g:.1f} M, D {n_d:.1f} M), size={args.size}, batch={args.batch}, bf16={args.bf16}: "
          f"median {statistics.median(times):.4f} s/iter over {len(times)} (min {min(times):.4f}, max {max(times):.4f})")
    if args.straightforward:
        times = timed(straightforward(spec, args.classes, labels, device), args.iters, args.warmup, device)
        print(f"straightforward paired: median {statistics.median(times):.4f} s/iter over {len(times)} "
              f"(min {min(times):.4f}, max {max(times):.4f})")


if __name__ == "__main__":
    main()
