"""The ``medsynth`` command line: the package's functions outside Snakemake.

    medsynth phantom OUT_DIR [--cases N] [--seed S]   write the built-in phantom cohort
    medsynth info CHECKPOINT [--card]                 what a checkpoint holds (step, model, metrics, version,
                                                      the model card); --card: the card as Markdown
    medsynth train --config CFG --experiment NAME     train (or resume) an experiment from the data
                   [--run-dir DIR] [--results DIR]    stages' results (multi-GPU: torchrun ... -m medsynth.cli train)
    medsynth generate --labels DIR --checkpoint G     synthetic volumes for any folder of label maps
                      --out DIR [--samples K]         (G: results/select/<experiment>/generator.pt)
    medsynth STAGE [--config CFG] [--experiment NAME] one workflow stage and what it needs, as the workflow
                   [--cores N] [--dry-run]            runs it (STAGE: preprocess, slice, split, select, evaluate,
                                                      utility, export, report; Snakemake plans the inputs)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import medsynth


def _phantom(args: argparse.Namespace) -> int:
    from medsynth.data.phantom import write_cohort

    table = write_cohort(Path(args.out_dir), args.cases, args.seed, tuple(args.shape), tuple(args.spacing))
    print(f"wrote {args.cases} phantom cases; table: {table}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from medsynth.io.checkpoint import load_checkpoint

    state = load_checkpoint(Path(args.checkpoint))
    if args.card:
        if not state.get("card"):
            raise ValueError(f"{args.checkpoint}: holds no model card (cards come with generators that "
                             "select exported, results/select/<experiment>/generator.pt)")
        from medsynth.sharing.card_text import render

        print(render(state["card"]))
        return 0
    summary = {k: state[k] for k in ("step", "version", "num_classes", "classes", "slice_size", "model", "metrics",
                                     "best", "selected_by", "init_from", "settings", "card") if k in state}
    summary["contents"] = sorted(state)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _train(args: argparse.Namespace) -> int:
    import logging

    from medsynth.config.load import load_config
    from medsynth.train.run import run_experiment, split_files

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(Path(args.config))  # the schema and checks the workflow applies
    experiments = config["experiments"]
    if args.experiment not in experiments:
        raise KeyError(f"{args.config}: no experiment {args.experiment!r}; experiments: {sorted(experiments)}")
    exp = experiments[args.experiment]
    settings = dict(exp["train"])
    labels = config["datasets"][exp["dataset"]]["labels"]
    results = Path(args.results)
    run_dir = Path(args.run_dir) if args.run_dir else results / "train" / args.experiment
    images = exp.get("images_from", exp["dataset"])
    unpaired = settings.get("mode") == "unpaired"
    _check_patients(config["experiments"], args.experiment, results)
    run_experiment(
        settings, labels, run_dir,
        split_files(results, exp["dataset"], ["train"]), split_files(results, exp["dataset"], ["val"]),
        split_files(results, images, ["train"]) if unpaired else [],
        split_files(results, images, ["val"]) if unpaired else [],
        perceptual=config.get("metrics"),
        real_stats=stats if (stats := results / "metrics" / images / "inception_val.npz").is_file() else None,
    )
    return 0


def _check_patients(experiments: dict, name: str, results: Path) -> None:
    """The workflow's patient checks before a training (``split.check_training_patients``), on the split
    tables under ``results``: unpaired, one part per patient in both datasets; fine-tuning from an experiment
    of the config, no patient its weights learnt from (up the init_from chain) held out here."""
    import logging

    from medsynth.config.lineage import chain_datasets
    from medsynth.data.split import check_training_patients

    def table(dataset: str) -> Path:
        return results / "split" / dataset / "split.tsv"

    exp = experiments[name]
    pair = [exp["dataset"], exp["images_from"]] if exp["train"].get("mode") == "unpaired" else [exp["dataset"]]
    # The download's cases tables beside the results (resources/raw/<dataset>/cases.tsv), where they are.
    cases = [results.parent / "resources" / "raw" / d / "cases.tsv" for d in pair]
    warnings = check_training_patients(
        table(pair[0]), table(pair[1]) if len(pair) == 2 else None, exp["train"].get("init_from"),
        # init_from paths in the config are the workflow's, relative to the folder holding results/.
        [table(d) for d in chain_datasets(experiments, name, str(results.resolve().parent))],
        cases if len(pair) == 2 and all(c.is_file() for c in cases) else ())
    for warning in warnings:
        logging.getLogger("medsynth").warning(warning)


def _generate(args: argparse.Namespace) -> int:
    from medsynth.inference.generate_cases import MANIFEST_COLUMNS, GenerateSettings, generate_from_label_files
    from medsynth.io.nifti import nifti_ending
    from medsynth.io.tables import write_tsv
    from medsynth.models.devices import resolve_device

    folder = Path(args.labels)
    files = sorted(p for p in folder.iterdir() if nifti_ending(p)) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: no .nii or .nii.gz label maps found")
    settings = GenerateSettings(args.samples, args.seed, args.batch, resolve_device(args.device), args.noise,
                                args.noise_sigma_mm, args.inplane)
    rows = generate_from_label_files(Path(args.checkpoint), files, Path(args.out), settings)
    table = write_tsv(Path(args.out) / "manifest.tsv", rows, MANIFEST_COLUMNS)
    print(f"wrote {len(rows)} volumes for {len(files)} label maps; manifest: {table}")
    return 0


# A workflow stage by its rule, and by the file it makes for one experiment.
STAGE_RULES = {"preprocess": "preprocess", "slice": "slice", "split": "split", "select": "select",
               "evaluate": "evaluate", "utility": "utility", "export": "export", "report": "report_summary"}
EXPERIMENT_TARGETS = {"select": "results/select/{}/generator.pt", "evaluate": "results/evaluate/{}/test_metrics.tsv",
                      "utility": "results/utility/{}/utility.tsv", "export": "results/export/{}/nnUNet_raw",
                      "report": "reports/{}/summary.html"}


def stage_command(stage: str, config: str | None, experiment: str | None, cores: int, dry_run: bool) -> list[str]:
    """The Snakemake command that runs ``stage`` (for one experiment, or every one) and what it needs: the
    stage's function gets exactly the inputs the workflow gives it."""
    snakefile = Path(__file__).resolve().parents[2] / "workflow" / "Snakefile"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--cores", str(cores)]
    cmd += ["--configfile", config] if config else []
    if experiment and stage in EXPERIMENT_TARGETS:
        cmd.append(EXPERIMENT_TARGETS[stage].format(experiment))
    elif experiment:
        raise ValueError(f"{stage} runs per dataset, not per experiment: leave out --experiment")
    else:
        cmd += ["--until", STAGE_RULES[stage]]
    return cmd + (["--dry-run"] if dry_run else [])


def _stage(args: argparse.Namespace) -> int:
    import subprocess

    cmd = stage_command(args.command, args.config, args.experiment, args.cores, args.dry_run)
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medsynth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"medsynth {medsynth.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="write the built-in synthetic cohort")
    p.add_argument("out_dir")
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=int, nargs=3, default=[256, 256, 32], metavar=("X", "Y", "Z"))
    p.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 3.0], metavar=("SX", "SY", "SZ"))
    p.set_defaults(func=_phantom)

    p = sub.add_parser("train", help="train or resume an experiment of a workflow config outside Snakemake")
    p.add_argument("--config", required=True, help="workflow config (YAML)")
    p.add_argument("--experiment", required=True)
    p.add_argument("--run-dir", help="default: <results>/train/<experiment>")
    p.add_argument("--results", default="results", help="results folder of the data stages (default: results)")
    p.set_defaults(func=_train)

    p = sub.add_parser("generate", help="synthetic volumes for a folder of label maps")
    p.add_argument("--labels", required=True, help="folder of label maps (.nii.gz), values as in training")
    p.add_argument("--checkpoint", required=True, help="exported generator (results/select/<experiment>/generator.pt)")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--noise", choices=["volume", "slice"], default="volume",
                   help="one noise draw per volume (default) or per slice")
    p.add_argument("--noise-sigma-mm", type=float, default=0.0,
                   help="volume noise, spatial noise map: its smoothing along z in mm (0: one map for all slices)")
    p.add_argument("--inplane", choices=["canvas", "tiles"], default="tiles",
                   help="each slice's labelled extent in overlapping tiles of the training size, blended "
                        "(default), or on one canvas (faster)")
    p.set_defaults(func=_generate)

    p = sub.add_parser("info", help="print what a medsynth checkpoint holds")
    p.add_argument("checkpoint")
    p.add_argument("--card", action="store_true", help="print the generator's model card (Markdown)")
    p.set_defaults(func=_info)

    for stage in STAGE_RULES:
        p = sub.add_parser(stage, help=f"run the workflow's {stage} stage and what it needs")
        p.add_argument("--config", help="workflow config (default: the demo's config/config.yaml)")
        p.add_argument("--experiment", help="only this experiment's outputs (stages after training)")
        p.add_argument("--cores", type=int, default=1)
        p.add_argument("--dry-run", action="store_true", help="print what would run")
        p.set_defaults(func=_stage)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError, KeyError) as exc:
        print(f"medsynth {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
