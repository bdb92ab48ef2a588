"""Median seconds per OASIS training iteration for a preset, size and batch on this machine.

    python bench/train_step.py --preset oasis-256 --size 64 --batch 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medsynth.models import build_discriminator, build_generator, get_preset
from medsynth.models.ema import EMA
from medsynth.train.loop import resolve_device, train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(0)
    spec = get_preset(args.preset)
    G = build_generator(spec, args.classes).to(device)
    D = build_discriminator(spec, args.classes).to(device)
    ema = EMA(G, 0.999)
    opt_g = torch.optim.Adam(G.parameters(), 1e-4, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 4e-4, betas=(0.0, 0.999))
    labels = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)
    real = torch.rand(args.batch, 1, args.size, args.size, device=device) * 2 - 1
    rng = torch.Generator().manual_seed(0)
    times = []
    for i in range(args.warmup + args.iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(G, D, ema, opt_g, opt_d, real, labels, args.classes, 10.0, rng)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    n_g = sum(p.numel() for p in G.parameters()) / 1e6
    n_d = sum(p.numel() for p in D.parameters()) / 1e6
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"threads={torch.get_num_threads()}, preset={args.preset} (G {n_g:.1f} M, D {n_d:.1f} M), "
          f"size={args.size}, batch={args.batch}: median {statistics.median(times):.4f} s/iter "
          f"over {len(times)} iterations (min {min(times):.4f}, max {max(times):.4f})")


if __name__ == "__main__":
    main()
