# medsynth: label maps -> synthetic medical images (OASIS GAN).
# Stages live in workflow/rules/, one file each; helpers in common.smk.

from snakemake.utils import min_version

min_version("9.0")


# The demo config applies only when no --configfile is given: a user's config
# replaces it rather than being merged into it (which would add the demo's
# phantom dataset and experiment to every run).
if not config:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/slice.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/utility.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"


rule all:
    input:
        all_targets(),
        batch_tables,  # only with a profile that groups the per-case rules
    localrule: True
    default_target: True
