# Stage 3, per case: axial slices at the training size around the body.


rule slice:
    input:
        unpack(slice_inputs),
    output:
        slices="results/slices/{dataset}/cases/{case}/slices.npz",
        png=directory("results/slices/{dataset}/cases/{case}/png"),
    params:
        settings=config["slice"],
    log:
        "logs/slice/{dataset}/{case}.log",
    threads: 2
    # Short jobs that unlock everything downstream: run them before a long training takes a core
    # (a 2-thread job cannot start beside a 1-thread training on 2 cores, and would wait it out).
    priority: 10
    resources:
        mem_mb=grows(4000),
        runtime=grows(30),
    conda:
        ENV
    script:
        "../scripts/slice.py"
