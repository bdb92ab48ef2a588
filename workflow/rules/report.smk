# Stage 9: figures and a summary under reports/<experiment>/ (local rules: cheap, login node).


rule report_curves:
    input:
        metrics=rules.train.output.metrics,
        losses=rules.train.output.losses,
        selected=rules.select.output.selected,
    output:
        metrics=report(
            "reports/{experiment}/metric_curves.png",
            caption="../report/metric_curves.rst",
            category="{experiment}",
        ),
        losses=report(
            "reports/{experiment}/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="{experiment}",
        ),
    params:
        settings=only(config["report"], ("dpi", "loss_smoothing")),
    log:
        "logs/report/{experiment}_curves.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/report_curves.py"


rule report_samples:
    input:
        manifest=rules.generate.output.manifest,
        cases=rules.generate.output.cases,
        real=lambda w: case_slices(experiment_dataset(w), ("test",)),
        # The grid spacing, for the side views' aspect.
        meta=lambda w: case_meta(experiment_dataset(w), ("test",)),
    output:
        grid=report(
            "reports/{experiment}/samples.png",
            caption="../report/samples.rst",
            category="{experiment}",
        ),
        strip=report(
            "reports/{experiment}/case_strip.png",
            caption="../report/case_strip.rst",
            category="{experiment}",
        ),
        side=report(
            "reports/{experiment}/side_views.png",
            caption="../report/side_views.rst",
            category="{experiment}",
        ),
    params:
        settings=only(config["report"], ("dpi", "grid_rows")),
        labels=lambda w: labels_of(experiment_dataset(w)),
        mode=lambda w: config["experiments"][w.experiment]["train"]["mode"],
    log:
        "logs/report/{experiment}_samples.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/report_samples.py"


rule report_intensity:
    input:
        table=rules.evaluate.output.class_intensity,
    output:
        figure=report(
            "reports/{experiment}/class_intensity.png",
            caption="../report/class_intensity.rst",
            category="{experiment}",
        ),
    params:
        settings=only(config["report"], ("dpi",)),
    log:
        "logs/report/{experiment}_intensity.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/report_intensity.py"


rule report_memorisation:
    input:
        table=rules.evaluate.output.memorisation,
        cases=rules.generate.output.cases,
        real=lambda w: case_slices(experiment_dataset(w), ("test",)),
        train_reference=lambda w: case_slices(image_dataset(w), ("train",)),
    output:
        figure=report(
            "reports/{experiment}/memorisation.png",
            caption="../report/memorisation.rst",
            category="{experiment}",
        ),
    params:
        settings=only(config["report"], ("dpi",)),
    log:
        "logs/report/{experiment}_memorisation.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/report_memorisation.py"


rule report_utility:
    input:
        table=rules.utility.output.table,
        draws=rules.utility.output.draws,
    output:
        figure=report(
            "reports/{experiment}/utility_curve.png",
            caption="../report/utility.rst",
            category="{experiment}",
        ),
    params:
        settings=only(config["report"], ("dpi",)),
    log:
        "logs/report/{experiment}_utility.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/report_utility.py"


rule report_summary:
    input:
        selected=rules.select.output.selected,
        test_metrics=rules.evaluate.output.metrics,
        segmentation=rules.evaluate.output.segmentation,
        class_intensity=rules.evaluate.output.class_intensity,
        metric_curves=rules.report_curves.output.metrics,
        loss_curves=rules.report_curves.output.losses,
        samples=rules.report_samples.output.grid,
        strip=rules.report_samples.output.strip,
        side=rules.report_samples.output.side,
        intensity_plot=rules.report_intensity.output.figure,
        memorisation_plot=rules.report_memorisation.output.figure,
        utility=lambda w: [rules.utility.output.table, rules.report_utility.output.figure] if utility_planned(w.experiment) else [],
    output:
        md="reports/{experiment}/summary.md",
        html="reports/{experiment}/summary.html",
    params:
        utility_skipped=lambda w: utility_skipped(w.experiment),
        mode=lambda w: config["experiments"][w.experiment]["train"]["mode"],  # what the real column is
    log:
        "logs/report/{experiment}_summary.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/report_summary.py"
