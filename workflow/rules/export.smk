# Stage 10: the synthetic training cases as an nnU-Net v2 raw dataset, each audited for memorisation first:
# what is shared is what could leak a patient's scan. Local: it checks each case (grid, class ids, tissue
# under the labels: a volume read, ~0.5 s at AutoPET size) and hard-links generate's files.


rule audit_shared:
    input:
        unpack(audit_shared_inputs),
        manifest=rules.generate.output.manifest,
        cases=rules.generate.output.cases,
    output:
        "results/export/{experiment}/memorisation_audit.tsv",
    params:
        paired=lambda w: config["experiments"][w.experiment]["train"]["mode"] == "paired",
        parts=export_parts(),
        threshold=config["metrics"]["memorisation_threshold"],
    log:
        "logs/export/{experiment}_audit.log",
    benchmark:
        "benchmarks/export/{experiment}_audit.tsv"
    threads: config["metrics"]["threads"]
    resources:
        gpu=one_gpu,  # the nearest-slice search: ~1.6e11 slice pairs for AutoPET, weeks on CPU threads
        mem_mb=stage_mem_mb("audit_shared", held_bytes(("train_images", 2))),  # images, float16
        runtime=grows(120),  # AutoPET on a data-centre GPU: ~0.5-1 h (float64 products; docs/benchmarks.md)
    conda:
        ENV
    script:
        "../scripts/audit_shared.py"



rule export:
    input:
        unpack(export_inputs),
        audit=rules.audit_shared.output[0],
    output:
        directory("results/export/{experiment}/nnUNet_raw"),
    params:
        settings=canonical({**config["export"], "splits": export_parts()}),
        naming=canonical(export_naming()),
        labels=lambda w: labels_of(experiment_dataset(w)),
        real_labels=lambda w: labels_of(image_dataset(w)),
        modality=lambda w: config["datasets"][image_dataset(w)]["modality"],
        licences=export_licences,  # into dataset.json: whoever gets the export alone knows the data's terms
    log:
        "logs/export/{experiment}.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/export.py"
