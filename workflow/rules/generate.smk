# Stage 7: K samples per label map of the generate.splits parts, PNG and 3D NIfTI on the source grid: every
# labelled slice, over the whole labelled extent (not only the slices and crops training saw).


rule generate:
    input:
        unpack(generate_case_inputs),
        generator=rules.select.output.generator,
    output:
        manifest="results/generate/{experiment}/manifest.tsv",
        cases=directory("results/generate/{experiment}/cases"),
    params:
        settings=only(config["generate"], ("samples", "splits", "seed", "noise", "noise_sigma_mm", "inplane")),
        dataset=experiment_dataset,
    log:
        "logs/generate/{experiment}.log",
    benchmark:
        "benchmarks/generate/{experiment}.tsv"
    threads: config["generate"]["threads"]
    resources:
        gpu=one_gpu,
        mem_mb=grows(16000),
        runtime=grows(120),
    conda:
        ENV
    script:
        "../scripts/generate.py"
