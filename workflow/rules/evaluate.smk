# Stage 8: metrics of the generated test set against the real test images.


rule evaluate:
    input:
        unpack(segmenter_input),  # none for an image-only image dataset
        manifest=rules.generate.output.manifest,
        cases=rules.generate.output.cases,
        real=lambda w: case_slices(experiment_dataset(w), ("test",)),
        meta=lambda w: case_meta(experiment_dataset(w), ("test",)),
        reference=lambda w: case_slices(image_dataset(w), ("test",)),
        # Each real case's intensity curve, for per-class intensity in HU (CT).
        reference_meta=lambda w: case_meta(image_dataset(w), ("test",)),
        # The memorisation audit's training set: the images the generator was trained to imitate.
        train_reference=lambda w: case_slices(image_dataset(w), ("train",)),
        real_stats=lambda w: f"results/metrics/{image_dataset(w)}/inception_test.npz",
        # ... and its Inception features, for the audit in feature space (when the weights exist).
        train_stats=lambda w: f"results/metrics/{image_dataset(w)}/inception_train.npz",
    output:
        metrics="results/evaluate/{experiment}/test_metrics.tsv",
        per_case="results/evaluate/{experiment}/per_case.tsv",
        segmentation="results/evaluate/{experiment}/segmentation.tsv",
        class_intensity="results/evaluate/{experiment}/class_intensity.tsv",
        memorisation="results/evaluate/{experiment}/memorisation.tsv",
    params:
        mode=lambda w: config["experiments"][w.experiment]["train"]["mode"],
        metrics=only(config["metrics"], (*PERCEPTUAL_KEYS, "memorisation_threshold")),
        labels=lambda w: labels_of(experiment_dataset(w)),
        # The image dataset's class names (matched to the experiment's by name); None: image-only.
        reference_labels=lambda w: label_names(image_dataset(w)),
        image_dataset=image_dataset,
    log:
        "logs/evaluate/{experiment}.log",
    benchmark:
        "benchmarks/evaluate/{experiment}.tsv"
    threads: config["metrics"]["threads"]
    resources:
        gpu=one_gpu,  # Inception and AlexNet features
        mem_mb=stage_mem_mb("evaluate", held_bytes(("train_reference", 2))),  # images, float16
        runtime=grows(120),
    conda:
        ENV
    script:
        "../scripts/evaluate.py"
