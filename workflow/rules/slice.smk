# Stage 3, per case: axial slices at the training size around the body.


rule slice:
    input:
        unpack(slice_inputs),
    output:
        slices="results/slices/{dataset}/cases/{case}/slices.npz",
        png=directory("results/slices/{dataset}/cases/{case}/png"),
    params:
        settings=lambda w: slice_settings(w.dataset),
    log:
        "logs/slice/{dataset}/{case}.log",
    threads: 1  # as preprocess (a second thread: 1.05 s instead of 1.2 s for an AutoPET-sized case)
    priority: 10  # as preprocess: before trainings take the cores one by one
    resources:
        mem_mb=grows(4000),
        runtime=case_minutes(1, batched=1),  # minutes (~1 s for a 400 x 400 x 326 CT); as preprocess
    conda:
        ENV
    script:
        "../scripts/slice.py"


# A batch of cases (cluster.cases_per_job), once all their slices are written: planned only when a
# profile puts it in one group with preprocess and slice (profiles/slurm, batches_planned). Needing
# the batch's slices, it joins their preprocessing and slicing into one connected group, which the
# cluster runs as one job. Its table says which cases that job made.
rule slice_batch:
    input:
        slices=batch_slices,
    output:
        "results/slices/{dataset}/batches/{batch}.tsv",
    log:
        "logs/slice_batch/{dataset}/{batch}.log",
    wildcard_constraints:
        batch=r"\d+",
    resources:
        mem_mb=1000,
        runtime=1,  # minutes: it reads the slice counts; a group job adds it to its cases' time
    conda:
        ENV
    script:
        "../scripts/slice_batch.py"
