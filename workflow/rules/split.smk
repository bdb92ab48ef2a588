# Stage 4: patient-level train/val/test split, and the OASIS-style folder view of it.


checkpoint split:
    input:
        cases=rules.download.output.cases,
        # Whenever the download ran (a setting or its script changed, --forcerun), the split runs too. A
        # download that wrote the same table left Snakemake 9.27 with the split planned, then dropped (its
        # input's content unchanged), and the jobs after it started with their inputs unresolved (train:
        # IsADirectoryError '.'). Writing the same split, nothing after it reruns.
        download_ran=rules.download.output.ran,
    output:
        split="results/split/{dataset}/split.tsv",
    params:
        settings=canonical(config["split"]),
    log:
        "logs/split/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/split.py"


rule oasis_view:
    input:
        split=rules.split.output.split,
        png=lambda w: case_paths(
            w.dataset, split_of(w.dataset, ("train", "val", "test")), "results/slices/{dataset}/cases/{case}/png"
        ),
    output:
        directory("results/slices/{dataset}/oasis"),
    log:
        "logs/split/{dataset}_oasis_view.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/oasis_view.py"
