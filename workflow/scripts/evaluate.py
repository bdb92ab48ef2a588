"""Snakemake script: test-set metrics."""

from pathlib import Path

from medsynth.evaluate import CASE_COLUMNS, COLUMNS, SEG_COLUMNS, evaluate_cases, segmentation_consistency
from medsynth.io.tables import write_tsv
from medsynth.generate import generated_cases
from medsynth.logs import log_to
from medsynth.train.loop import resolve_device

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    cases = generated_cases(sm.input.real, Path(sm.input.cases))
    summary, per_case = evaluate_cases(cases, sm.params.mode == "paired", sm.input.reference,
                                       real_stats=Path(sm.input.real_stats), perceptual=sm.params.metrics,
                                       device=resolve_device("auto"))
    seg = segmentation_consistency(Path(sm.input.segmenter), cases, sm.input.reference,
                                   [e["name"] for e in sm.params.labels], resolve_device("auto"))
    mean = seg[-1]  # the foreground mean row
    summary += [{"metric": "seg_dice_generated", "mean": mean["dice_generated"], "n": len(seg) - 1,
                 "note": "segmenter trained on real images, on generated test images vs their label maps"},
                {"metric": "seg_dice_real", "mean": mean["dice_real"], "n": len(seg) - 1,
                 "note": "the same segmenter on real test images (upper bound)"}]
    write_tsv(sm.output.segmentation, seg, SEG_COLUMNS)
    write_tsv(sm.output.metrics, summary, COLUMNS)
    write_tsv(sm.output.per_case, per_case, CASE_COLUMNS)
