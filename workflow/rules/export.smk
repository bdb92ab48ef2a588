# Stage 10: the synthetic training cases as an nnU-Net v2 raw dataset (local: only copies files).


rule export:
    input:
        unpack(export_inputs),
    output:
        directory("results/export/{experiment}/nnUNet_raw"),
    params:
        settings=canonical({**config["export"], "splits": export_parts()}),
        naming=canonical(export_naming()),
        labels=lambda w: labels_of(experiment_dataset(w)),
        real_labels=lambda w: labels_of(image_dataset(w)),
        modality=lambda w: config["datasets"][image_dataset(w)]["modality"],
    log:
        "logs/export/{experiment}.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/export.py"
