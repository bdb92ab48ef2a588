# Pretrained weights for FID/KID/LPIPS and the real images' Inception statistics.
# Weights are fetched once by a local rule (compute nodes are often offline);
# the statistics of real images are computed once per dataset and split.


rule fetch_weights:
    output:
        status=f"{config['metrics']['weights_dir']}/status.json",
    params:
        settings=only(config["metrics"], ("perceptual", "weights_dir", "check_hash")),
    log:
        "logs/metrics/fetch_weights.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/fetch_weights.py"


rule real_stats:
    input:
        weights=rules.fetch_weights.output.status,
        slices=lambda w: case_slices(w.dataset, (w.part,)),
    output:
        "results/metrics/{dataset}/inception_{part}.npz",
    params:
        settings=only(config["metrics"], ("perceptual", "weights_dir", "check_hash")),
    wildcard_constraints:
        part="train|val|test",
    log:
        "logs/metrics/{dataset}_inception_{part}.log",
    benchmark:
        "benchmarks/metrics/{dataset}_inception_{part}.tsv"
    threads: config["metrics"]["threads"]
    resources:
        gpu=inception_gpu,  # Inception features; none without the weights
        mem_mb=stage_mem_mb("real_stats"),  # streams the slices
        runtime=grows(60),
    conda:
        ENV
    script:
        "../scripts/real_stats.py"


rule segmenter:
    input:
        slices=lambda w: case_slices(w.dataset, ("train",)),
    output:
        "results/segmenter/{dataset}/segmenter.pt",
    params:
        settings=only(config["metrics"], SEGMENTER_KEYS),
        labels=lambda w: labels_of(w.dataset),
    log:
        "logs/metrics/{dataset}_segmenter.log",
    benchmark:
        "benchmarks/metrics/{dataset}_segmenter.tsv"
    threads: config["metrics"]["segmenter_threads"]
    resources:
        gpu=dataset_gpu,
        mem_mb=stage_mem_mb("segmenter", held_bytes(("slices", 4))),  # float16 images, uint8 labels and masks
        runtime=grows(120),
    conda:
        ENV
    script:
        "../scripts/segmenter.py"
