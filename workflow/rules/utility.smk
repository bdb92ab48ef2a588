# Stage 9b: does synthetic data help? The segmenter trained on real, synthetic and real + synthetic
# training images, scored on the real test split.


rule utility:
    input:
        # Training (a) is the segmenter rule's: the same U-Net, budget and seed as (b) and (c).
        real_model=lambda w: f"results/segmenter/{image_dataset(w)}/segmenter.pt",
        real_train=lambda w: case_slices(image_dataset(w), ("train",)),
        # Synthetic: the generated samples of the label dataset's training label maps.
        label_train=lambda w: case_slices(experiment_dataset(w), ("train",)),
        cases=rules.generate.output.cases,
        test=lambda w: case_slices(image_dataset(w), ("test",)),
        # The test cases' patients: the bootstrap resamples patients (several studies of one are alike).
        split=lambda w: checkpoints.split.get(dataset=image_dataset(w)).output.split,
    output:
        "results/utility/{experiment}/utility.tsv",
    params:
        segmenter=only(config["metrics"], SEGMENTER_KEYS),
        utility=canonical(config["utility"]),
        labels=lambda w: labels_of(experiment_dataset(w)),
        # The image dataset's class names: its real slices are relabelled into the experiment's by name.
        image_labels=lambda w: label_names(image_dataset(w)),
        image_dataset=image_dataset,
    log:
        "logs/utility/{experiment}.log",
    benchmark:
        "benchmarks/utility/{experiment}.tsv"
    threads: config["metrics"]["segmenter_threads"]
    resources:
        # Real and synthetic training slices, float16 images with uint8 labels and masks: 4 bytes a pixel.
        mem_mb=stage_mem_mb("utility", held_bytes(("real_train", 4), ("label_train", 4 * config["generate"]["samples"]))),
        runtime=grows(120),
    conda:
        ENV
    script:
        "../scripts/utility.py"
