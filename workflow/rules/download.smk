# Stage 1: make a dataset available under resources/raw/<dataset>/ with a cases.tsv.
# A checkpoint: the case list is known only once this has run. A local rule:
# cluster compute nodes often have no internet. Archives are kept under
# resources/archives/<dataset>/ so an interrupted download resumes.


checkpoint download:
    output:
        cases="resources/raw/{dataset}/cases.tsv",
        # A new token on every run, read by the split: it reruns whenever the download ran (below).
        ran="resources/raw/{dataset}/download_run.txt",
    params:
        source=lambda w: download_source(w.dataset),
    log:
        "logs/download/{dataset}.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/download.py"
