# Stage 5: train one OASIS GAN per experiment (GPU when present).
# Only the final tables are declared outputs: Snakemake deletes the outputs of
# a failed job, and the checkpoints under results/train/<experiment>/ must
# survive a crash or time-out so that rerunning the same command resumes.


rule train:
    input:
        unpack(unpaired_image_inputs),
        unpack(init_from_input),
        unpack(unlisted_ids_checked),
        split=lambda w: f"results/split/{experiment_dataset(w)}/split.tsv",
        train=lambda w: case_slices(experiment_dataset(w), ("train",)),
        val=lambda w: case_slices(experiment_dataset(w), ("val",)),
        real_stats=lambda w: f"results/metrics/{image_dataset(w)}/inception_val.npz",
    output:
        metrics="results/train/{experiment}/metrics.tsv",
        losses="results/train/{experiment}/losses.tsv",
        checkpoints="results/train/{experiment}/checkpoints.tsv",
    params:
        run_dir=lambda w: f"results/train/{w.experiment}",
        settings=train_settings,
        labels=lambda w: labels_of(experiment_dataset(w)),
        metrics=only(config["metrics"], PERCEPTUAL_KEYS),
    log:
        "logs/train/{experiment}.log",
    benchmark:
        "benchmarks/train/{experiment}.tsv"
    threads: lambda w: config["experiments"][w.experiment]["threads"]
    resources:
        gpu=experiment_gpus,
        mem_mb=train_mem_mb,
        # One job's share of a long training: at the limit it checkpoints, and the retry resumes
        # (constant, not growing: every job of the chain does the same kind of work).
        runtime=1440,
    conda:
        ENV
    script:
        "../scripts/train.py"
