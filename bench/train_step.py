"""Median seconds per training iteration (G, D, Du steps; R1 and EMA amortised) for a preset.

    python bench/train_step.py --preset oasis-256 --size 64 --batch 2 [--mode unpaired] [--bf16] [--compile]

The networks are made ready as training makes them (``train.devices.prepare_nets``:
channels_last on CUDA unless ``--no-channels-last``, torch.compile with ``--compile``).

``--straightforward`` also times a plain implementation of the same paired
step for comparison: EMA through one state_dict() call per key, the generator
run again for the D step, and 3-channel (RGB) output for 1-channel data.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from medsynth.models import build_discriminator, build_generator, get_preset
from medsynth.models.losses import labelmix_loss, labelmix_mask, seg_ce_fake, seg_ce_real
from medsynth.data.slice_set import one_hot
from medsynth.models.devices import resolve_device, uses_channels_last
from medsynth.train.devices import prepare_nets
from medsynth.train.step import LossWeights, Nets, build_nets, paired_step, unpaired_step


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


def build_step(preset: str, classes: int, mode: str, size: int, batch: int, bf16: bool, channels_last: bool,
               compile: bool, device: torch.device) -> tuple[Callable[[int], dict], Nets]:
    """One training iteration of random data as a function of the step number, and its networks.

    Random class ids per pixel: a convolution costs the same whatever the label map holds.
    """
    torch.manual_seed(0)
    spec = get_preset(preset)
    nets = build_nets(spec, classes, mode, 1e-4, 4e-4, (0.0, 0.999), 0.999, device)
    prepare_nets(nets, device, channels_last, compile, world_size=1)
    fmt = torch.channels_last if uses_channels_last(device, channels_last) else torch.contiguous_format
    labels = torch.randint(0, classes, (batch, size, size), device=device)
    body = (labels > 0).float()[:, None]
    real = (torch.rand(batch, 1, size, size, device=device) * 2 - 1).contiguous(memory_format=fmt)
    w = LossWeights()
    rng = torch.Generator().manual_seed(0)
    if mode == "paired":
        def fn(i: int) -> dict:
            return paired_step(nets, real, labels, body, classes, w, rng, bf16)
    else:
        def fn(i: int) -> dict:  # step i + 1: the lazy R1 falls on every 16th iteration, as in training
            return unpaired_step(nets, real, labels, body, classes, w, i + 1, bf16)
    return fn, nets


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
    ap.add_argument("--no-channels-last", action="store_true", help="keep the default memory format (CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile G and the discriminators")
    ap.add_argument("--straightforward", action="store_true", help="also time the plain implementation")
    args = ap.parse_args()

    device = resolve_device(args.device)
    fn, nets = build_step(args.preset, args.classes, args.mode, args.size, args.batch, args.bf16,
                          not args.no_channels_last, args.compile, device)
    times = timed(fn, args.iters, args.warmup, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    n_g = sum(p.numel() for p in nets.G.parameters()) / 1e6
    n_d = sum(p.numel() for p in nets.D.parameters()) / 1e6
    print(f"medsynth {args.mode}: device={device} ({name}), threads={torch.get_num_threads()}, preset={args.preset} "
          f"(G {n_g:.1f} M, D {n_d:.1f} M), size={args.size}, batch={args.batch}, bf16={args.bf16}: "
          f"median {statistics.median(times):.4f} s/iter over {len(times)} "
          f"(min {min(times):.4f}, max {max(times):.4f})")
    if args.straightforward:
        labels = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)
        step = straightforward(get_preset(args.preset), args.classes, labels, device)
        times = timed(step, args.iters, args.warmup, device)
        print(f"straightforward paired: median {statistics.median(times):.4f} s/iter over {len(times)} "
              f"(min {min(times):.4f}, max {max(times):.4f})")


if __name__ == "__main__":
    main()
