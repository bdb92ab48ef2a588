# Stage 2, per case: canonical orientation, in-plane spacing, body mask, intensity window.


rule preprocess:
    input:
        unpack(preprocess_inputs),
    output:
        image="results/preprocess/{dataset}/{case}/image.nii.gz",
        label="results/preprocess/{dataset}/{case}/label.nii.gz",
        mask="results/preprocess/{dataset}/{case}/mask.nii.gz",
        meta="results/preprocess/{dataset}/{case}/meta.json",
        qc="results/preprocess/{dataset}/{case}/qc.png",
    params:
        modality=lambda w: config["datasets"][w.dataset]["modality"],
        settings=lambda w: preprocess_settings(w.dataset),
        labels=lambda w: labels_of(w.dataset),
        series=lambda w: case_series(w.dataset, w.case),
    log:
        "logs/preprocess/{dataset}/{case}.log",
    benchmark:
        "benchmarks/preprocess/{dataset}/{case}.tsv"
    # One thread: with two, a data job never fits beside a running 1-thread training on 2 cores, whatever
    # its priority (the demo's MR cases waited 4.5 minutes for the first training, 13:58 in all). A second
    # thread saves ~0.5 s of ~3 s on an AutoPET-sized CT for 60 % more CPU time (docs/architecture.md).
    threads: 1
    priority: 10  # data jobs first, before the trainings take the cores one by one
    resources:
        mem_mb=grows(8000),  # a 512 x 512 x 1000 CT needs a few GB; more on a retry
        # Minutes; a 400 x 400 x 326 CT (AutoPET) takes ~5 s. A cluster job of a batch of cases
        # asks for the sum over its cases: slice's minute covers both (case_minutes).
        runtime=case_minutes(2, batched=0),
    conda:
        ENV
    script:
        "../scripts/preprocess.py"


# Runs only for a case whose files are missing or whose output folder is taken by a file
# (case_paths in common.smk puts it in place of the case's files): it fails with the reason,
# and --keep-going goes on with the other cases.
rule case_check:
    input:
        cases=rules.download.output.cases,
    output:
        "logs/case_check/{dataset}/{case}.failed",
    params:
        outputs=lambda w: case_outputs(w.dataset, w.case),
    log:
        "logs/case_check/{dataset}/{case}.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/case_check.py"
