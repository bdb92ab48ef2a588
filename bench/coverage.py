"""Generated tissue beyond the training crop: one canvas per slice vs blended tiles, measured.

    python bench/coverage.py [--settings phantom real-ct] [--steps N] [--threads 2] [--out DIR]

Training sees ``slice.size`` crops of the slices the slice rule keeps; a synthetic volume
needs tissue under every label, so generation runs on the whole labelled extent of every
labelled slice (``medsynth.inference.canvas``): one canvas (``generate.inplane: canvas``)
or half-overlapping tiles of the training size blended by a raised cosine (``tiles``).
Settings, each trained once as the workflow trains (paired, the demo experiment's recipe):

- ``phantom``: config/config.yaml's CT phantoms at the demo spacing (6 mm) with 32 px crops,
  narrower than the phantom's ~30 cm body: the crops see its middle, never its sides;
- ``real-ct``: the real CT in ../shared/data at 3 mm with 64 px crops (the body is 122 px
  wide), trained on the lower half of its slices and tested on the upper half.

Every held-out case is generated as a whole volume in both modes (the workflow's
``generate.synthetic_volume``, one noise draw per volume) and compared with its real
preprocessed image inside the body, in HU, over two regions: ``crop`` (the training crops of
the kept slices) and ``beyond`` (every other labelled voxel: the sides, and slices the slice
rule dropped). Per region: the mean over classes of |generated - real class mean|, the mean
ratio of class standard deviations (texture; 1 is right), the RMS difference, and the share
of labelled voxels left at the background value (must be 0); per mode the seconds per volume.
With ``--out`` it also draws ``coverage_<setting>.png``: a test slice with little of it in the
training crop (outlined), real | canvas | tiles, in the radiological convention.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import ROOT, SHARED, as_set, load_config, phantom_parts  # noqa: E402

from medsynth.data.intensity import IntensityMap  # noqa: E402
from medsynth.data.labels import LabelTable  # noqa: E402
from medsynth.data.preprocess import PreprocessSettings, preprocess_case  # noqa: E402
from medsynth.data.slicing import CaseSlices, SliceSettings, slice_case  # noqa: E402
from medsynth.inference.generate_cases import GenerateSettings, generator_from_state, synthetic_volume  # noqa: E402
from medsynth.inference.canvas import INPLANE_MODES, plan_canvas  # noqa: E402
from medsynth.io.nifti import load_volume  # noqa: E402
from medsynth.metrics.intensity import class_intensity_table  # noqa: E402
from medsynth.sharing.selection import select_checkpoint  # noqa: E402
from medsynth.io.checkpoint import load_checkpoint  # noqa: E402
from medsynth.train.loop import TrainSettings, train  # noqa: E402

SETTINGS = ("phantom", "real-ct")
REGIONS = ("crop", "beyond")


def phantom_data(config: dict, size: int, work: Path) -> tuple[dict, list[tuple[Path, CaseSlices]], LabelTable]:
    """The paired demo dataset at ``size`` px crops: train/val sets and the test cases' (preprocess folder,
    slices)."""
    config = {**config, "slice": {**config["slice"], "size": size}}
    parts, _, table = phantom_parts(config, config["experiments"]["demo"]["dataset"], work)
    test_ids = sorted(set(parts["test"].case_ids))
    name = config["experiments"]["demo"]["dataset"]
    tests = []
    for case in test_ids:
        folder = work / "pre" / name / case
        vols = [load_volume(folder / f"{n}.nii.gz").array for n in ("image", "label", "mask")]
        tests.append((folder, slice_case(vols[0].astype(np.float32), vols[1], vols[2],
                                         SliceSettings(size, config["slice"]["min_body_fraction"]))))
    return parts, tests, table


def real_ct_data(size: int, work: Path) -> tuple[dict, list[tuple[Path, CaseSlices]], LabelTable]:
    """The real CT at 3 mm: slices below its median z train (every 4th validates), the rest is the test."""
    table = LabelTable.from_config(
        yaml.safe_load((ROOT / "config" / "labels" / "totalsegmentator_v2_grouped.yaml").read_text()))
    folder = work / "pre" / "real-ct"
    preprocess_case("ct", SHARED / "ct.nii.gz", SHARED / "label.nii.gz", folder, table, PreprocessSettings("CT", 3.0))
    vols = [load_volume(folder / f"{n}.nii.gz").array for n in ("image", "label", "mask")]
    s = slice_case(vols[0].astype(np.float32), vols[1], vols[2], SliceSettings(size, 0.05))
    half = np.median(s.z)
    pick = lambda m: CaseSlices(s.images[m], s.labels[m], s.masks[m], s.z[m], s.offsets[m])  # noqa: E731
    train_m = s.z < half
    parts = {"train": as_set([("ct", pick(train_m))]), "val": as_set([("ct", pick(train_m & (s.z % 4 == 0)))])}
    return parts, [(folder, pick(~train_m))], table


def crop_region(shape: tuple[int, ...], slices: CaseSlices) -> np.ndarray:
    """The voxels the training crops of a case's kept slices cover."""
    size = slices.labels.shape[-1]
    region = np.zeros(shape, bool)
    for z, (x0, y0) in zip(slices.z, slices.offsets):
        region[max(int(x0), 0):x0 + size, max(int(y0), 0):y0 + size, z] = True
    return region


def region_scores(fake: np.ndarray, real: np.ndarray, label: np.ndarray, region: np.ndarray,
                  names: tuple[str, ...], background: float) -> dict[str, float]:
    """Class-mean error, std ratio and RMS difference (HU) of the labelled voxels in ``region``."""
    inside = region & (label > 0)
    rows = class_intensity_table(fake[inside], label[inside], real[inside], label[inside], names)
    present = [r for r in rows[1:] if r["voxels_real"] > 20]
    return {"voxels": int(inside.sum()),
            "class_err": float(np.mean([r["mean_abs_error"] for r in present])) if present else float("nan"),
            "std_ratio": float(np.mean([r["std_ratio"] for r in present])) if present else float("nan"),
            "rms": float(np.sqrt(np.mean((fake[inside] - real[inside]) ** 2))) if inside.any() else float("nan"),
            "at_background": float(np.mean(fake[inside] <= background)) if inside.any() else float("nan")}


def train_generator(parts: dict, table: LabelTable, config: dict, steps: int | None, work: Path) -> torch.nn.Module:
    """The demo experiment's paired recipe on ``parts``, selected as the workflow selects."""
    exp = config["experiments"]["demo"]
    settings = TrainSettings.from_dict({**exp["train"], **({"steps": steps} if steps else {})})
    run = work / "run"
    train(settings, table.num_classes, parts["train"], parts["val"], run)
    select_checkpoint(run, config["select"]["metric"], run / "selected.json", run / "generator.pt",
                      fallback=config["select"]["fallback"])
    G, _ = generator_from_state(load_checkpoint(run / "generator.pt"), run / "generator.pt", torch.device("cpu"))
    return G


def run_setting(name: str, config: dict, args: argparse.Namespace, work: Path) -> list[dict]:
    size = 32 if name == "phantom" else 64
    if name == "real-ct" and not SHARED.is_dir():
        return [{"setting": name, "skipped": f"no real CT at {SHARED}"}]
    parts, tests, table = phantom_data(config, size, work) if name == "phantom" else real_ct_data(size, work)
    t0 = time.perf_counter()
    G = train_generator(parts, table, config, args.steps, work)
    train_s = time.perf_counter() - t0
    results, shown = [], {}
    for mode in INPLANE_MODES:
        scores = {r: [] for r in REGIONS}
        seconds = []
        for k, (folder, slices) in enumerate(tests):
            meta = json.loads((folder / "meta.json").read_text())
            label = load_volume(folder / "label.nii.gz").array
            if name == "real-ct":  # only the held-out upper half
                label = np.where(np.arange(label.shape[2])[None, None, :] >= slices.z.min(), label, 0)
            real_unit = load_volume(folder / "image.nii.gz").array.astype(np.float32)
            canvas = plan_canvas(label, size, 2 ** G.num_up)
            t = time.perf_counter()
            fake_unit = synthetic_volume(G, table.num_classes, label, canvas, meta["affine"], args.seed + k,
                                         GenerateSettings(samples=1, seed=args.seed, batch=16, inplane=mode,
                                                          noise_sigma_mm=config["generate"]["noise_sigma_mm"]),
                                         size)
            seconds.append(time.perf_counter() - t)
            curve = IntensityMap.from_meta(meta["intensity"])
            fake, real = curve.to_physical(fake_unit), curve.to_physical(real_unit)
            in_crop = crop_region(label.shape, slices)
            if k == 0:
                shown.update(real=real, crop=in_crop, label=label, **{mode: fake})
            for region, mask in (("crop", in_crop), ("beyond", ~in_crop)):
                scores[region].append(region_scores(fake, real, label, mask, table.names, curve.lo))
        row = {"setting": name, "mode": mode, "size": size, "test_cases": len(tests), "train_s": train_s,
               "s_per_volume": float(np.mean(seconds))}
        for region in REGIONS:
            total = sum(s["voxels"] for s in scores[region])
            row[f"{region}_share"] = total
            for key in ("class_err", "std_ratio", "rms", "at_background"):
                row[f"{region}_{key}"] = float(np.nansum([s[key] * s["voxels"] for s in scores[region]]) / total)
        results.append(row)
    if args.out:
        draw(shown, args.out / f"coverage_{name}.png", name)
    labelled = sum(r for r in (results[0]["crop_share"], results[0]["beyond_share"]))
    for row in results:
        row["beyond_share"] = row["beyond_share"] / labelled  # of all labelled voxels
        row.pop("crop_share")
    return results


def draw(shown: dict, path: Path, title: str) -> None:
    """The labelled slice with the largest share outside the training crop: real | canvas | tiles (HU)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsynth.io.images import display_view

    labelled = shown["label"] > 0
    beyond = (labelled & ~shown["crop"]).sum(axis=(0, 1)) / np.maximum(labelled.sum(axis=(0, 1)), 1)
    z = int(np.argmax(np.where(shown["crop"].any(axis=(0, 1)), beyond, -1)))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for ax, key in zip(axes, ("real", "canvas", "tiles")):
        ax.imshow(display_view(np.clip(shown[key][:, :, z], -200, 300)), cmap="gray", vmin=-200, vmax=300)
        ax.contour(display_view(shown["crop"][:, :, z].astype(float)), levels=[0.5], colors="yellow", linewidths=0.8)
        ax.set_title(f"{key} (z {z})")
        ax.axis("off")
    fig.suptitle(f"{title}: training crop outlined; window -200..300 HU; patient's right on the left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        if "skipped" in r:
            print(f"{r['setting']}: skipped ({r['skipped']})")
            continue
        print(f"{r['setting']:<8} {r['mode']:<7} size {r['size']}  beyond the crops {r['beyond_share']:.0%} of the "
              f"labelled voxels  |  class err crop {r['crop_class_err']:.1f} / beyond {r['beyond_class_err']:.1f} HU"
              f"  std ratio {r['crop_std_ratio']:.2f} / {r['beyond_std_ratio']:.2f}  rms {r['crop_rms']:.0f} / "
              f"{r['beyond_rms']:.0f} HU  at background {r['crop_at_background']:.3f} / "
              f"{r['beyond_at_background']:.3f}  {r['s_per_volume']:.2f} s/volume")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--steps", type=int, help="training steps (default: the demo experiment's train.steps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="keep the work folder here and write results.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        rows = []
        for name in args.settings:
            rows += run_setting(name, config, args, work / name)
            print_rows(rows[-2:])
        if args.out:
            (args.out / "results.json").write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
