"""The GPU table of the README: training speed and memory of a preset, generation and evaluation throughput.

    python bench/gpu_table.py --out results/gpu [--budget 470] [--preset oasis-256 --size 256 --classes 19]

Training (``train_step.build_step``, the training code's own step and device preparation): paired and
unpaired, batch 8 and 16 (``--batches``), fp32 and bf16, channels_last on and off; then cuDNN autotuning on a
few rows, a profile of fp32 against bf16 (the kernels that take the time), generation
(``synthesize.run_generator``, label maps from the host and images back, as ``generate`` runs it) and
evaluation (Inception features and LPIPS through ``metrics.perceptual``, with random weights of the real
architectures written here: the speed does not depend on the weights), and last torch.compile, each compiled
row in its own process under what is left of ``--budget`` seconds. Rows come in priority order; each is
appended to ``<out>/rows.jsonl`` as it is measured, so a run cut short keeps what it measured. The table is
printed at the end (``--table`` prints it again from the rows).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from train_step import build_step, timed  # bench/ is the script's folder: on sys.path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 200_000  # a full training run (config/autopet.yaml)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_row(args: argparse.Namespace, mode: str, batch: int, precision: str, channels_last: bool,
              compile: bool = False, autotune: bool = False) -> dict:
    """s/iter (mean over ``args.iters``: the lazy R1 of unpaired training falls on one in 16), images/s and
    peak GPU memory of one training configuration; the losses of the last step must be finite."""
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = autotune
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    fn, nets = build_step(args.preset, args.classes, mode, args.size, batch, precision == "bf16", channels_last,
                          compile, device)
    losses = {}

    def step(i: int) -> None:
        losses.update(fn(i))

    timed(step, 0, args.warmup, device)  # compilation and the first allocations: in setup_s
    times = timed(step, args.iters, 0, device)
    bad = [k for k, v in losses.items() if not math.isfinite(float(v))]
    mean = statistics.fmean(times)
    row = {"kind": "train", "mode": mode, "batch": batch, "precision": precision, "channels_last": channels_last,
           "compile": compile, "cudnn_benchmark": autotune, "s_iter": round(mean, 4),
           "s_iter_median": round(statistics.median(times), 4), "images_s": round(batch / mean, 1),
           "peak_gib": round(_peak_gib(device), 2),
           "hours_200k": round(mean * STEPS / 3600, 1), "setup_s": round(time.perf_counter() - t0 - sum(times), 1),
           "finite": not bad}
    return row


def profile_rows(args: argparse.Namespace, out: Path) -> list[dict]:
    """The CUDA kernels of three paired steps at the largest batch in fp32 and in bf16 (channels_last), as
    tables in ``<out>/profile_<precision>.txt``; the rows say what share of GPU time went to casts and copies."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = False
    rows = []
    for precision in ("fp32", "bf16"):
        fn, nets = build_step(args.preset, args.classes, "paired", args.size, max(args.batches), precision == "bf16",
                              True, False, device)
        timed(fn, 0, args.warmup, device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            timed(fn, 3, 0, device)
        events = prof.key_averages()
        (out / f"profile_{precision}.txt").write_text(
            events.table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=90))
        kernels = [e for e in events if _device_time(e) > 0]  # the kernels (operators have no self device time)
        total = sum(_device_time(e) for e in kernels) or 1.0
        copy = sum(_device_time(e) for e in kernels if any(k in e.key.lower() for k in ("copy", "cast", "elementwise")))
        top = sorted(kernels, key=_device_time, reverse=True)[:6]
        rows.append({"kind": "profile", "precision": precision, "gpu_ms_per_step": round(total / 3 / 1000, 2),
                     "copy_cast_elementwise_share": round(copy / total, 3),
                     "top": [(e.key[:80], round(_device_time(e) / 3 / 1000, 2)) for e in top]})
        del fn, nets
    return rows


def _device_time(event) -> float:
    """µs of device time of a profiler row (the attribute was renamed from cuda_ to device_ in torch 2.4)."""
    return float(getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0))


def generation_rows(args: argparse.Namespace) -> list[dict]:
    """Slices/s of the generator over label maps held on the host, images back on the host (``generate``)."""
    from medsynth.inference.synthesize import draw_noise, run_generator
    from medsynth.models import build_generator, get_preset

    device = torch.device(args.device)
    G = build_generator(get_preset(args.preset), args.classes).to(device).eval()
    n = args.eval_slices
    labels = torch.randint(0, args.classes, (n, args.size, args.size), dtype=torch.uint8)
    noise = draw_noise(G, n, args.size, args.size, 0, "slice", None, 0.0)
    rows = []
    for batch, precision in ((32, "fp32"), (32, "bf16"), (64, "fp32")):
        with _autocast(device, precision):
            run_generator(G, labels[:batch], None, noise[:batch], args.classes, batch, device)
            _sync(device)
            t0 = time.perf_counter()
            images = run_generator(G, labels, None, noise, args.classes, batch, device)
            _sync(device)
            seconds = time.perf_counter() - t0
        rows.append({"kind": "generate", "batch": batch, "precision": precision, "slices": n,
                     "slices_s": round(n / seconds, 1), "finite": bool(torch.isfinite(images).all())})
    return rows


def evaluation_rows(args: argparse.Namespace) -> list[dict]:
    """Slices/s of the FID Inception features and LPIPS pairs/s at the slice size (resized to 299 px)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_random_weights  # noqa: PLC0415 (the architectures and file names of the real ones)

    from medsynth.metrics.perceptual import inception_features, load_inception, load_lpips, lpips_distances

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="gpu-table-weights-") as folder:  # ~300 MB: not in <out>, not kept
        weights = write_random_weights(Path(folder))
        inception, lpips = load_inception(weights, device), load_lpips(weights, device)
    n = args.eval_slices
    images = torch.rand(n, 1, args.size, args.size) * 2 - 1
    rows = []
    inception_features(inception, images[:50], 50, device)
    _sync(device)
    t0 = time.perf_counter()
    feats = inception_features(inception, images, 50, device)
    seconds = time.perf_counter() - t0
    rows.append({"kind": "evaluate", "metric": "inception features (FID/KID)", "batch": 50, "slices": n,
                 "slices_s": round(n / seconds, 1), "finite": bool(math.isfinite(float(feats.sum())))})
    lpips_distances(lpips, images[:32], images[:32].flip(0), 32, device)
    _sync(device)
    t0 = time.perf_counter()
    d = lpips_distances(lpips, images, images.flip(0), 32, device)
    seconds = time.perf_counter() - t0
    rows.append({"kind": "evaluate", "metric": "LPIPS pairs", "batch": 32, "slices": n,
                 "slices_s": round(n / seconds, 1), "finite": bool(math.isfinite(float(d.sum())))})
    return rows


def search_row(args: argparse.Namespace) -> dict:
    """Slice pairs/s of the memorisation audit's nearest-slice search (float64 on the device), and whether the
    device finds the CPU's slices: AutoPET's export audit is ~1.6e11 pairs, evaluate's ~2.5e10."""
    from medsynth.metrics.memorisation import nearest_training

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    train = (torch.rand(args.search_train, args.size, args.size, generator=g) * 2 - 1).half()
    queries = torch.rand(args.eval_slices, args.size, args.size, generator=g) * 2 - 1
    masks = (torch.rand(queries.shape, generator=g) < 0.5).float()
    on = train.to(device)
    nearest_training(queries[:8], masks[:8], on, device=device)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    near = nearest_training(queries, masks, on, device=device)
    seconds = time.perf_counter() - t0
    cpu = nearest_training(queries[:16], masks[:16], train)
    pairs = len(queries) * len(train)
    return {"kind": "search", "metric": "nearest training slice (float64)", "slices": len(queries),
            "train": len(train), "pairs_s": round(pairs / seconds), "slices_s": round(len(queries) / seconds, 1),
            "finite": bool(np.isfinite(near.distance).all()), "same_as_cpu": bool(
                np.array_equal(cpu.index, near.index[:16]) and np.allclose(cpu.distance, near.distance[:16])),
            "hours_autopet_export_audit": round(1.6e11 / (pairs / seconds) / 3600, 2)}


def train_grid(batches: list[int]) -> list[tuple[str, int, str, bool]]:
    return [(mode, batch, precision, cl) for mode in ("paired", "unpaired") for batch in batches
            for precision in ("fp32", "bf16") for cl in (True, False)]


# At the largest batch: cuDNN autotuning, then torch.compile, most telling first.
AUTOTUNE = [("paired", "fp32"), ("paired", "bf16"), ("unpaired", "bf16")]
COMPILED = [("paired", "bf16"), ("paired", "fp32"), ("unpaired", "bf16")]


def compiled_row(args: argparse.Namespace, mode: str, batch: int, precision: str, timeout: float) -> dict:
    """A torch.compile row in its own process, so that a compilation running past ``timeout`` is stopped."""
    cmd = [sys.executable, __file__, "--one-compiled", f"{mode}:{batch}:{precision}", "--preset", args.preset,
           "--size", str(args.size), "--classes", str(args.classes), "--iters", str(args.iters),
           "--warmup", str(args.warmup), "--device", args.device]
    base = {"kind": "train", "mode": mode, "batch": batch, "precision": precision, "channels_last": True,
            "compile": True}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"not done in {timeout:.0f} s (compilation included)"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        return {**base, "error": (done.stderr or done.stdout)[-600:]}
    return json.loads(lines[-1])


def run_all(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "rows.jsonl"
    start = time.perf_counter()

    def left() -> float:
        return args.budget - (time.perf_counter() - start)

    def emit(rows: list[dict] | dict) -> None:
        for row in rows if isinstance(rows, list) else [rows]:
            print(json.dumps(row), flush=True)
            with rows_file.open("a") as f:
                f.write(json.dumps(row) + "\n")

    device = torch.device(args.device)
    props = torch.cuda.get_device_properties(device) if device.type == "cuda" else None
    emit({"kind": "device", "name": props.name if props else "cpu",
          "memory_gib": round(props.total_memory / 2**30, 1) if props else None, "torch": torch.__version__,
          "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
          "cudnn_tf32": torch.backends.cudnn.allow_tf32, "matmul_precision": torch.get_float32_matmul_precision(),
          "preset": args.preset, "size": args.size, "classes": args.classes})
    big = max(args.batches)
    stages = [*(lambda c=c: train_row(args, *c) for c in train_grid(args.batches)),
              *(lambda c=c: train_row(args, c[0], big, c[1], True, autotune=True) for c in AUTOTUNE),
              lambda: profile_rows(args, out), lambda: generation_rows(args), lambda: evaluation_rows(args),
              lambda: search_row(args)]
    for stage in stages:
        if left() < 20:
            emit({"kind": "skipped", "why": "budget"})
            break
        try:
            emit(stage())
        except Exception as exc:  # one failing row must not cost the others (a lent GPU is minutes)
            emit({"kind": "error", "error": f"{type(exc).__name__}: {exc}"[:600]})
    for mode, precision in COMPILED:
        batch = big
        if args.skip_compile:
            emit({"kind": "skipped", "why": f"--skip-compile: compile {mode} {batch} {precision}"})
        elif left() < 60:
            emit({"kind": "skipped", "why": f"budget: compile {mode} {batch} {precision}"})
        else:
            emit(compiled_row(args, mode, batch, precision, left() - 10))
    print_table([json.loads(ln) for ln in rows_file.read_text().splitlines()])


def print_table(rows: list[dict]) -> None:
    train = [r for r in rows if r.get("kind") == "train" and "s_iter" in r]
    print("\n| mode | batch | precision | channels_last | compile | cuDNN autotune | s/iter | images/s | "
          "peak GPU GiB | hours per 200 k steps |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in train:
        print(f"| {r['mode']} | {r['batch']} | {r['precision']} | {'on' if r['channels_last'] else 'off'} | "
              f"{'on' if r['compile'] else 'off'} | {'on' if r['cudnn_benchmark'] else 'off'} | {r['s_iter']:.3f} | "
              f"{r['images_s']:.1f} | {r['peak_gib']:.1f} | {r['hours_200k']:.1f} |")
    for r in rows:
        if r.get("kind") in ("generate", "evaluate"):
            what = r.get("metric") or f"generator, {r['precision']}"
            print(f"{r['kind']}: {what}, batch {r['batch']}: {r['slices_s']:.1f} slices/s")
        elif r.get("kind") == "search":
            print(f"memorisation search: {r['pairs_s']:.3g} slice pairs/s (same as the CPU: {r['same_as_cpu']}); "
                  f"AutoPET's export audit ~{r['hours_autopet_export_audit']} h")
        elif r.get("kind") in ("device", "profile", "error", "skipped") or "error" in r:
            print(json.dumps(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/bench/gpu")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds; rows that would start later are skipped")
    ap.add_argument("--preset", default="oasis-256")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--classes", type=int, default=19, help="config/labels/totalsegmentator_v2_grouped.yaml: 19")
    ap.add_argument("--iters", type=int, default=16, help="timed steps per row: 16 hold one lazy R1 step")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--eval-slices", type=int, default=512)
    ap.add_argument("--search-train", type=int, default=8192, help="training slices of the search row")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--skip-compile", action="store_true", help="no torch.compile rows (minutes each)")
    ap.add_argument("--table", action="store_true", help="print the table of <out>/rows.jsonl and stop")
    ap.add_argument("--one-compiled", help=argparse.SUPPRESS)  # mode:batch:precision, in a child process
    args = ap.parse_args()
    if args.table:
        print_table([json.loads(ln) for ln in (Path(args.out) / "rows.jsonl").read_text().splitlines()])
    elif args.one_compiled:
        mode, batch, precision = args.one_compiled.split(":")
        print(json.dumps(train_row(args, mode, int(batch), precision, True, compile=True)))
    else:
        run_all(args)


if __name__ == "__main__":
    main()
