"""Does the workflow scale to a thousand patients? Planning, submissions, per-case overhead, memory.

    python bench/scale.py [--cases 100 300 1000] [--parts planning overhead memory] [--cache DIR]

Phantom cohorts of small volumes (32 x 32 x 8 at 12 mm; cached under ``--cache``, default
<temp dir>/medsynth-scale), with the tiny experiment of the workflow tests so that every stage is in
the plan. Per cohort size:

- ``plan before``: ``snakemake -n`` once the download and split checkpoints have run (the per-case
  jobs are then known) and before any data job: median seconds of 3, and peak RSS;
- ``plan after``: the same with every case's preprocess and slice outputs on disk (written as
  placeholders: planning reads file times, not contents; ``--parts overhead`` checks the
  placeholders against a real run);
- ``no-op``: ``snakemake -n`` on a data-only config (no experiments) whose outputs all exist;
- ``submissions``: the jobs the SLURM profile would submit (``--workflow-profile profiles/slurm``,
  dry run): its group jobs plus its ungrouped non-local jobs, against the per-case data jobs.

``overhead``: a 20-case cohort's data stages run for real on this machine (seconds per data job,
start-up included), and the no-op time there against the placeholder cohort of the same size.
``snakemake -n`` on the demo's config is also timed (it needs a finished demo: ``--demo DIR``).

``memory``: peak RSS of the functions behind the heavy rules (training-data loading, generation,
evaluation, the memorisation audits, the utility benchmark), each in a fresh process
(``tests/helpers/memory_run.py``), on synthetic sets 1x, 4x and 16x the demo's (2 test cases of 32
slices at 64 px; 4 training cases per test case pair, held up to 20 MB by training-data loading);
then at 1x with slices of 128 and 256 px; then evaluate and real_stats with Inception and AlexNet
(random weights of the real architectures, ``tests/conftest.py``) on 1 test case of 16 slices.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
from tiny_workflow import LABELS, no_controller_env, planned_jobs  # noqa: E402

SHAPE, SPACING = [32, 32, 8], [12.0, 12.0, 8.0]


def config(n: int, experiments: bool = True) -> dict:
    """A phantom cohort of ``n`` small cases and (``experiments``) the tiny paired experiment."""
    cfg = {
        "datasets": {"phantom": {"source": "phantom", "modality": "CT", "labels": LABELS,
                                 "phantom": {"n_cases": n, "seed": 1, "shape": SHAPE, "spacing": SPACING},
                                 "preprocess": {"spacing_xy": 12.0}}},
        "slice": {"size": 32},
        "split": {"seed": 0, "ratios": {"train": 0.8, "val": 0.1, "test": 0.1}},
        "metrics": {"perceptual": "off"},
    }
    if experiments:
        cfg["experiments"] = {"tiny": {"dataset": "phantom", "train": {"steps": 4, "batch_size": 2,
                                                                        "device": "cpu"}}}
    return cfg


def snakemake(work: Path, cfg: dict, *args: str, timeout: int = 1800) -> tuple[subprocess.CompletedProcess, float,
                                                                                 int]:
    """Run Snakemake on ``work`` with ``cfg``: (result, seconds, peak RSS in MB) of that process."""
    cfg_file = work / f"config-{abs(hash(json.dumps(cfg, sort_keys=True)))}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"),
           "--directory", str(work), "--configfile", str(cfg_file), "--cores", "2", *args]
    t = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=no_controller_env())
    seconds = time.perf_counter() - t
    rss = int(result.stderr.strip().splitlines()[-1]) // 1024 if result.stderr.strip() else 0
    if result.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed in {work}:\n{result.stderr[-3000:]}")
    return result, seconds, rss


def timed(work: Path, cfg: dict, *args: str, repeat: int = 3) -> tuple[float, int, subprocess.CompletedProcess]:
    """Median seconds and largest peak RSS (MB) of ``repeat`` runs, and the last result."""
    runs = [snakemake(work, cfg, *args) for _ in range(repeat)]
    return statistics.median(r[1] for r in runs), max(r[2] for r in runs), runs[-1][0]


def split_done(work: Path, n: int) -> None:
    """Run the download and split checkpoints of an ``n``-case cohort (cached)."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "results/split/phantom/split.tsv").is_file():
        snakemake(work, config(n), "results/split/phantom/split.tsv")


def placeholders(work: Path) -> None:
    """Every case's preprocess and slice outputs as empty files, newer than their inputs: what
    planning sees of a cohort whose data stages ran (it reads file times, not contents)."""
    cases = [line.split("\t")[0] for line in (work / "resources/raw/phantom/cases.tsv").read_text().splitlines()[1:]]
    for case in cases:
        pre = work / "results/preprocess/phantom" / case
        pre.mkdir(parents=True, exist_ok=True)
        for name in ("image.nii.gz", "label.nii.gz", "mask.nii.gz", "meta.json", "qc.png"):
            (pre / name).touch()
        sliced = work / "results/slices/phantom/cases" / case
        (sliced / "png").mkdir(parents=True, exist_ok=True)
        (sliced / "slices.npz").touch()
    (work / "results/slices/phantom/oasis").mkdir(parents=True, exist_ok=True)


def local_rules() -> set[str]:
    """Rules that run on the submitting host (``localrule: True``), and the target rule ``all``."""
    names = {"all"}
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule |checkpoint )", smk.read_text(), flags=re.M):
            head = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if head and "localrule: True" in block:
                names.add(head.group(1))
    return names


def submissions(work: Path, n: int) -> tuple[int, int]:
    """(sbatch submissions the SLURM profile plans, per-case data jobs among the planned jobs): each group
    job is one submission, each top-level job of a rule that is not local another."""
    result, _, _ = snakemake(work, config(n), "-n", "--workflow-profile", str(ROOT / "profiles/slurm"))
    local = local_rules()
    top = [r for r in re.findall(r"^rule (\w+):", result.stdout, re.M) if r not in local]
    jobs = planned_jobs(result)
    return len(re.findall(r"Group job ", result.stdout)) + len(top), jobs.get("preprocess", 0) + jobs.get("slice", 0)


def planning(sizes: list[int], cache: Path) -> list[dict]:
    import importlib.util

    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        sys.exit("bench/scale.py --parts planning counts the SLURM profile's submissions: it needs the SLURM "
                 "executor plugin (make slurm, or make test's venv)")
    rows = []
    for n in sizes:
        work = cache / f"cohort_{n}"
        t0 = time.perf_counter()
        split_done(work, n)
        for stage in ("preprocess", "slices"):  # a cached cohort's placeholders from an earlier run: not "before"
            shutil.rmtree(work / "results" / stage, ignore_errors=True)
        setup = time.perf_counter() - t0
        before, rss_before, result = timed(work, config(n), "-n")
        jobs = planned_jobs(result)
        submitted, data_jobs = submissions(work, n)
        placeholders(work)
        after, rss_after, _ = timed(work, config(n), "-n")
        noop, rss_noop, noop_result = timed(work, config(n, experiments=False), "-n")
        assert "Nothing to be done" in noop_result.stdout + noop_result.stderr, noop_result.stdout[-2000:]
        rows.append({"cases": n, "planned jobs": sum(jobs.values()), "plan before s": before, "plan before MB":
                     rss_before, "plan after s": after, "plan after MB": rss_after, "no-op s": noop,
                     "sbatch": submitted, "data jobs": data_jobs, "setup s": setup})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def overhead(cache: Path) -> dict:
    """Seconds per data job of a real 20-case run, and its no-op against placeholders of 20 cases."""
    real = cache / "real_20"
    split_done(real, 20)
    for stage in ("preprocess", "slices"):  # a cached run's outputs: the jobs must run to be timed
        shutil.rmtree(real / "results" / stage, ignore_errors=True)
    _, seconds, _ = snakemake(real, config(20, experiments=False))
    noop_real, _, _ = timed(real, config(20, experiments=False), "-n")
    fake = cache / "fake_20"
    split_done(fake, 20)
    placeholders(fake)
    noop_fake, _, _ = timed(fake, config(20, experiments=False), "-n")
    return {"data jobs": 40, "seconds": seconds, "s per data job": seconds / 40, "no-op real s": noop_real,
            "no-op placeholders s": noop_fake}


ONE_RULE = 'rule a:\n    output: "a.txt"\n    log: "a.log"\n    shell: "touch {output} {log}"\n'


def demo_plan(demo: Path) -> dict:
    """``snakemake -n`` on a finished demo (its own config), with the demo's own ``.venv`` where it has one
    (what ``make demo`` installed; else this Python): median of 5; beside it Snakemake's import alone and
    its floor, ``-n`` on a finished one-rule workflow. Whether pandas is installed there matters:
    Snakemake's params check imports it when it is (0.2 s)."""
    python = demo.resolve() / ".venv" / "bin" / "python"
    python = str(python) if python.exists() else sys.executable
    env = no_controller_env()
    with tempfile.TemporaryDirectory() as floor:
        Path(floor, "Snakefile").write_text(ONE_RULE)
        subprocess.run([python, "-m", "snakemake", "-c1", "--quiet"], cwd=floor, capture_output=True, env=env,
                       check=True)
        times = {"demo -n s": [], "one-rule -n s": [], "import snakemake.cli s": []}
        for _ in range(5):  # interleaved: a slow moment of the machine falls on all three
            for key, cmd, cwd in (("demo -n s", ["-m", "snakemake", "-n", "--quiet"], demo),
                                  ("one-rule -n s", ["-m", "snakemake", "-n", "--quiet"], floor),
                                  ("import snakemake.cli s", ["-c", "import snakemake.cli"], None)):
                t = time.perf_counter()
                subprocess.run([python, *cmd], cwd=cwd, capture_output=True, env=env, check=True)
                times[key].append(time.perf_counter() - t)
    probe = "import importlib.util as u; print(u.find_spec('pandas') is not None)"
    pandas = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    return {**{k: statistics.median(v) for k, v in times.items()}, "pandas installed": pandas == "True"}


MEMORY_STAGES = ("train_data", "generate", "evaluate", "audit_shared", "utility")


def _memory_cohort(root: Path, scale: int, size: int) -> dict:
    from memory_cohort import write_cohort, write_generation_cohort  # noqa: PLC0415 (imports torch)

    if (root / "cohort.json").exists():
        return json.loads((root / "cohort.json").read_text())
    cohort = write_cohort(root, 2 * scale, 4 * scale, size=size)
    # Training-data loading reads 4x the training cases (what grows there is the training set), in
    # memory up to ram_gb and memory-mapped beyond; generation reads label maps of the test cases' count.
    cohort["ram_gb"] = 0.02
    shape = (size + size // 4, size + size // 4, 32)  # wider than the crop, as real CT is
    cohort.update(write_generation_cohort(root / "generation", 2 * scale, shape, size))
    (root / "cohort.json").write_text(json.dumps(cohort))
    return cohort


def _with_weights(cohort: dict, root: Path) -> dict:
    """The cohort with random Inception and AlexNet weights of the real architectures (tests/conftest.py)
    and its real statistics computed with them: FID/KID, LPIPS and the feature-space audit then run."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch  # noqa: PLC0415
    from conftest import write_random_weights  # noqa: PLC0415

    from medsynth.data.slice_batches import slice_chunks  # noqa: PLC0415
    from medsynth.metrics.perceptual import save_real_stats  # noqa: PLC0415

    weights = root / "weights"
    out = {**cohort, "weights": str(weights)}
    if not (weights / "done").exists():
        write_random_weights(weights)
        settings = {"weights_dir": str(weights), "perceptual": "auto", "batch_size": 32, "kid_subsets": 100,
                    "kid_subset_size": 1000}
        for part in ("test", "train"):
            images = (chunk[:, None] for chunk, in slice_chunks(cohort[part], ("images",)))
            save_real_stats(images, weights / f"inception_{part}.npz", settings, torch.device("cpu"))
        (weights / "done").touch()
    return {**out, "real_stats": str(weights / "inception_test.npz"),
            "train_stats": str(weights / "inception_train.npz")}


def memory_table(cache: Path) -> list[dict]:
    """Peak MB each stage adds to its process after the imports (and the imports' MB), per set size; the
    last row with (random) pretrained weights, so that FID/KID, LPIPS and the feature audit run."""
    from memory_cohort import peak_memory  # noqa: PLC0415

    rows = []
    for scale, size, weights in ((1, 64, False), (4, 64, False), (16, 64, False), (1, 128, False),
                                 (1, 256, False), (1, 256, True)):
        if weights:  # Inception's batches cost the same at any slice size: a small set keeps it quick
            from memory_cohort import write_cohort  # noqa: PLC0415

            root = cache / f"weights_{size}px"
            cohort = _with_weights(write_cohort(root, 1, 2, slices=16, size=size), root)
        else:
            root = cache / f"x{scale}_{size}px"
            cohort = _memory_cohort(root, scale, size)
        row = {"set": f"{scale}x", "px": size, "weights": "yes" if weights else "no"}
        stages = ("evaluate", "real_stats") if weights else MEMORY_STAGES + (("segmenter",) if size > 64 else ())
        for stage in MEMORY_STAGES + ("segmenter", "real_stats"):
            row[stage] = "-"
            if stage in stages:
                report = peak_memory(stage, cohort, root, timeout=1200)
                row[stage] = round(report["peak_mb"] - report["ready_mb"])
                row["imports"] = round(report["ready_mb"])
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--parts", nargs="+", choices=["planning", "overhead", "memory"],
                    default=["planning", "overhead", "memory"])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "medsynth-scale")
    ap.add_argument("--demo", type=Path, help="a finished demo's folder, for the demo's snakemake -n time")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "planning" in args.parts:
        print_table(planning(args.cases, args.cache))
    if "overhead" in args.parts:
        print_table([overhead(args.cache)])
    if args.demo:
        print_table([demo_plan(args.demo)])
    if "memory" in args.parts:
        print_table(memory_table(args.cache / "memory"))


if __name__ == "__main__":
    main()
