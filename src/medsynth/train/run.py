"""One experiment's training from slice files: shared by the Snakemake rule and ``medsynth train``."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import torch

from medsynth.data.labels import LabelTable
from medsynth.io.stamps import digest_of, file_stamps
from medsynth.io.tables import read_tsv
from medsynth.train import distributed as ddp
from medsynth.data.slice_set import load_slices
from medsynth.data.slicing import unlearnt_classes
from medsynth.train.failures import refuse_repeated
from medsynth.train.loop import TrainSettings, train

log = logging.getLogger(__name__)


def split_files(results: Path, dataset: str, parts: Sequence[str]) -> list[Path]:
    """Slice files of a dataset's cases in the given split parts, found from ``split.tsv``."""
    table = Path(results) / "split" / dataset / "split.tsv"
    cases = sorted(r["case_id"] for r in read_tsv(table) if r["part"] in parts)
    files = [Path(results) / "slices" / dataset / "cases" / c / "slices.npz" for c in cases]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"slices missing for {len(missing)} case(s), e.g. {missing[0]}; "
                                "run the data stages first (snakemake --until oasis_view)")
    return files


def inputs_digest(settings: Mapping, labels: Sequence[Mapping], files: Sequence[str | Path]) -> str:
    """What the run's fingerprint is derived from, known before the data are read: the settings, the label
    table, and each input file's path, size and modification time (train.init_from's among them)."""
    init_from = settings.get("init_from") or ""
    return digest_of({"settings": dict(settings), "labels": [dict(e) for e in labels],
                      "files": file_stamps([*files, *([init_from] if init_from else [])])})[:16]


def run_experiment(
    settings: Mapping,
    labels: Sequence[Mapping],
    run_dir: Path,
    train_files: Sequence[str | Path],
    val_files: Sequence[str | Path],
    image_train_files: Sequence[str | Path] = (),
    image_val_files: Sequence[str | Path] = (),
    threads: int | None = None,
    perceptual: Mapping | None = None,
    real_stats: Path | None = None,
) -> dict:
    parsed = TrainSettings.from_dict(dict(settings))
    inputs = inputs_digest(settings, labels, [*train_files, *val_files, *image_train_files, *image_val_files])
    # A failure recorded twice from this very checkpoint is refused before the slices (tens of GB) are read.
    refuse_repeated(Path(run_dir) / "checkpoints", inputs=inputs)
    if threads:
        torch.set_num_threads(threads)  # the CPU share the scheduler gave this job
    unpaired = parsed.mode == "unpaired"
    cache = Path(run_dir) / "cache"
    rank, world_size, _ = ddp.world()
    if world_size > 1:
        cache = cache / f"rank{rank}"  # each process writes and maps its own spill files

    def load(files, name, context=parsed.context_slices):
        return load_slices(files, parsed.ram_cache_gb, cache / name, context)

    absent = unlearnt_classes(train_files, LabelTable.from_config(labels).names)
    if absent:
        log.warning("classes in no training slice: %s; the generator cannot learn them, and what it paints "
                    "under them is not tissue it learnt (the model card lists them)", ", ".join(absent))
    result = train(
        parsed,
        LabelTable.from_config(labels).num_classes,
        load(train_files, "train"),
        load(val_files, "val"),
        Path(run_dir),
        config={"train": dict(settings), "labels": [dict(e) for e in labels]},
        images_train=load(image_train_files, "images_train", 0) if unpaired else None,  # images only
        images_val=load(image_val_files, "images_val", 0) if unpaired else None,
        perceptual=dict(perceptual) if perceptual else None,
        real_stats=Path(real_stats) if real_stats else None,
        inputs_id=inputs,
    )
    # The slices spilled beyond ram_cache_gb (tens of GB a process at AutoPET's size): a finished run no longer
    # reads them, and a later job writes them again (so does a stopped run's retry, which finds them here).
    shutil.rmtree(cache, ignore_errors=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """One torchrun worker: ``python -m medsynth.train.run SPEC.json`` (see ``train.launch``).

    The spec holds ``run_experiment``'s keyword arguments and, under ``log``,
    the file every worker appends its log to.
    """
    import sys

    from medsynth.io.logs import log_to

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m medsynth.train.run SPEC.json")
    spec = json.loads(Path(args[0]).read_text())
    with log_to(spec.pop("log", None)):
        try:
            run_experiment(**spec)
        finally:
            ddp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
