"""What reruns when a setting changes: every leaf key of the config schema, by dry run.

Each key of ``workflow/schemas/config.schema.yaml`` is in ``CHANGES`` (so a new key cannot be
forgotten: ``test_every_schema_key_is_in_the_table``): one or more changes of the finished tiny
workflow's config (``@...``: a path or table of that run, see ``resolve``), or why the tiny run
cannot show the key. ``EXPECTED`` holds, per change, the jobs a dry run must plan, per rule. Giving a rule a setting it does not use makes that key plan more than the table
says, and the test fails. The README's "What reruns" table says the same in words.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from forked_snakemake import run_all
from tiny_workflow import TINY, planned_jobs

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

# The tiny run's datasets and experiments (tiny_workflow.TINY).
P, M, L = "datasets.phantom", "datasets.phantom_mr", "datasets.labels_only"
T, U = "experiments.tiny", "experiments.tiny-unpaired"

CHANGES = {
    "datasets.<name>.source": [{f"{M}.source": "local", f"{M}.local": {"cases_table": "@raw/phantom_mr/cases.tsv"}}],
    "datasets.<name>.modality": [{f"{M}.modality": "CT"}],
    "datasets.<name>.licence": [{f"{P}.licence": "CC BY 4.0"}],
    # Phantom cohorts share their ids (patients phantom_000, ...): five MR phantoms split phantom_002 into train,
    # four CT phantoms into test, so shipping MR's real cases beside CT's synthetic ones is refused at load.
    "datasets.<name>.phantom.n_cases": [{f"{M}.phantom.n_cases": 5, "export.include_real": False}],
    "datasets.<name>.phantom.seed": [{f"{M}.phantom.seed": 3}],
    "datasets.<name>.phantom.shape": [{f"{M}.phantom.shape": [64, 64, 12]}],
    "datasets.<name>.phantom.spacing": [{f"{M}.phantom.spacing": [6.0, 6.0, 7.0]}],
    "datasets.<name>.local.cases_table": "no dataset of the tiny run reads a cases table",
    "datasets.<name>.local.root": [{f"{L}.local.root": "@moved_label_maps"}],
    "datasets.<name>.url.href": "no url dataset in the tiny run",
    "datasets.<name>.url.sha256": "no url dataset in the tiny run",
    "datasets.<name>.url.md5": "no url dataset in the tiny run",
    "datasets.<name>.url.size": "no url dataset in the tiny run",
    "datasets.<name>.url.filename": "no url dataset in the tiny run",
    "datasets.<name>.layout.image": "the label-only dataset has no images",
    "datasets.<name>.layout.label": [{f"{L}.layout.label": "{case}/./label.nii.gz"}],
    "datasets.<name>.layout.label_root": [{f"{L}.layout.label_root": "@label_maps"}],
    "datasets.<name>.layout.mask": "the label-only dataset has no masks",
    "datasets.<name>.labels": [{f"{P}.labels": "@labels_one_more_value"}],
    # Every dataset at once: an unpaired experiment's datasets and a generate_from dataset need one spacing.
    "datasets.<name>.preprocess.spacing_xy": [{f"{d}.preprocess.spacing_xy": 11.0 for d in (P, M, L)}],
    "datasets.<name>.preprocess.ct_window": [{f"{P}.preprocess.ct_window": [-1000, 1200]},
                                             {f"{M}.preprocess.ct_window": [-1000, 1200]}],
    "datasets.<name>.preprocess.ct_soft_window": [{f"{P}.preprocess.ct_soft_window": [-150, 250]},
                                                  {f"{M}.preprocess.ct_soft_window": [-150, 250]}],
    "datasets.<name>.preprocess.ct_soft_share": [{f"{P}.preprocess.ct_soft_share": 0.5},
                                                 {f"{M}.preprocess.ct_soft_share": 0.5}],
    "datasets.<name>.preprocess.mr_percentiles": [{f"{M}.preprocess.mr_percentiles": [1.0, 99.0]},
                                                  {f"{P}.preprocess.mr_percentiles": [1.0, 99.0]}],
    "datasets.<name>.preprocess.body_threshold_hu": [{f"{P}.preprocess.body_threshold_hu": -400},
                                                     {f"{M}.preprocess.body_threshold_hu": -400}],
    "datasets.<name>.preprocess.mr_body_fraction": [{f"{M}.preprocess.mr_body_fraction": 0.2},
                                                    {f"{P}.preprocess.mr_body_fraction": 0.2}],
    "datasets.<name>.preprocess.opening_mm": [{f"{M}.preprocess.opening_mm": 8.0}],
    "slice.size": [{"slice.size": 64}],
    "slice.min_body_fraction": [{"slice.min_body_fraction": 0.1}],
    "slice.require_classes": [{"slice.require_classes": ["liver"]}],
    "slice.pngs": [{"slice.pngs": "none"}],
    # Seed 4 keeps the label-only maps' patients (phantom_000, phantom_001) out of phantom's test part (seed 1:
    # phantom_001 in test, refused at load: generate_from would export a test patient's label map).
    "split.seed": [{"split.seed": 4}],
    "split.ratios.train": [{"split.ratios.train": 0.25, "split.ratios.val": 0.5}],
    "split.ratios.val": [{"split.ratios.val": 0.5, "split.ratios.test": 0.25, "split.ratios.train": 0.25}],
    "split.ratios.test": [{"split.ratios.test": 0.5, "split.ratios.train": 0.25}],
    # The MR phantoms, given their labels, become tiny-unpaired's label maps; the CT phantoms its images.
    "experiments.<name>.dataset": [{f"{U}.dataset": "phantom_mr", f"{U}.images_from": "phantom",
                                    f"{M}.labels": "@phantom_labels"}],
    "experiments.<name>.images_from": [{f"{U}.images_from": "phantom"}],
    "experiments.<name>.select_metric": [{f"{T}.select_metric": "ssim"}],
    "experiments.<name>.select_fallback": [{f"{T}.select_fallback": "psnr"}],
    "experiments.<name>.generate_from": [{f"{T}.generate_from": []}],
    "experiments.<name>.export_id": [{f"{T}.export_id": 777}],
    "experiments.<name>.export_name": [{f"{T}.export_name": "Renamed"}],
    "experiments.<name>.threads": [{f"{T}.threads": 2}],
    "experiments.<name>.gpus": [{f"{T}.gpus": 1, f"{T}.train.device": "auto"}],  # with cpu: refused, GPUs unused
    "experiments.<name>.train.mode": [{f"{T}.train.mode": "unpaired", f"{T}.images_from": "phantom_mr",
                                       f"{T}.select_metric": "intensity_w1"}],  # unpaired computes no ssim
    "experiments.<name>.train.lambda_mask": [{f"{T}.train.lambda_mask": 2.0}],
    "experiments.<name>.train.lambda_class_stats": [{f"{T}.train.lambda_class_stats": 1.0}],
    "experiments.<name>.train.lambda_diversity": [{f"{T}.train.lambda_diversity": 1.0}],
    "experiments.<name>.train.diversity_margin": [{f"{T}.train.diversity_margin": 0.2}],
    "experiments.<name>.train.lambda_seg": [{f"{U}.train.lambda_seg": 2.0}, {f"{T}.train.lambda_seg": 2.0}],
    "experiments.<name>.train.lambda_adv": [{f"{U}.train.lambda_adv": 2.0}, {f"{T}.train.lambda_adv": 2.0}],
    "experiments.<name>.train.r1_gamma": [{f"{U}.train.r1_gamma": 2.0}, {f"{T}.train.r1_gamma": 2.0}],
    "experiments.<name>.train.r1_every": [{f"{U}.train.r1_every": 4}, {f"{T}.train.r1_every": 4}],
    "experiments.<name>.train.mask_threshold": [{f"{T}.train.mask_threshold": 0.1}],
    "experiments.<name>.train.precision": [{f"{T}.train.precision": "bf16"}],
    "experiments.<name>.train.channels_last": [{f"{T}.train.channels_last": False}],
    "experiments.<name>.train.compile": [{f"{T}.train.compile": True}],
    "experiments.<name>.train.ram_cache_gb": [{f"{T}.train.ram_cache_gb": 8}],
    "experiments.<name>.train.model": [{f"{T}.train.model": "small"}],
    "experiments.<name>.train.init_from": [{f"{T}.train.init_from": "results/select/tiny-unpaired/generator.pt"}],
    "experiments.<name>.train.context_slices": [{f"{T}.train.context_slices": 0}],
    "experiments.<name>.train.steps": [{f"{T}.train.steps": 18}],
    "experiments.<name>.train.batch_size": [{f"{T}.train.batch_size": 4}],
    "experiments.<name>.train.lr_g": [{f"{T}.train.lr_g": 0.0002}],
    "experiments.<name>.train.lr_d": [{f"{T}.train.lr_d": 0.0002}],
    "experiments.<name>.train.beta1": [{f"{T}.train.beta1": 0.5}],
    "experiments.<name>.train.beta2": [{f"{T}.train.beta2": 0.99}],
    "experiments.<name>.train.lambda_labelmix": [{f"{T}.train.lambda_labelmix": 5.0},
                                                 {f"{U}.train.lambda_labelmix": 5.0}],
    "experiments.<name>.train.ema_decay": [{f"{T}.train.ema_decay": 0.99}],
    "experiments.<name>.train.eval_every": [{f"{T}.train.eval_every": 4}],
    "experiments.<name>.train.sample_every": [{f"{T}.train.sample_every": 4}],
    "experiments.<name>.train.checkpoint_every": [{f"{T}.train.checkpoint_every": 4}],
    "experiments.<name>.train.val_max_slices": [{f"{T}.train.val_max_slices": 3}],
    "experiments.<name>.train.seed": [{f"{T}.train.seed": 1}],
    "experiments.<name>.train.device": [{f"{T}.train.device": "auto"}],
    "metrics.memorisation_threshold": [{"metrics.memorisation_threshold": 0.4}],
    "metrics.perceptual": [{"metrics.perceptual": "auto"}],
    "metrics.weights_dir": [{"metrics.weights_dir": "@weights_copy"}],
    "metrics.check_hash": [{"metrics.check_hash": True}],
    "metrics.kid_subsets": [{"metrics.kid_subsets": 4}],
    "metrics.kid_subset_size": [{"metrics.kid_subset_size": 10}],
    "metrics.batch_size": [{"metrics.batch_size": 8}],
    "metrics.segmenter_steps": [{"metrics.segmenter_steps": 10}],
    "metrics.segmenter_batch": [{"metrics.segmenter_batch": 4}],
    "metrics.segmenter_threads": [{"metrics.segmenter_threads": 2}],
    "metrics.threads": [{"metrics.threads": 2}],
    "metrics.segmenter_channels": [{"metrics.segmenter_channels": [8, 16, 32, 32]}],
    "select.metric": [{"select.metric": "ssim"}],
    "select.fallback": [{"select.fallback": "psnr"}],
    "generate.samples": [{"generate.samples": 3}],
    "generate.splits": [{"generate.splits": ["test"]}],
    "generate.seed": [{"generate.seed": 1}],
    "generate.noise": [{"generate.noise": "slice"}],
    "generate.noise_sigma_mm": [{"generate.noise_sigma_mm": 3.0}],
    "generate.inplane": [{"generate.inplane": "canvas"}],
    "generate.batch_size": [{"generate.batch_size": 4}],
    "generate.threads": [{"generate.threads": 2}],
    "generate.device": [{"generate.device": "cpu"}],
    "generate.pngs": [{"generate.pngs": "none"}],
    "utility.real_patients": [{"utility.real_patients": [1]}],
    "utility.draws": [{"utility.draws": 2}],
    "utility.bootstrap": [{"utility.bootstrap": 100}],
    "utility.seed": [{"utility.seed": 1}],
    "utility.real_share": [{"utility.real_share": 0.5}],
    # The tiny run generates train and test; test is refused (no test patient in anything shared), so the
    # only other value is the default written out, which changes nothing.
    "export.splits": [{"export.splits": ["train"]}],
    "export.include_real": [{"export.include_real": False}],
    "export.refuse_flagged": [{"export.refuse_flagged": False}],
    "export.folds": [{"export.folds": 3}],
    "export.first_id": [{"export.first_id": 600}],
    "report.dpi": [{"report.dpi": 60}],
    "report.loss_smoothing": [{"report.loss_smoothing": 5}],
    "report.grid_rows": [{"report.grid_rows": 2}],
    "cluster.cases_per_job": [{"cluster.cases_per_job": 1}],
}


TINY_E, UNPAIRED_E = "tiny", "tiny-unpaired"
BOTH = (TINY_E, UNPAIRED_E)
# tiny-unpaired's image dataset (phantom_mr) is image-only: it has no utility benchmark.
UTILITY = ("utility", "report_utility")


def _jobs(rules: tuple[str, ...], experiments: tuple[str, ...]) -> dict[str, int]:
    """Jobs per rule for the experiments a change reaches (the utility rules only for tiny)."""
    counts = {r: sum(1 for e in experiments if r not in UTILITY or e == TINY_E) for r in rules}
    return {**{r: n for r, n in counts.items() if n}, "all": 1}


def after_select(*experiments: str) -> dict[str, int]:
    """What a new generator.pt reruns for these experiments: selection and everything after it."""
    return _jobs(("select", "generate", "evaluate", "model_card", "utility", "audit_shared", "export", "report_curves",
                  "report_samples", "report_intensity", "report_memorisation", "report_utility", "report_summary"),
                 experiments)


def trained(*experiments: str) -> dict[str, int]:
    return {**after_select(*experiments), "train": len(experiments)}


def after_generate(*experiments: str) -> dict[str, int]:
    return _jobs(("generate", "evaluate", "model_card", "utility", "audit_shared", "export", "report_samples",
                  "report_intensity", "report_memorisation", "report_utility", "report_summary"), experiments)


def after_evaluate(*experiments: str) -> dict[str, int]:
    return _jobs(("evaluate", "model_card", "report_intensity", "report_memorisation", "report_summary"), experiments)


# phantom (CT, 4 cases) feeds both experiments' label maps; phantom_mr (MR, image-only: no segmenter) only
# tiny-unpaired's images.
CT_CASES = {"preprocess": 4, "slice": 4, "oasis_view": 1, "real_stats": 3, "segmenter": 1, **trained(*BOTH)}
MR_CASES = {"preprocess": 4, "slice": 4, "oasis_view": 1, "real_stats": 3, **trained(UNPAIRED_E)}
# A download is a checkpoint: its cases' jobs are planned once it has run, what depends on them now.
MR_DOWNLOAD = {"download": 1, "split": 1, "oasis_view": 1, "real_stats": 3, **trained(UNPAIRED_E)}
LABEL_ONLY_DOWNLOAD = {"download": 1, **after_generate(TINY_E)}
EVERY_DATASET = {"oasis_view": 2, "real_stats": 6, "segmenter": 1, **trained(*BOTH)}
SEGMENTER = {"segmenter": 1, "utility": 1, "report_utility": 1, **after_evaluate(TINY_E)}
REPORTS = ("report_curves", "report_samples", "report_intensity", "report_memorisation")
NOTHING: dict[str, int] = {}

EXPECTED = {
    "datasets.<name>.source": [MR_DOWNLOAD],
    "datasets.<name>.modality": [MR_DOWNLOAD],
    "datasets.<name>.licence": [{"model_card": 2, "export": 2, "all": 1}],  # the card's text and dataset.json's, not the generator
    "datasets.<name>.phantom.n_cases": [{**MR_DOWNLOAD, "export": 2}],  # and include_real for both exports
    "datasets.<name>.phantom.seed": [MR_DOWNLOAD],
    "datasets.<name>.phantom.shape": [MR_DOWNLOAD],
    "datasets.<name>.phantom.spacing": [MR_DOWNLOAD],
    "datasets.<name>.local.root": [LABEL_ONLY_DOWNLOAD],
    "datasets.<name>.layout.label": [LABEL_ONLY_DOWNLOAD],
    "datasets.<name>.layout.label_root": [LABEL_ONLY_DOWNLOAD],
    "datasets.<name>.labels": [CT_CASES],
    "datasets.<name>.preprocess.spacing_xy": [{"preprocess": 11, "slice": 11, **EVERY_DATASET}],
    # The intensity settings of one modality rerun nothing for a dataset of the other.
    "datasets.<name>.preprocess.ct_window": [CT_CASES, NOTHING],
    "datasets.<name>.preprocess.ct_soft_window": [CT_CASES, NOTHING],
    "datasets.<name>.preprocess.ct_soft_share": [CT_CASES, NOTHING],
    "datasets.<name>.preprocess.mr_percentiles": [MR_CASES, NOTHING],
    "datasets.<name>.preprocess.body_threshold_hu": [CT_CASES, NOTHING],
    "datasets.<name>.preprocess.mr_body_fraction": [MR_CASES, NOTHING],
    "datasets.<name>.preprocess.opening_mm": [MR_CASES],
    "slice.size": [{"slice": 11, **EVERY_DATASET}],
    "slice.min_body_fraction": [{"slice": 11, **EVERY_DATASET}],
    "slice.pngs": [NOTHING],  # files for people: no slice reruns (and the folder views are not asked for)
    "split.seed": [{"split": 2, **EVERY_DATASET}],
    "split.ratios.train": [{"split": 2, **EVERY_DATASET}],
    "split.ratios.val": [{"split": 2, **EVERY_DATASET}],
    "split.ratios.test": [{"split": 2, **EVERY_DATASET}],
    # phantom_mr's download again (its table now names its label maps), its cases planned after it; its
    # Inception statistics are no longer needed (it gives label maps now); a labelled image dataset brings
    # tiny-unpaired's utility benchmark.
    "experiments.<name>.dataset": [{"download": 1, "split": 1, "oasis_view": 1, **trained(UNPAIRED_E), "utility": 1,
                                    "report_utility": 1}],
    # A labelled image dataset (the CT phantoms): tiny-unpaired gets its utility benchmark too.
    "experiments.<name>.images_from": [{**trained(UNPAIRED_E), "utility": 1, "report_utility": 1}],
    "experiments.<name>.select_metric": [after_select(TINY_E)],
    "experiments.<name>.select_fallback": [after_select(TINY_E)],
    # labels_only stops being generate-only: it is split (and gets its folder view) like any dataset.
    "experiments.<name>.generate_from": [{"split": 1, "oasis_view": 1, **after_generate(TINY_E)}],
    "experiments.<name>.export_id": [{"export": 2, "all": 1}],  # ids are assigned across experiments
    "experiments.<name>.export_name": [{"export": 2, "all": 1}],
    "experiments.<name>.threads": [NOTHING],
    "experiments.<name>.gpus": [NOTHING],
    # tiny unpaired against the image-only MR phantoms: no utility benchmark any more.
    "experiments.<name>.train.mode": [{k: n for k, n in trained(TINY_E).items() if k not in UTILITY}],
    # Another mode's loss weights: the run never uses them (nor its fingerprint, train.settings).
    "experiments.<name>.train.lambda_seg": [trained(UNPAIRED_E), NOTHING],
    "experiments.<name>.train.lambda_adv": [trained(UNPAIRED_E), NOTHING],
    "experiments.<name>.train.r1_gamma": [trained(UNPAIRED_E), NOTHING],
    "experiments.<name>.train.r1_every": [trained(UNPAIRED_E), NOTHING],
    "experiments.<name>.train.lambda_labelmix": [trained(TINY_E), NOTHING],
    # How a run goes, not what it learns: a finished run would resume and do nothing.
    "experiments.<name>.train.compile": [NOTHING],
    "experiments.<name>.train.ram_cache_gb": [NOTHING],
    "experiments.<name>.train.eval_every": [NOTHING],
    "experiments.<name>.train.sample_every": [NOTHING],
    "experiments.<name>.train.checkpoint_every": [NOTHING],
    "experiments.<name>.train.device": [NOTHING],
    # The test set's audit and the audit of what is shared (and so the export that ships it).
    "metrics.memorisation_threshold": [{**after_evaluate(*BOTH), "audit_shared": 2, "export": 2}],
    "metrics.perceptual": [{"fetch_weights": 1, "real_stats": 6, **trained(*BOTH)}],
    "metrics.weights_dir": [{"real_stats": 6, **trained(*BOTH)}],  # the copy holds its own status.json
    "metrics.check_hash": [{"fetch_weights": 1, "real_stats": 6, **trained(*BOTH)}],
    # KID's settings: validation again (train resumes at its last step and recomputes the history from
    # its snapshots, without training) and evaluation; not the Inception statistics nor the segmenters.
    "metrics.kid_subsets": [trained(*BOTH)],
    "metrics.kid_subset_size": [trained(*BOTH)],
    "metrics.batch_size": [NOTHING],
    "metrics.segmenter_steps": [SEGMENTER],
    "metrics.segmenter_batch": [SEGMENTER],
    "metrics.segmenter_threads": [NOTHING],
    "metrics.threads": [NOTHING],
    "metrics.segmenter_channels": [SEGMENTER],
    "select.metric": [after_select(TINY_E)],  # tiny-unpaired has its own select_metric
    "select.fallback": [after_select(*BOTH)],
    "generate.samples": [after_generate(*BOTH)],
    # No synthetic training cases: no utility benchmark, and only tiny's export (of its generate_from cases).
    "generate.splits": [{"generate": 2, "evaluate": 2, "model_card": 2, "audit_shared": 1, "export": 1,
                         "report_samples": 2,
                         "report_intensity": 2, "report_memorisation": 2, "report_summary": 2, "all": 1}],
    "generate.seed": [after_generate(*BOTH)],
    "generate.noise": [after_generate(*BOTH)],
    "generate.noise_sigma_mm": [after_generate(*BOTH)],
    "generate.batch_size": [NOTHING],
    "generate.threads": [NOTHING],
    "generate.device": [NOTHING],
    "generate.pngs": [NOTHING],
    # The curve, its figure, and the two pages that state it.
    **{f"utility.{k}": [{"utility": 1, "report_utility": 1, "report_summary": 1, "model_card": 1, "all": 1}]
       for k in ("real_patients", "draws", "bootstrap", "seed", "real_share")},
    "generate.inplane": [after_generate(*BOTH)],
    "export.refuse_flagged": [{"export": 2, "model_card": 2, "all": 1}],
    # Only the labelled datasets' slices (phantom, labels_only); the image-only phantom_mr keeps its own.
    "slice.require_classes": [{"slice": 7, "oasis_view": 1, "real_stats": 3, "segmenter": 1, **trained(*BOTH)}],
    "export.splits": [NOTHING],
    "export.include_real": [{"export": 2, "all": 1}],
    "export.folds": [{"export": 2, "all": 1}],
    "export.first_id": [{"export": 2, "all": 1}],
    "report.dpi": [{**{r: 2 for r in REPORTS}, "report_utility": 1, "report_summary": 2, "all": 1}],
    "report.loss_smoothing": [{"report_curves": 2, "report_summary": 2, "all": 1}],
    "report.grid_rows": [{"report_samples": 2, "report_summary": 2, "all": 1}],
    # Only a profile that groups the per-case rules plans the batches it sizes (tests/workflow/test_profile.py).
    "cluster.cases_per_job": [NOTHING],
}
TRAINED_KEYS = ("lambda_mask", "lambda_class_stats", "lambda_diversity", "diversity_margin", "mask_threshold",
                "precision", "channels_last", "model", "init_from", "context_slices", "steps", "batch_size", "lr_g",
                "lr_d", "beta1", "beta2", "ema_decay", "val_max_slices", "seed")
EXPECTED.update({f"experiments.<name>.train.{k}": [trained(TINY_E)] for k in TRAINED_KEYS})


def schema_leaves(node: dict, path: tuple[str, ...] = ()) -> list[str]:
    """Every settable key of the schema, ``<name>`` for a dataset's or an experiment's name."""
    if node.get("properties"):
        return [leaf for k, v in node["properties"].items() for leaf in schema_leaves(v, (*path, k))]
    named = node.get("additionalProperties")
    if isinstance(named, dict) and named.get("properties"):
        return schema_leaves(named, (*path, "<name>"))
    return [".".join(path)]


def test_every_schema_key_is_in_the_table():
    leaves = schema_leaves(yaml.safe_load(SCHEMA.read_text()))
    assert len(leaves) > 90 and sorted(leaves) == sorted(CHANGES)
    for key, cases in CHANGES.items():
        if not isinstance(cases, str):
            assert len(EXPECTED[key]) == len(cases), key
    assert set(EXPECTED) == {k for k, c in CHANGES.items() if not isinstance(c, str)}


def resolve(value, work: Path, base: dict):
    """The table's ``@`` values: paths and tables of the finished run."""
    if not (isinstance(value, str) and value.startswith("@")):
        return value
    name = value[1:]
    if name.startswith("raw/"):
        return str(work / "resources" / name)
    if name == "label_maps":
        return str(work / "label_maps")
    if name == "moved_label_maps":  # the same label maps in another folder
        moved = work / "label_maps_moved"
        if not moved.exists():
            shutil.copytree(work / "label_maps", moved)
        return str(moved)
    if name == "phantom_labels":
        return copy.deepcopy(base["datasets"]["phantom"]["labels"])
    if name == "labels_one_more_value":  # one more label value for a class
        labels = copy.deepcopy(base["datasets"]["phantom"]["labels"])
        labels[-1]["values"] = [*labels[-1]["values"], 10]
        return labels
    if name == "weights_copy":
        src = Path(base["metrics"]["weights_dir"])
        dst = src.parent / f"{src.name}_copy"
        if not dst.exists():
            shutil.copytree(src, dst)
        return str(dst)
    raise KeyError(value)


def changed(base: dict, change: dict, work: Path) -> dict:
    config = copy.deepcopy(base)
    for path, value in change.items():
        *parents, leaf = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = resolve(value, work, base)
    return config


def reversed_keys(value):
    return {k: reversed_keys(value[k]) for k in reversed(list(value))} if isinstance(value, dict) else value


def dry_run_arguments(work: Path, config_file: Path) -> list[str]:
    return ["--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(work), "--configfile",
            str(config_file), "--cores", "2", "-n"]


CASES = [(f"{key}#{i}", change, EXPECTED[key][i]) for key, changes in CHANGES.items()
         if not isinstance(changes, str) for i, change in enumerate(changes)]


@pytest.fixture(scope="module")
def plans(finished, tmp_path_factory):
    """Every case's dry run, two at a time (a dry run is one process on one core; each forked after one
    import of Snakemake: ``forked_snakemake``), and the two edits that change no value: the keys in reverse
    order, and comments and another indentation."""
    folder = tmp_path_factory.mktemp("rerun-configs")
    files = {}
    for name, change, _ in CASES:
        files[name] = folder / f"case{len(files)}.yaml"
        files[name].write_text(yaml.safe_dump(changed(TINY, change, finished)))
    files["reordered"] = folder / "reordered.yaml"
    files["reordered"].write_text(yaml.safe_dump(reversed_keys(TINY), sort_keys=False))
    files["commented"] = folder / "commented.yaml"
    text = yaml.safe_dump(TINY, indent=4, default_flow_style=False)
    files["commented"].write_text("# a comment\n\n" + text.replace("\n", "  # and another\n", 3))
    runs = run_all({name: dry_run_arguments(finished, f) for name, f in files.items()})
    return {name: planned_jobs(r) if r.returncode == 0 else f"dry run failed: {r.stderr[-2000:]}"
            for name, r in runs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["reordered", "commented"])
def test_an_edit_that_changes_no_value_reruns_nothing(plans, name):
    assert plans[name] == {}


@pytest.mark.slow
@pytest.mark.parametrize("name,change,expected", CASES, ids=[c[0] for c in CASES])
def test_a_change_reruns_exactly_what_depends_on_it(plans, name, change, expected):
    assert plans[name] == expected, f"{change}: planned {plans[name]}"
