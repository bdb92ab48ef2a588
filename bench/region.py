"""Whole-body label maps against images of one body region: what ``slice.require_classes`` changes.

    python bench/region.py [--steps N] [--threads 1] [--out DIR]

The phantom analogue of AutoPET label maps (skull base to thigh) against SynthRAD2023 pelvis MR
(config/autopet_synthrad.yaml): the CT phantoms of config/config.yaml give whole label maps (32
slices: lung above, bowel gas below); the MR phantoms of other patients are cut to the slices that
hold bowel gas (the lower 13 of 32), the "pelvis", and are image-only (their labels are not used
in training). Two unpaired trainings with the demo-unpaired recipe (lambda_class_stats 0, as an
image-only dataset needs) and the same budget: every label slice (``slice.require_classes: []``)
and only the label slices that carry bowel gas (``[bowel_gas]``).

On the held-out label maps' slices of the region (those with bowel gas), against the held-out
MR: intensity W1 inside the body, the mean absolute per-class intensity error (0..1000 MR units,
the MR phantoms' own labels are used for scoring only), body Dice, and the slices each training
kept per label map.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import ROOT, as_set, load_config, to_physical  # noqa: E402

from medsynth.data.labels import LabelTable  # noqa: E402
from medsynth.data.phantom import make_case  # noqa: E402
from medsynth.data.preprocess import PreprocessSettings, preprocess_case  # noqa: E402
from medsynth.data.slicing import SliceSettings, slice_case  # noqa: E402
from medsynth.data.split import split_table  # noqa: E402
from medsynth.inference.generate_cases import generator_from_state, synthesize  # noqa: E402
from medsynth.io.nifti import load_volume, save_volume  # noqa: E402
from medsynth.metrics.image import body_dice, intensity_w1  # noqa: E402
from medsynth.metrics.intensity import class_intensity_table  # noqa: E402
from medsynth.sharing.selection import select_checkpoint  # noqa: E402
from medsynth.io.checkpoint import load_checkpoint  # noqa: E402
from medsynth.train.loop import TrainSettings, train  # noqa: E402

REGION_CLASS = "bowel_gas"


def cohort(config: dict, name: str, work: Path, crop_to: str | None) -> dict[str, list]:
    """Preprocessed, sliced cases of a phantom dataset by split part; ``crop_to``: keep only the slices
    (z range) that hold this class, as a scan of one body region would."""
    ds = config["datasets"][name]
    table = LabelTable.from_config(ds["labels"])
    ph = ds["phantom"]
    ids = [f"phantom_{i:03d}" for i in range(ph["n_cases"])]
    parts = {r["case_id"]: r["part"] for r in split_table([{"case_id": c} for c in ids], config["split"]["ratios"],
                                                           config["split"]["seed"])}
    out: dict[str, list] = {"train": [], "val": [], "test": []}
    image_key = "mr" if ds["modality"] == "MR" else "ct"
    for i, case_id in enumerate(ids):
        case = make_case(i, ph["seed"], tuple(ph["shape"]), tuple(ph["spacing"]))
        image, label, affine = getattr(case, image_key), case.label, case.affine
        if crop_to is not None:
            zs = np.flatnonzero((label == table.names.index(crop_to)).any(axis=(0, 1)))
            image, label = image[..., zs[0]:zs[-1] + 1], label[..., zs[0]:zs[-1] + 1]
            affine = affine.copy()
            affine[:3, 3] += affine[:3, 2] * zs[0]
        folder = work / "raw" / name / case_id
        save_volume(folder / "image.nii.gz", image, affine)
        save_volume(folder / "label.nii.gz", label, affine)
        pre = work / "pre" / name / case_id
        preprocess_case(case_id, folder / "image.nii.gz", folder / "label.nii.gz", pre, table,
                        PreprocessSettings.from_config(ds["modality"], ds["preprocess"]))
        vols = [load_volume(pre / f"{n}.nii.gz").array for n in ("image", "label", "mask")]
        out[parts[case_id]].append((case_id, vols))
    return out


def sliced(cases: list, size: int, require: tuple[int, ...] = ()) -> object:
    return as_set([(c, slice_case(v[0].astype(np.float32), v[1], v[2], SliceSettings(size, 0.05, require)))
                   for c, v in cases])


def run(config: dict, args: argparse.Namespace, work: Path) -> None:
    exp = config["experiments"]["demo-unpaired"]
    labels = cohort(config, exp["dataset"], work, None)
    images = cohort(config, exp["images_from"], work, REGION_CLASS)
    table = LabelTable.from_config(config["datasets"][exp["dataset"]]["labels"])
    size, region = config["slice"]["size"], table.names.index(REGION_CLASS)
    mr = {p: sliced(images[p], size) for p in ("train", "val", "test")}
    test = sliced(labels["test"], size, (region,))  # the held-out label maps' slices of the region
    meta = {"modality": "MR"}
    print(f"MR slices per case (the region): {len(mr['train']) / max(1, len(images['train'])):.1f}; test label "
          f"slices in the region: {len(test)}")
    for require in ((), (region,)):
        parts = {p: sliced(labels[p], size, require) for p in ("train", "val")}
        name = "all label slices" if not require else f"require_classes [{REGION_CLASS}]"
        settings = TrainSettings.from_dict({**exp["train"], "lambda_class_stats": 0.0,
                                            **({"steps": args.steps} if args.steps else {})})
        run_dir = work / "runs" / ("all" if not require else "region")
        train(settings, table.num_classes, parts["train"], parts["val"], run_dir, images_train=mr["train"],
              images_val=mr["val"])
        select_checkpoint(run_dir, exp.get("select_metric", "intensity_w1"), run_dir / "selected.json",
                          run_dir / "generator.pt", fallback="intensity_w1")
        G, _ = generator_from_state(load_checkpoint(run_dir / "generator.pt"), run_dir / "generator.pt",
                                    torch.device("cpu"))
        t = test.with_context(G.context_slices)
        fake = synthesize(G, t.labels.long(), table.num_classes, args.seed, 64, torch.device("cpu"), context=t.context)
        body = t.masks.float()
        rows = class_intensity_table(to_physical(fake[:, 0], meta), t.labels.numpy(),
                                     to_physical(mr["test"].images.float()[:, 0], meta), mr["test"].labels.numpy(),
                                     table.names)
        present = [r for r in rows[1:] if r["voxels_real"] > 0 and r["voxels_generated"] > 0]
        print(f"{name:<28} label slices kept per case {len(parts['train']) / len(labels['train']):.1f}  "
              f"intensity W1 {intensity_w1(fake, body, mr['test'].images.float(), mr['test'].masks.float()):.4f}  "
              f"class error {np.mean([r['mean_abs_error'] for r in present]):.1f}  "
              f"body Dice {float(body_dice(fake, body, settings.mask_threshold).mean()):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--steps", type=int, help="training steps (default: demo-unpaired's train.steps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="keep the work folder here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        run(config, args, args.out or Path(tmp))


if __name__ == "__main__":
    main()
