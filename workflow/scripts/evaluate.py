"""Snakemake script: test-set metrics."""

from pathlib import Path

from medsynth.audit import (MEMORISATION_COLUMNS, generated_images, memorisation_cases, memorisation_features,
                            memorisation_summary)
from medsynth.data.labels import LabelTable, table_names
from medsynth.evaluate import (CASE_COLUMNS, COLUMNS, INTENSITY_COLUMNS, SEG_COLUMNS, class_intensity,
                               evaluate_cases, intensity_summary, read_metas, segmentation_consistency,
                               segmentation_summary)
from medsynth.io.tables import write_tsv
from medsynth.generate import generated_cases
from medsynth.logs import log_to
from medsynth.train.loop import resolve_device
from medsynth.volumes import three_plane_summary, through_plane_summary

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    paired = sm.params.mode == "paired"
    # metrics.batch_size changes only how fast features are computed: from the config, not a params trigger.
    metrics = {**sm.params.metrics, "batch_size": sm.config["metrics"]["batch_size"]}
    names = LabelTable.from_config(sm.params.labels).names
    # The image dataset's classes, matched to the experiment's by name; None: image-only (no label maps).
    reference_names = None if sm.params.reference_labels is None else table_names(sm.params.reference_labels)
    not_computed = f"not computed: the image dataset {sm.params.image_dataset} has no label maps"
    segmenter = sm.input.get("segmenter")  # an input only when the image dataset is labelled
    cases = generated_cases(sm.input.real, Path(sm.input.cases))
    device = resolve_device("auto")
    metas, reference_metas = read_metas(sm.input.meta), read_metas(sm.input.reference_meta)
    # The generated slices loaded once for the memorisation audit, and their Inception features computed
    # once: for FID/KID and for the audit in feature space.
    generated = generated_images(cases)
    features = memorisation_features(generated, Path(sm.input.real_stats), Path(sm.input.train_stats),
                                     metrics, device)
    summary, per_case = evaluate_cases(cases, paired, sm.input.reference,
                                       threshold=sm.params.threshold, real_stats=Path(sm.input.real_stats),
                                       perceptual=metrics, device=device,
                                       fake_features=None if features is None else features[0])
    seg = segmentation_consistency(None if segmenter is None else Path(segmenter), cases, sm.input.reference,
                                   names, reference_names, device, not_computed)
    summary += segmentation_summary(seg)
    intensity = class_intensity(cases, paired, sm.input.reference, names, metas, reference_metas,
                                reference_names=reference_names, not_computed=not_computed)
    summary.append(intensity_summary(intensity))
    summary += through_plane_summary(cases, sm.input.reference, metas, reference_metas)
    summary += three_plane_summary(cases, sm.input.reference, metas, reference_metas, metrics, device)
    copies, pixel_audit, feature_audit = memorisation_cases(
        generated, sm.input.train_reference, sm.input.reference, metrics["memorisation_threshold"], features)
    summary += memorisation_summary(pixel_audit, feature_audit)
    write_tsv(sm.output.memorisation, copies, MEMORISATION_COLUMNS)
    write_tsv(sm.output.segmentation, seg, SEG_COLUMNS)
    write_tsv(sm.output.class_intensity, intensity, INTENSITY_COLUMNS)
    write_tsv(sm.output.metrics, summary, COLUMNS)
    write_tsv(sm.output.per_case, per_case, CASE_COLUMNS)
