# Stage 9b: does synthetic data help when labelled images are scarce? The low-data utility curve: segmenters
# on k real training patients, with and without synthetic images of label maps they do not cover, and on
# synthetic images only, scored on the real test split.


rule utility:
    input:
        # (a) with every training patient is the segmenter rule's model: the same U-Net, budget and seed.
        real_model=lambda w: f"results/segmenter/{image_dataset(w)}/segmenter.pt",
        real_train=lambda w: case_slices(image_dataset(w), ("train",)),
        # Synthetic: the generated samples of the training label maps and of the generate_from cohorts.
        label_train=utility_label_slices,
        manifest=rules.generate.output.manifest,
        cases=rules.generate.output.cases,
        test=lambda w: case_slices(image_dataset(w), ("test",)),
        # Patients: of the training cases (the draws) and the test cases (the bootstrap resamples patients).
        split=lambda w: checkpoints.split.get(dataset=image_dataset(w)).output.split,
    output:
        table="results/utility/{experiment}/utility.tsv",
        draws="results/utility/{experiment}/draws.tsv",
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
        # Up to 31 segmenters (autopet.yaml), each predicting every real test slice: on two CPU threads
        # 0.11 s per 256-px slice, AutoPET's ~25 k test slices in 46 minutes per segmenter.
        gpu=one_gpu,
        # Real and synthetic training slices, float16 images with uint8 labels and masks: 4 bytes a pixel.
        mem_mb=stage_mem_mb("utility", held_bytes(("real_train", 4), ("label_train", 4 * config["generate"]["samples"]))),
        # Per k and draw two segmenters, and one on synthetic images only: 20 minutes each (a few on a GPU
        # at 256 px): autopet.yaml's 31 fit in a cluster's usual one-day limit; a retry gets more.
        runtime=grows(60 + 20 * utility_trainings()),
    conda:
        ENV
    script:
        "../scripts/utility.py"
