# Stage 6: pick the checkpoint by a validation metric; export its EMA generator.


rule select:
    input:
        metrics=rules.train.output.metrics,
        checkpoints=rules.train.output.checkpoints,
    output:
        selected="results/select/{experiment}/selected.json",
        generator="results/select/{experiment}/generator.pt",
    params:
        run_dir=lambda w: f"results/train/{w.experiment}",
        metric=lambda w: config["experiments"][w.experiment].get("select_metric", config["select"]["metric"]),
        fallback=lambda w: config["experiments"][w.experiment].get("select_fallback", config["select"]["fallback"]),
        data=lambda w: {
            "labels": config["datasets"][experiment_dataset(w)]["labels"],
            "modality": config["datasets"][image_dataset(w)]["modality"],
            "mode": config["experiments"][w.experiment]["train"]["mode"],
            "preprocess": config["datasets"][image_dataset(w)]["preprocess"],
            "label_preprocess": config["datasets"][experiment_dataset(w)]["preprocess"],
            "slice": config["slice"],
        },
    log:
        "logs/select/{experiment}.log",
    conda:
        ENV
    script:
        "../scripts/select.py"
