"""Run one rule's work on a ``memory_cohort`` in this process and print its peak memory as JSON (last line):

    python memory_run.py evaluate|utility|audit_shared|segmenter|real_stats|train_data|generate COHORT.json

``ready_mb``: the resident set after the imports; ``peak_mb``: the peak over the whole run (ru_maxrss).
Each stage makes the calls its rule's script makes, with the demo config's settings where they change
memory (batches, U-Net widths); the segmenter trains 2 steps (steps change the time, not the memory).
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import torch

# Imported before the stage so that ``ready_mb`` holds them: what a stage adds is peak_mb - ready_mb.
import medsynth.evaluation.memorisation_audit  # noqa: F401
import medsynth.inference.generate_cases  # noqa: F401
import medsynth.evaluation.stages  # noqa: F401

torch.set_num_threads(1)
CPU = torch.device("cpu")
SEGMENTER = {"segmenter_steps": 2, "segmenter_batch": 8, "segmenter_channels": [16, 32, 64, 64]}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _metrics(c: dict) -> dict:
    return {"weights_dir": c.get("weights", str(Path(c["cases_dir"]).parent / "no-weights")), "perceptual": "auto",
            "batch_size": 32, "kid_subsets": 100, "kid_subset_size": 1000, "memorisation_threshold": 0.5}


def evaluate(c: dict) -> None:
    from medsynth.inference.generate_cases import generated_cases
    from medsynth.evaluation.stages import EvaluateInputs, EvaluateSettings, evaluate_experiment

    inputs = EvaluateInputs(generated_cases(c["test"], Path(c["cases_dir"])), meta=c["meta"], reference=c["test"],
                            reference_meta=c["meta"], train_reference=c["train"], real_stats=Path(c["real_stats"]),
                            train_stats=Path(c["train_stats"]), segmenter=Path(c["segmenter"]))
    evaluate_experiment(inputs, EvaluateSettings(paired=True, metrics=_metrics(c), names=c["names"],
                                                 reference_names=c["names"], not_computed=""), CPU)


def utility(c: dict) -> None:
    from medsynth.evaluation.stages import UtilityInputs, UtilitySettings, utility_experiment
    from medsynth.metrics.segmentation import SegmenterRecipe

    inputs = UtilityInputs(real_model=Path(c["segmenter"]), real_train=c["train"], label_train=c["train"],
                           manifest=Path(c["manifest"]), cases_dir=Path(c["cases_dir"]), test=c["test"],
                           split=Path(c["split"]))
    # Every real patient: (a) is the rule's segmenter, (c) one training; the pool memory holds is the same for any k.
    utility = {"real_patients": ["all"], "draws": 1, "bootstrap": 1000, "seed": 0, "real_share": 0.75}
    utility_experiment(inputs, UtilitySettings(names=c["names"], image_names=c["names"], source="",
                                               segmenter=SegmenterRecipe.from_settings(SEGMENTER), utility=utility), CPU)


def audit_shared(c: dict) -> None:
    """Every training case exported (paired: each against its own real image too), as the script builds them."""
    from medsynth.evaluation.memorisation_audit import SharedCase, audit_shared
    from medsynth.inference.generate_cases import generated_cases

    cases_dir = Path(c["cases_dir"])
    shared = [SharedCase(case, f"p_{case}", Path(real), gen, own=True)
              for case, real, gen in generated_cases(c["train"], cases_dir)]
    test = [(real, gen) for _, real, gen in generated_cases(c["test"], cases_dir)]
    audit_shared(shared, c["train"], c["test"], test, True, 0.5)


def segmenter(c: dict) -> None:
    from medsynth.metrics.segmentation import SegmenterRecipe, train_segmenter
    from medsynth.data.slice_set import load_slices

    data = load_slices(c["train"])
    train_segmenter(data.images, data.labels, len(c["names"]), SegmenterRecipe.from_settings(SEGMENTER), CPU)


def train_data(c: dict) -> None:
    """The GAN's training set as train.py loads it, held in memory up to ``ram_gb`` (the cohort's key, as
    train.ram_cache_gb), memory-mapped beyond."""
    import tempfile

    from medsynth.data.slice_set import load_slices

    with tempfile.TemporaryDirectory() as spill:
        data = load_slices(c["train"], ram_gb=c.get("ram_gb"), spill_dir=Path(spill), context_slices=1)
        assert len(data) > 0
        del data


def real_stats(c: dict) -> None:
    from medsynth.data.slice_batches import slice_chunks
    from medsynth.metrics.perceptual import save_real_stats

    images = (chunk[:, None] for chunk, in slice_chunks(c["train"], ("images",)))
    save_real_stats(images, Path(c["cases_dir"]).parent / "stats.npz", _metrics(c), CPU)


def generate(c: dict) -> None:
    from medsynth.inference.generate_cases import GenerateSettings, LabelCase, generate_cases

    cases = [LabelCase(*case) for case in c["label_cases"]]
    generate_cases(Path(c["generator"]), cases, Path(c["out"]), GenerateSettings(2, 0, 16, CPU))


STAGES = {"evaluate": evaluate, "utility": utility, "audit_shared": audit_shared, "segmenter": segmenter,
          "real_stats": real_stats, "train_data": train_data, "generate": generate}


def main(argv: list[str]) -> int:
    stage, spec = argv
    cohort = json.loads(Path(spec).read_text())
    ready = _rss_mb()
    STAGES[stage](cohort)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"stage": stage, "ready_mb": round(ready, 1), "peak_mb": round(peak, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
