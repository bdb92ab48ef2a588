"""Snakemake script: train (or resume) one experiment, in one process per GPU when it has several."""

from pathlib import Path

from medsynth.logs import log_to
from medsynth.train.launch import launch, write_spec
from medsynth.train.run import run_experiment

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    processes = max(1, int(sm.params.processes))
    spec = dict(
        settings=sm.params.settings,
        labels=sm.params.labels,
        run_dir=sm.params.run_dir,
        train_files=list(sm.input.train),
        val_files=list(sm.input.val),
        image_train_files=list(sm.input.get("images_train", [])),
        image_val_files=list(sm.input.get("images_val", [])),
        threads=max(1, sm.threads // processes),
        perceptual=sm.params.metrics,
        real_stats=sm.input.real_stats,
    )
    if processes == 1:
        run_experiment(**spec)
    else:
        spec_file = write_spec(Path(sm.params.run_dir) / "launch.json", {**spec, "log": sm.log[0]})
        status = launch(spec_file, processes, output=Path(sm.log[0]))
        if status:
            raise SystemExit(status)
