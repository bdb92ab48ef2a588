"""How well generated images follow their label maps, after a fixed training budget.

    python bench/quality.py [--settings phantom-paired phantom-unpaired real-ct] [--steps N]
                            [--set key=value ...] [--model-set field=value ...] [--dataset-set key=value ...]
                            [--samples 4] [--out DIR] [--threads 2]

Settings (all numbers on held-out slices, never trained on or selected with):

- ``phantom-paired``: the demo experiment ``demo`` of config/config.yaml (CT phantoms, 64 px);
- ``phantom-unpaired``: ``demo-unpaired`` (CT phantom labels -> MR phantoms of other patients);
- ``real-ct``: the real CT in ../shared/data (one patient), paired, 128 px, its slices split by
  z into a training half (every 4th of them also validates) and a test half.

``--dataset-set phantom.seed=7`` changes the phantom datasets (another cohort: other patients);
``--set init_from=results/select/demo/generator.pt`` fine-tunes from a trained generator (the
comparison in docs/how-to/fine-tune-and-share.md: the same steps from it and from scratch).

Per setting one line of numbers, then a per-class table: mean intensity (HU for CT, the
0..1000 scale of generated volumes for MR) inside each class in generated vs real images, its
absolute error and the ratio of standard deviations. Unpaired, the table adds the class's mean
in the image dataset's training patients (what ``lambda_class_stats`` aims at) and its distance
from the test patient: the error even a perfect unpaired generator would show. The segmentation-consistency ratio is the organ-mean Dice (no body class) of the project's
segmenter (trained on real training slices) on generated images divided by the same on real
test images; its real-image Dice per class is printed too. Diversity is the pixel standard
deviation across ``--samples`` samples of one label map (unbiased variance, pooled over the
body's pixels, so any K >= 2 estimates the same spread), in [-1, 1] units. The code paths are the workflow's: preprocessing, slicing, patient split, training,
checkpoint selection, synthesis and the metrics are the package's own functions.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from medsynth.data.labels import LabelTable
from medsynth.data.phantom import write_cohort
from medsynth.data.intensity import IntensityMap
from medsynth.data.preprocess import PreprocessSettings, preprocess_case
from medsynth.data.slicing import CaseSlices, SliceSettings, slice_case
from medsynth.data.split import split_table
from medsynth.inference.generate_cases import generator_from_state, synthesize
from medsynth.io.nifti import load_volume
from medsynth.io.tables import read_tsv
from medsynth.metrics.image import body_dice, intensity_w1, diversity, paired_metrics, sample_diversity
from medsynth.metrics.intensity import class_intensity_table
from medsynth.metrics.segmentation import (SegmenterRecipe, confusion, organ_mean, predict, summarize,
                                          train_segmenter)
from medsynth.models.losses import class_targets
from medsynth.sharing.selection import select_checkpoint
from medsynth.models.presets import get_preset
from medsynth.io.checkpoint import load_checkpoint
from medsynth.data.slice_set import SliceSet
from medsynth.train.loop import TrainSettings, train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "totalseg-example"
SETTINGS = ("phantom-paired", "phantom-unpaired", "real-ct")


def load_config(path: Path, dataset_set: list[str] = ()) -> dict:
    """The config, schema-checked; ``dataset_set`` items ``a.b=value`` change every phantom dataset."""
    from snakemake.utils import validate

    config = yaml.safe_load(path.read_text())
    for item in dataset_set:
        key, value = item.split("=", 1)
        for ds in config["datasets"].values():
            if ds["source"] == "phantom":
                *parents, leaf = key.split(".")
                node = ds
                for name in parents:
                    node = node.setdefault(name, {})
                node[leaf] = yaml.safe_load(value)
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"), set_default=True)
    return config


def sliced_case(case_id: str, image: Path, label: Path, out: Path, table: LabelTable, settings: PreprocessSettings,
                slice_settings: SliceSettings) -> tuple[CaseSlices, dict]:
    meta = preprocess_case(case_id, image, label, out, table, settings)
    vols = [load_volume(out / f"{n}.nii.gz").array for n in ("image", "label", "mask")]
    return slice_case(vols[0].astype(np.float32), vols[1], vols[2], slice_settings), meta


def as_set(slices: list[tuple[str, CaseSlices]]) -> SliceSet:
    cat = lambda key: torch.from_numpy(np.concatenate([getattr(s, key) for _, s in slices]))  # noqa: E731
    return SliceSet(cat("images")[:, None], cat("labels"), cat("masks")[:, None],
                    [c for c, s in slices for _ in s.z], [int(z) for _, s in slices for z in s.z])


def phantom_parts(config: dict, name: str, work: Path) -> tuple[dict[str, SliceSet], dict, LabelTable]:
    """A phantom dataset of the config, preprocessed, sliced and split by patient as the workflow does."""
    ds = config["datasets"][name]
    table = LabelTable.from_config(ds["labels"])
    ph = ds["phantom"]
    cases_tsv = write_cohort(work / "raw" / name, ph["n_cases"], ph["seed"], tuple(ph["shape"]), tuple(ph["spacing"]))
    rows = read_tsv(cases_tsv)
    parts = {r["case_id"]: r["part"] for r in split_table(rows, config["split"]["ratios"], config["split"]["seed"])}
    image_col = "mr" if ds["modality"] == "MR" else "image"
    sliced: dict[str, list] = {"train": [], "val": [], "test": []}
    meta = {}
    settings = PreprocessSettings.from_config(ds["modality"], ds["preprocess"])
    for r in rows:
        s, meta = sliced_case(r["case_id"], cases_tsv.parent / r[image_col], cases_tsv.parent / r["label"],
                              work / "pre" / name / r["case_id"], table, settings,
                              SliceSettings(config["slice"]["size"], config["slice"]["min_body_fraction"]))
        sliced[parts[r["case_id"]]].append((r["case_id"], s))
    return {p: as_set(v) for p, v in sliced.items()}, meta, table


def real_ct_parts(work: Path) -> tuple[dict[str, SliceSet], dict, LabelTable]:
    entries = yaml.safe_load((ROOT / "config" / "labels" / "totalsegmentator_v2_grouped.yaml").read_text())
    table = LabelTable.from_config(entries)
    s, meta = sliced_case("ct", SHARED / "ct.nii.gz", SHARED / "label.nii.gz", work / "pre" / "real-ct", table,
                          PreprocessSettings("CT", 3.0), SliceSettings(128, 0.05))
    half = np.median(s.z)
    pick = lambda m: CaseSlices(s.images[m], s.labels[m], s.masks[m], s.z[m], s.offsets[m])  # noqa: E731
    train_m = s.z < half
    val_m = train_m & (np.arange(len(s.z)) % 4 == 0)
    return ({"train": as_set([("ct", pick(train_m))]), "val": as_set([("ct", pick(val_m))]),
             "test": as_set([("ct", pick(~train_m))])}, meta, table)


def to_physical(images: torch.Tensor, meta: dict) -> np.ndarray:
    # HU for CT; MR on the 0..1000 scale generated MR volumes are written in (it has no absolute scale).
    curve = IntensityMap.from_meta(meta["intensity"]) if meta["modality"] == "CT" else IntensityMap.window(0.0, 1000.0)
    return curve.to_physical(images.numpy())


def real_segmenter(real_train: SliceSet, num_classes: int, metrics: dict, seed: int) -> torch.nn.Module:
    """The pipeline's segmentation-consistency U-Net, trained on real training slices (``metrics.segmenter_*``)."""
    return train_segmenter(real_train.images.float(), real_train.labels.long(), num_classes,
                           SegmenterRecipe.from_settings(metrics, seed=seed))


def segmenter_dice(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   names: list[str]) -> list[dict]:
    """Per-class Dice of ``model`` on ``images`` against ``labels``; the last row is the organ mean."""
    return summarize(confusion(predict(model, images.float()), labels.long(), len(names)), names)


def segmenter_scores(model: torch.nn.Module, test_real: SliceSet, fake: torch.Tensor, fake_labels: torch.Tensor,
                     table: LabelTable) -> tuple[float, float, list[dict]]:
    """Organ-mean Dice on generated and on real test slices, over the organs scored on both (as evaluate's
    seg_ratio: unpaired, the label maps' organs and the image dataset's need not be the same), and both per
    class."""
    gen = segmenter_dice(model, fake, fake_labels, table.names)[:-1]
    real = segmenter_dice(model, test_real.images, test_real.labels, table.names)[:-1]
    both = [(g["dice"], r["dice"]) if not (math.isnan(g["dice"]) or math.isnan(r["dice"])) else (math.nan, math.nan)
            for g, r in zip(gen, real)]
    (gen_mean, _), (real_mean, _) = (organ_mean([b[k] for b in both], table.names) for k in (0, 1))
    return gen_mean, real_mean, [{"class": g["class"], "dice_gen": g["dice"], "dice_real": r["dice"]}
                                 for g, r in zip(gen, real)]


def run_setting(name: str, config: dict, args: argparse.Namespace, work: Path) -> dict:
    t_start = time.perf_counter()
    exp = dict(config["experiments"]["demo-unpaired" if name == "phantom-unpaired" else "demo"])
    train_cfg = {**exp["train"], **({"steps": args.steps} if args.steps else {})}
    for item in args.set:
        key, value = item.split("=", 1)
        train_cfg[key] = yaml.safe_load(value)
    unpaired = train_cfg.get("mode") == "unpaired"
    if name == "real-ct":
        if not SHARED.is_dir():
            return {"setting": name, "skipped": f"no real CT at {SHARED}"}
        parts, meta, table = real_ct_parts(work)
    else:
        parts, meta, table = phantom_parts(config, exp["dataset"], work)
    img_parts, img_meta = (phantom_parts(config, exp["images_from"], work)[:2] if unpaired else (parts, meta))
    settings = TrainSettings.from_dict(train_cfg)
    run_dir = work / "runs" / name
    t_train = time.perf_counter()
    spec = get_preset(settings.model, **{k: yaml.safe_load(v) for k, v in (i.split("=", 1) for i in args.model_set)})
    summary = train(settings, table.num_classes, parts["train"], parts["val"], run_dir, spec=spec,
                    config={"labels": [{"name": n, "values": list(v)} for n, v in zip(table.names, table.values)
                                       if v]},  # class names: init_from matches them
                    images_train=img_parts["train"] if unpaired else None,
                    images_val=img_parts["val"] if unpaired else None)
    train_s = time.perf_counter() - t_train
    seconds = [float(r["seconds"]) for r in read_tsv(run_dir / "losses.tsv")]
    metric = exp.get("select_metric", config["select"]["metric"])
    select_checkpoint(run_dir, metric, run_dir / "selected.json", run_dir / "generator.pt",
                      fallback=config["select"]["fallback"])
    G, _ = generator_from_state(load_checkpoint(run_dir / "generator.pt"), run_dir / "generator.pt",
                                torch.device("cpu"))
    test = parts["test"].with_context(G.context_slices)  # --set context_slices=k: the neighbours it learned with
    with torch.no_grad():
        samples = torch.stack([synthesize(G, test.labels.long(), table.num_classes, args.seed + k, 64,
                                          torch.device("cpu"), context=test.context)
                               for k in range(args.samples)])
    fake, body = samples[0], test.masks.float()
    ref = img_parts["test"]
    out = {"setting": name, "steps": summary["steps"], "selected_step": json.loads(
        (run_dir / "selected.json").read_text())["step"], "test_slices": len(test),
        "s_per_step": float(np.median(seconds)), "train_s": train_s}
    if not unpaired:
        pm = paired_metrics(fake, test.images.float(), body=body)
        out.update(ssim_body=float(pm["ssim_body"].mean()), psnr_body=float(pm["psnr_body"].mean()))
    out["body_dice"] = float(body_dice(fake, body, settings.mask_threshold).mean())
    out["intensity_w1"] = intensity_w1(fake, body, ref.images.float(), ref.masks.float())
    out["diversity"] = diversity(*sample_diversity(samples, body))  # the pipeline's pixel_diversity
    seg = real_segmenter(img_parts["train"], table.num_classes, config["metrics"], settings.seed)
    gen_dice, real_dice, seg_rows = segmenter_scores(seg, ref, fake, test.labels, table)
    out.update(seg_dice_gen=gen_dice, seg_dice_real=real_dice,
               seg_ratio=gen_dice / real_dice if real_dice > 0 else math.nan)
    # Generated images are on the image dataset's scale (unpaired: MR units, not the label CT's HU).
    rows = class_intensity_table(to_physical(fake[:, 0], img_meta), test.labels.numpy(),
                                 to_physical(ref.images.float()[:, 0], img_meta), ref.labels.numpy(), table.names)
    for r, s in zip(rows, seg_rows):
        r.update(dice_gen=s["dice_gen"], dice_real=s["dice_real"])
    if unpaired:
        # What the class-statistics loss aims at: the image dataset's training patients, not the test one.
        # Their distance from the test patient is the error a perfect unpaired generator would show.
        train_means = class_targets(img_parts["train"].images, img_parts["train"].labels, table.num_classes)[0]
        for r, m in zip(rows, to_physical(train_means, img_meta)):
            r["mean_train"] = float(m)
    out["classes"] = rows
    out["wall_s"] = time.perf_counter() - t_start
    return out


def print_result(res: dict) -> None:
    if "skipped" in res:
        print(f"{res['setting']}: skipped ({res['skipped']})")
        return
    keys = ["steps", "selected_step", "test_slices", "seg_ratio", "seg_dice_gen", "seg_dice_real", "ssim_body",
            "psnr_body", "body_dice", "intensity_w1", "diversity", "s_per_step", "train_s", "wall_s"]
    print(res["setting"] + ": " + "  ".join(f"{k}={res[k]:.4g}" if isinstance(res[k], float) else f"{k}={res[k]}"
                                           for k in keys if k in res))
    train = "mean_train" in res["classes"][0]
    print(f"  {'class':<18}{'real':>9}{'gen':>9}{'|err|':>8}{'sd ratio':>9}{'flag':>5}{'dice real':>10}{'dice gen':>9}"
          + (f"{'train':>9}{'|gen-train|':>12}{'|train-real|':>13}" if train else ""))
    for r in res["classes"]:
        if r["voxels_real"] == 0 and r["voxels_generated"] == 0:
            continue
        extra = (f"{r['mean_train']:>9.1f}{abs(r['mean_generated'] - r['mean_train']):>12.1f}"
                 f"{abs(r['mean_real'] - r['mean_train']):>13.1f}" if train else "")
        print(f"  {r['class']:<18}{r['mean_real']:>9.1f}{r['mean_generated']:>9.1f}{r['mean_abs_error']:>8.1f}"
              f"{r['std_ratio']:>9.2f}{'  !' if r['outside_real_range'] else '':>5}{r['dice_real']:>10.3f}"
              f"{r['dice_gen']:>9.3f}" + extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--steps", type=int, help="training steps (default: the experiment's train.steps)")
    ap.add_argument("--set", action="append", default=[], help="train.<key>=<value> override, repeatable")
    ap.add_argument("--model-set", action="append", default=[], help="preset field override, e.g. spatial_noise=true")
    ap.add_argument("--dataset-set", action="append", default=[],
                    help="phantom dataset override, e.g. phantom.seed=7 (another cohort), repeatable")
    ap.add_argument("--samples", type=int, default=4, help="samples per label map (diversity)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="keep the work folder here and write results.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    config = load_config(args.config, args.dataset_set)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        results = []
        for name in args.settings:
            res = run_setting(name, config, args, work / name)
            print_result(res)
            results.append(res)
        if args.out:
            (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
