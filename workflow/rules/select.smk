# Stage 6: pick the checkpoint by a validation metric; export its EMA generator with its model card
# (completed with the test metrics by rule model_card, after evaluation).


rule select:
    input:
        metrics=rules.train.output.metrics,
        checkpoints=rules.train.output.checkpoints,
        # The model card's training data: patients (split tables), slices, spacing (preprocessing meta).
        splits=learnt_splits,
        slices=lambda w: case_slices(experiment_dataset(w), ("train",)),
        image_slices=lambda w: case_slices(image_dataset(w), ("train",)) if len(card_datasets(w)) > 1 else [],
        meta=lambda w: case_meta(image_dataset(w), ("train",)),
    output:
        selected="results/select/{experiment}/selected.json",
        generator="results/select/{experiment}/generator.pt",
    params:
        run_dir=lambda w: f"results/train/{w.experiment}",
        metric=lambda w: config["experiments"][w.experiment].get("select_metric", config["select"]["metric"]),
        fallback=lambda w: config["experiments"][w.experiment].get("select_fallback", config["select"]["fallback"]),
        # What medsynth generate needs inside generator.pt (the image dataset's intensity mapping;
        # the label dataset's grid).
        data=lambda w: canonical(generator_data(
            labels_of(experiment_dataset(w)), config["datasets"][image_dataset(w)]["modality"],
            config["experiments"][w.experiment]["train"]["mode"], preprocess_settings(image_dataset(w)),
            only(config["datasets"][experiment_dataset(w)]["preprocess"], ("spacing_xy",)),
            only(config["slice"], SLICE_KEYS))),
        card=lambda w: canonical(card_inputs(
            config["datasets"], card_datasets(w), only(config["experiments"][w.experiment]["train"], CARD_TRAIN_KEYS),
            config["slice"]["size"])),
    log:
        "logs/select/{experiment}.log",
    conda:
        ENV
    script:
        "../scripts/select.py"


rule model_card:
    input:
        unpack(shared_audit_input),  # the memorisation audit of what the export ships
        unpack(utility_card_input),  # the utility curve, stated in sentences
        generator=rules.select.output.generator,
        metrics="results/evaluate/{experiment}/test_metrics.tsv",
        # Each dataset's training grid (selection's card has the image dataset's; unpaired, the label maps'
        # differs): results/preprocess/<dataset>/<case>/meta.json, grouped by dataset.
        meta=lambda w: [m for d in card_datasets(w) for m in case_meta(d, ("train",))],
    output:
        card="results/select/{experiment}/MODEL_CARD.md",
        shared=directory("results/share/{experiment}"),
    params:
        licences=lambda w: {d: config["datasets"][d].get("licence") for d in card_datasets(w)},
        source_licences=source_licences,  # a fine-tuned generator's sources among the experiments
        refuse_flagged=config["export"]["refuse_flagged"],
        utility_skipped=lambda w: utility_skipped(w.experiment),
    log:
        "logs/model_card/{experiment}.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/model_card.py"
