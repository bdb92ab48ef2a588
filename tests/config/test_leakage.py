"""Config checks that keep every test patient out of anything shared (medsynth.config.leakage), made through
config_errors as the workflow makes them when it loads its config."""

from __future__ import annotations

from medsynth.config.checks import config_errors
from medsynth.data.split import split_table

GOOD_LABELS = [{"name": "background", "values": [0]}, {"name": "liver", "values": [5]}]

# Four phantoms split 0.5 / 0.25 / 0.25 with seed 0: phantom_000 and phantom_001 train, phantom_003 val, and
# phantom_002 test (moved there by the small-cohort rule). Three patients 000, 001, 003: phantom_000 test.
SPLIT = {"seed": 0, "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}}


def _phantoms(n: int) -> dict:
    return {"source": "phantom", "modality": "CT", "phantom": {"n_cases": n, "seed": 1}, "labels": GOOD_LABELS}


def _table(path, rows: list[tuple[str, str]], label_only: bool = False) -> dict:
    """A local dataset from a cases table (case id, patient id); the files need not exist for the checks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("case_id\tpatient_id\timage\tlabel\n" + "".join(
        f"{c}\t{p}\t{'' if label_only else c + '/ct.nii.gz'}\t{c}/label.nii.gz\n" for c, p in rows))
    return {"source": "local", "modality": "CT", "local": {"cases_table": str(path)}, "labels": GOOD_LABELS}


def _leak_config(**datasets) -> dict:
    return {"datasets": {"ct": _phantoms(4), **datasets}, "slice": {"size": 32}, "split": SPLIT,
            "experiments": {"e": {"dataset": "ct", "train": {"model": "tiny"}}},
            "generate": {"splits": ["train", "test"]}, "export": {"first_id": 500}}


def test_exporting_the_test_part_is_refused_naming_the_key_dataset_and_patients() -> None:
    config = _leak_config()
    config["export"]["splits"] = ["train"]
    assert config_errors(config) == []
    config["export"]["splits"] = ["train", "test"]
    (error,) = config_errors(config)
    assert error.startswith("config: export.splits holds test") and "experiments.e" in error
    assert "datasets.ct" in error and "phantom_002" in error and "remove test from export.splits" in error


def test_generating_from_a_dataset_an_experiment_trains_on_is_refused() -> None:
    config = _leak_config(mr=_phantoms(4))
    config["experiments"]["f"] = {"dataset": "mr", "generate_from": ["ct"], "train": {"model": "tiny"}}
    (error,) = config_errors(config)
    assert error.startswith("config: experiments.f.generate_from names 'ct'")
    assert "experiments.e.dataset" in error and "phantom_002" in error


def test_generating_for_a_test_patient_of_the_experiments_datasets_is_refused(tmp_path) -> None:
    other = _table(tmp_path / "lo" / "cases.tsv", [("lo_a", "phantom_002"), ("lo_b", "newcomer")], label_only=True)
    config = _leak_config(lo=other)
    config["experiments"]["e"]["generate_from"] = ["lo"]
    (error,) = config_errors(config)
    assert error.startswith("config: experiments.e.generate_from names 'lo'") and "datasets.ct" in error
    assert "phantom_002" in error and "newcomer" not in error
    other = _table(tmp_path / "lo" / "cases.tsv", [("lo_b", "newcomer"), ("lo_c", "phantom_000")], label_only=True)
    assert config_errors(_leak_config(lo=other) | {"experiments": config["experiments"]}) == []


def test_an_image_datasets_test_patient_is_found_in_a_downloaded_url_dataset(tmp_path) -> None:
    config = _leak_config(mr={"source": "url", "modality": "MR", "url": {"href": "https://example.org/mr.zip"},
                              "layout": {"image": "{case}/mr.nii.gz", "label": "{case}/seg.nii.gz"},
                              "labels": GOOD_LABELS})
    config["datasets"]["lo"] = _table(tmp_path / "lo.tsv", [("lo_a", "m0")], label_only=True)
    config["experiments"]["e"] = {"dataset": "ct", "images_from": "mr", "generate_from": ["lo"],
                                  "train": {"model": "tiny", "mode": "unpaired"}}
    assert config_errors(config, workdir=tmp_path) == []  # not downloaded: not known yet, the export checks later
    _table(tmp_path / "resources/raw/mr/cases.tsv", [(f"m{i}", f"m{i}") for i in range(4)])
    (error,) = config_errors(config, workdir=tmp_path)
    test = {r["patient_id"] for r in split_table(
        [{"case_id": f"m{i}", "patient_id": f"m{i}"} for i in range(4)], SPLIT["ratios"], 0) if r["part"] == "test"}
    assert test == {"m0"} and "experiments.e.generate_from names 'lo'" in error and "datasets.mr" in error
    assert "m0" in error


def test_a_patient_both_exported_and_in_the_other_datasets_test_part_is_refused(tmp_path) -> None:
    three = _table(tmp_path / "three.tsv", [(f"c{i}", f"phantom_00{i}") for i in (0, 1, 3)])
    config = _leak_config(three=three)
    # u: synthetic cases of ct's train part (phantom_000, phantom_001); phantom_000 is in three's test part.
    config["experiments"] = {"u": {"dataset": "ct", "images_from": "three", "train": {"model": "tiny",
                                                                                       "mode": "unpaired"}}}
    (synthetic,) = config_errors(config)
    assert synthetic.startswith("config: export.splits") and "experiments.u" in synthetic
    assert "datasets.ct" in synthetic and "datasets.three" in synthetic and "phantom_000" in synthetic
    # v: the real cases of ct's train part (images_from) beside three's synthetic ones; phantom_000 is in three's test.
    config["experiments"] = {"v": {"dataset": "three", "images_from": "ct", "train": {"model": "tiny",
                                                                                       "mode": "unpaired"}}}
    assert config_errors(config) == []
    config["export"]["include_real"] = True
    (real,) = config_errors(config)
    assert real.startswith("config: export.include_real") and "experiments.v" in real
    assert "datasets.ct" in real and "datasets.three" in real and "phantom_000" in real


def test_a_generate_from_case_named_like_an_own_case_is_refused_when_the_config_loads(tmp_path) -> None:
    """Own test case 'extra.s0001' and generate_from dataset extra's 's0001' would share generate's folder
    cases/extra.s0001/: the generate_from rows would point at (and the export ship) the test case's volume."""
    own = [("extra.s0001", "p1"), ("b", "p2"), ("c", "p3"), ("d", "p4")]
    config = _leak_config(own=_table(tmp_path / "own.tsv", own),
                          extra=_table(tmp_path / "extra.tsv", [("s0001", "q1")], label_only=True))
    config["experiments"] = {"e": {"dataset": "own", "generate_from": ["extra"], "train": {"model": "tiny"}}}
    (error,) = config_errors(config)
    assert error.startswith("config: experiments.e: case 'extra.s0001' of datasets.own and case 's0001' of "
                            "datasets.extra would both be written to results/generate/e/cases/extra.s0001/")
    assert "rename one of them" in error
    config["datasets"]["own"] = _table(tmp_path / "own.tsv", [("extra-s0001", "p1"), *own[1:]])
    assert config_errors(config) == []
