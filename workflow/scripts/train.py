"""Snakemake script: train (or resume) one experiment, in one process per GPU when it has several."""

import logging
from pathlib import Path

from medsynth.data.split import check_training_patients
from medsynth.io.logs import log_to
from medsynth.train.launch import launch, write_spec
from medsynth.train.run import run_experiment

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    sm = snakemake  # noqa: F821
    # One training process per GPU (torchrun inside the job) when the experiment asks for several.
    processes = max(1, int(sm.resources.gpu))
    # params.settings decide what the run learns (the rerun trigger); the settings that change only how
    # it runs (device, cadences, memory; medsynth.train.keys.HOW_KEYS) and other modes' weights come from
    # the config, so changing them reruns nothing (a finished run would resume and do nothing).
    settings = {**sm.config["experiments"][sm.wildcards.experiment]["train"], **sm.params.settings}
    spec = dict(
        settings=settings,
        labels=sm.params.labels,
        run_dir=sm.params.run_dir,
        train_files=list(sm.input.train),
        val_files=list(sm.input.val),
        image_train_files=list(sm.input.get("images_train", [])),
        image_val_files=list(sm.input.get("images_val", [])),
        threads=max(1, sm.threads // processes),
        perceptual={**sm.params.metrics, "batch_size": sm.config["metrics"]["batch_size"]},
        real_stats=sm.input.real_stats,
    )
    # Before anything trains: no patient learnt from here (or by the generator it starts from) is one it
    # is validated or tested on.
    for warning in check_training_patients(Path(sm.input.split), sm.input.get("image_split"),
                                           sm.input.get("init_from"), sm.input.get("source_splits", []),
                                           sm.input.get("cases", [])):
        logging.getLogger("medsynth").warning(warning)
    if processes == 1:
        run_experiment(**spec)
    else:
        spec_file = write_spec(Path(sm.params.run_dir) / "launch.json", {**spec, "log": sm.log[0]})
        status = launch(spec_file, processes, output=Path(sm.log[0]))
        if status:
            raise SystemExit(status)
