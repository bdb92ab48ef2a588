# Stage 1: make a dataset available under resources/raw/<dataset>/ with a cases.tsv.
# A checkpoint: the case list is known only once this has run.


checkpoint download:
    output:
        cases="resources/raw/{dataset}/cases.tsv",
    params:
        source=lambda w: {
            k: v
            for k, v in config["datasets"][w.dataset].items()
            if k in ("source", "modality", "phantom", "local")
        },
    log:
        "logs/download/{dataset}.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/download.py"
