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
    threads: 2
    priority: 10  # as preprocess: before trainings take the cores one by one
    resources:
        mem_mb=grows(4000),
        runtime=grows(30),
    conda:
        ENV
    script:
        "../scripts/slice.py"
