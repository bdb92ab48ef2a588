"""Snakemake script: markdown + HTML summary of one experiment."""

from pathlib import Path

from medsynth.evaluation.utility_curve import findings, organ_rows
from medsynth.io.logs import log_to
from medsynth.io.tables import read_tsv
from medsynth.reporting.sample_figures import real_name
from medsynth.reporting.summary import write_summary

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    figures, tables = {}, {}
    title = "Utility curve: does synthetic data help when labelled patients are few?"
    if sm.input.utility:  # [utility.tsv, utility_curve.png] when the utility curve runs
        rows = read_tsv(sm.input.utility[0])
        figures[title] = Path(sm.input.utility[1])
        tables["Utility curve (organ-mean Dice on the real test split, 95 % bootstrap interval; per class in "
               "utility.tsv)"] = organ_rows(rows)
        notes = {"What the utility curve shows": " ".join(findings(rows))}  # its own heading: the figure has the title
    else:
        notes = {"Utility curve": sm.params.utility_skipped}
    write_summary(
        sm.wildcards.experiment,
        Path(sm.input.selected),
        Path(sm.input.test_metrics),
        {
            "Validation metrics during training": Path(sm.input.metric_curves),
            "Training losses": Path(sm.input.loss_curves),
            f"Test samples (label | samples | {real_name(sm.params.mode)})": Path(sm.input.samples),
            "One test case across its slices": Path(sm.input.strip),
            "Side views: coronal and sagittal through the generated volumes": Path(sm.input.side),
            "Per-class intensity, real vs generated (test split)": Path(sm.input.intensity_plot),
            "Memorisation audit: the generated test slices closest to a training slice": Path(sm.input.memorisation_plot),
            **figures,
        },
        Path(sm.output.md),
        Path(sm.output.html),
        tables={"Segmentation consistency (U-Net trained on real images; Dice/IoU per class)":
                Path(sm.input.segmentation), **tables},
        class_intensity=Path(sm.input.class_intensity),
        notes=notes,
    )
