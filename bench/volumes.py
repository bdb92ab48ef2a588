"""Do generated volumes hold together along z? Noise sharing and neighbouring-slice context, measured.

    python bench/volumes.py [--settings phantom-paired phantom-unpaired] [--contexts 0 1 2]
                            [--sigmas 0 3 6 12] [--steps N] [--samples 2] [--threads 1] [--out DIR]

For each setting of ``bench/quality.py`` (the demo experiments of config/config.yaml) one
generator is trained per ``train.context_slices`` value in ``--contexts``, at the same budget,
and selected as the workflow does. Each then generates every held-out test case as volumes,
``--samples`` per case, with per-slice noise and with per-volume noise whose spatial map is
smoothed along z by each σ of ``--sigmas`` (mm; 0 = one map for every slice). One row per
(context, noise):

- the through-plane score of ``medsynth.metrics.through_plane`` against the real test volumes
  (ratio of mean neighbouring-slice differences, their W1, the neighbour-SSIM ratio);
- axial quality: the segmentation-consistency ratio (one segmenter trained on real training
  slices, per setting), the mean over classes of the per-class intensity error (HU for CT,
  0..1000 units for MR) and the pixel diversity across samples, as in ``bench/quality.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import ROOT, load_config, phantom_parts, real_segmenter, segmenter_dice, to_physical  # noqa: E402

from medsynth.inference.generate_cases import generator_from_state, sample_seed, synthesize  # noqa: E402
from medsynth.metrics import through_plane  # noqa: E402
from medsynth.metrics.image import diversity, sample_diversity  # noqa: E402
from medsynth.metrics.intensity import class_intensity_table  # noqa: E402
from medsynth.sharing.selection import select_checkpoint  # noqa: E402
from medsynth.io.checkpoint import load_checkpoint  # noqa: E402
from medsynth.data.slice_set import SliceSet  # noqa: E402
from medsynth.train.loop import TrainSettings, train  # noqa: E402

SETTINGS = ("phantom-paired", "phantom-unpaired")
COLUMNS = ["context", "noise", "tp_ratio", "tp_w1", "tp_ssim_ratio", "seg_ratio", "class_err", "diversity",
           "train_s"]


def cases_of(data: SliceSet) -> dict[str, torch.Tensor]:
    """Row indices of each case's slices, in z order."""
    out: dict[str, list[int]] = {}
    for i, c in enumerate(data.case_ids):
        out.setdefault(c, []).append(i)
    return {c: torch.tensor(sorted(idx, key=lambda i: data.z[i])) for c, idx in sorted(out.items())}


def generate_volumes(G: torch.nn.Module, test: SliceSet, num_classes: int, noise: str, sigma_mm: float,
                     spacing_z: float, samples: int, seed: int) -> torch.Tensor:
    """(K, N, 1, H, W): every test case generated as ``samples`` volumes, in ``test``'s row order."""
    out = torch.zeros(samples, *test.images.shape)
    for case, idx in cases_of(test).items():
        for k in range(samples):
            out[k, idx] = synthesize(G, test.labels[idx].long(), num_classes, sample_seed(seed, case, k), 64,
                                     torch.device("cpu"), noise, test.context[idx], [test.z[i] for i in idx],
                                     sigma_mm / spacing_z)
    return out


def neighbour_stats(images: torch.Tensor, data: SliceSet) -> through_plane.NeighbourStats:
    stats = through_plane.NeighbourStats()
    for _, idx in cases_of(data).items():
        stats.add(images[idx, 0].numpy(), data.masks[idx, 0].numpy(), np.asarray([data.z[i] for i in idx]))
    return stats


def foreground_dice(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, names: list[str]) -> float:
    return segmenter_dice(model, images, labels, names)[-1]["dice"]


def train_generator(settings: TrainSettings, parts: dict, img_parts: dict, num_classes: int,
                    run_dir: Path, config: dict, metric: str) -> tuple[torch.nn.Module, float]:
    t0 = time.perf_counter()
    unpaired = settings.mode == "unpaired"
    train(settings, num_classes, parts["train"], parts["val"], run_dir,
          images_train=img_parts["train"] if unpaired else None, images_val=img_parts["val"] if unpaired else None)
    select_checkpoint(run_dir, metric, run_dir / "selected.json", run_dir / "generator.pt",
                      fallback=config["select"]["fallback"])
    G, _ = generator_from_state(load_checkpoint(run_dir / "generator.pt"), run_dir / "generator.pt",
                                torch.device("cpu"))
    return G, time.perf_counter() - t0


def run_setting(name: str, config: dict, args: argparse.Namespace, work: Path) -> list[dict]:
    exp = dict(config["experiments"]["demo-unpaired" if name == "phantom-unpaired" else "demo"])
    unpaired = exp["train"].get("mode") == "unpaired"
    parts, meta, table = phantom_parts(config, exp["dataset"], work)
    img_parts, img_meta = phantom_parts(config, exp["images_from"], work)[:2] if unpaired else (parts, meta)
    ref = img_parts["test"]
    real_stats = neighbour_stats(ref.images.float(), ref)
    seg = real_segmenter(img_parts["train"], table.num_classes, config["metrics"], 0)
    seg_real = foreground_dice(seg, ref.images.float(), ref.labels, table.names)
    spacing_z = float(meta["spacing"][2])
    rows = []
    for k in args.contexts:
        train_cfg = {**exp["train"], "context_slices": k, **({"steps": args.steps} if args.steps else {})}
        settings = TrainSettings.from_dict(train_cfg)
        G, train_s = train_generator(settings, parts, img_parts, table.num_classes, work / "runs" / f"context{k}",
                                     config, exp.get("select_metric", config["select"]["metric"]))
        test = parts["test"].with_context(k)
        for noise, sigma in [("slice", 0.0)] + [("volume", s) for s in args.sigmas]:
            fakes = generate_volumes(G, test, table.num_classes, noise, sigma, spacing_z, args.samples, args.seed)
            tp = through_plane.scores(neighbour_stats(fakes[0], test), real_stats)
            classes = class_intensity_table(to_physical(fakes[0][:, 0], img_meta), test.labels.numpy(),
                                            to_physical(ref.images.float()[:, 0], img_meta), ref.labels.numpy(),
                                            table.names)
            errs = [r["mean_abs_error"] for r in classes[1:] if r["voxels_real"] and r["voxels_generated"]]
            rows.append({"setting": name, "context": k, "noise": noise if noise == "slice" else f"volume {sigma:g} mm",
                         "tp_ratio": tp["ratio"], "tp_w1": tp["w1"], "tp_ssim_ratio": tp["ssim_ratio"],
                         "seg_ratio": foreground_dice(seg, fakes[0], test.labels, table.names) / seg_real,
                         "class_err": float(np.mean(errs)) if errs else math.nan,
                         "diversity": diversity(*sample_diversity(fakes, test.masks.float())), "train_s": train_s})
            print_row(rows[-1])
    return rows


def print_row(r: dict) -> None:
    cells = [f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS]
    print(f"| {r['setting']} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--contexts", type=int, nargs="+", default=[0, 1, 2], help="train.context_slices values")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 3.0, 6.0, 12.0],
                    help="generate.noise_sigma_mm values for per-volume noise")
    ap.add_argument("--steps", type=int, help="training steps (default: the experiment's train.steps)")
    ap.add_argument("--samples", type=int, default=2, help="volumes per test case (diversity needs 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="keep the work folder here and write results.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    config = load_config(args.config)
    print("| setting | " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * (len(COLUMNS) + 1))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        results = [r for name in args.settings for r in run_setting(name, config, args, work / name)]
        if args.out:
            (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
