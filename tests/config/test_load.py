"""One way to load a config: label files read in, the schema's defaults, references and per-rule keys."""

from __future__ import annotations

import pytest
import yaml

from medsynth.cli import main
from medsynth.config.keys import canonical, only, slice_settings, train_settings
from medsynth.config import load
from medsynth.config.load import (ConfigError, inline_label_files, load_config, normalise, reference_errors,
                                  validate_once)
from medsynth.train.keys import MODE_ONLY
from medsynth.train.settings import NOT_IDENTITY

LABELS = [{"name": "background", "values": [0]}, {"name": "liver", "values": [1]}, {"name": "kidney", "values": [2]}]


def write_config(tmp_path, **experiment_train):
    config = {"datasets": {"ct": {"source": "phantom", "modality": "CT", "labels": "labels.yaml"}},
              "experiments": {"exp": {"dataset": "ct", "train": {"model": "tiny", **experiment_train}}}}
    (tmp_path / "labels.yaml").write_text(yaml.safe_dump(LABELS))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "config.yaml"


def test_a_loaded_config_has_its_label_file_read_and_the_schemas_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(write_config(tmp_path))
    assert config["datasets"]["ct"]["labels"] == LABELS
    assert config["experiments"]["exp"]["train"]["mode"] == "paired"  # a default the schema fills in
    assert config["slice"]["size"] > 0


def test_a_label_file_that_does_not_exist_is_named_with_its_key(tmp_path):
    config = {"datasets": {"ct": {"labels": str(tmp_path / "nowhere.yaml")}}}
    with pytest.raises(ConfigError, match=r"datasets\.ct\.labels names .*nowhere\.yaml"):
        inline_label_files(config)


def test_schema_errors_name_the_key_and_medsynths_checks_run_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path)
    broken = yaml.safe_load(path.read_text())
    del broken["datasets"]["ct"]["source"]
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ConfigError, match=r"datasets\.ct: 'source' is a required property"):
        load_config(path)
    broken["datasets"]["ct"]["source"] = "phantom"
    broken["datasets"]["ct"]["labels"] = LABELS + [{"name": "spleen", "values": [2]}]  # 2 listed twice
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ConfigError, match="datasets.ct"):
        load_config(path)


def small_config() -> dict:
    return {"datasets": {"ct": {"source": "phantom", "modality": "CT", "labels": LABELS}},
            "experiments": {"exp": {"dataset": "ct", "train": {"model": "tiny"}}}}


def test_a_config_validated_once_takes_its_defaults_from_the_cache_and_an_edit_validates_again(
        tmp_path, monkeypatch):
    cache = tmp_path / "validated"
    first = small_config()
    validate_once(first, cache=cache)
    assert first["experiments"]["exp"]["train"]["mode"] == "paired" and len(list(cache.glob("*.json"))) == 1

    def no_validator(*args):
        raise AssertionError("validated again")

    monkeypatch.setattr(load, "validate", no_validator)
    again = small_config()
    validate_once(again, cache=cache)
    assert again == first
    monkeypatch.undo()
    broken = small_config()
    broken["experiments"]["exp"]["train"]["mode"] = "sideways"
    with pytest.raises(ConfigError, match=r"experiments\.exp\.train\.mode"):
        validate_once(broken, cache=cache)
    assert len(list(cache.glob("*.json"))) == 1  # a config that failed is never remembered


def test_a_config_json_cannot_spell_or_an_unwritable_cache_is_validated_every_time(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(load, "validate", lambda config, schema: calls.append(1))  # accepts anything
    for _ in range(2):
        validate_once({"extra": {1: "one"}}, cache=tmp_path / "validated")  # JSON would bring "1" back
    assert len(calls) == 2 and not (tmp_path / "validated").exists()
    (tmp_path / "file").write_text("")
    for _ in range(2):
        validate_once({"extra": "x"}, cache=tmp_path / "file" / "validated")  # a file where the folder belongs
    assert len(calls) == 4


def test_the_train_command_applies_the_same_checks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["experiments"]["exp"]["train"]["mode"] = "unpaired"  # without images_from
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--experiment", "exp"]) != 0
    assert "experiments.exp is unpaired: set images_from" in capsys.readouterr().err


def test_references_to_datasets_are_checked_and_off_is_a_word():
    config = {"datasets": {"ct": {}}, "experiments": {"a": {"dataset": "mr", "train": {"mode": "paired"}}},
              "metrics": {"perceptual": False}}
    assert reference_errors(config) == ["config: experiments.a.dataset is 'mr', which is not one of the datasets "
                                        "['ct']"]
    assert normalise(config)["metrics"]["perceptual"] == "off"


def test_params_do_not_depend_on_key_order_and_hold_only_their_keys():
    assert repr(only({"b": 1, "a": {"y": 2, "x": 3}, "c": 4}, ["a", "b"])) == repr({"a": {"x": 3, "y": 2}, "b": 1})
    assert list(canonical({"b": [{"d": 1, "c": 2}], "a": 0})) == ["a", "b"]


def test_a_trainings_params_leave_out_how_it_runs_and_the_other_modes_weights():
    train = {"mode": "paired", "steps": 10, "device": "cuda", "eval_every": 5, "lambda_labelmix": 10.0,
             "lambda_seg": 1.0, "r1_gamma": 2.0, "lr_g": 1e-4}
    params = train_settings({"experiments": {"e": {"train": train}}}, "e")
    assert params == {"lambda_labelmix": 10.0, "lr_g": 1e-4, "mode": "paired", "steps": 10}
    # the run's fingerprint leaves out the same how-keys and mode weights (one list each: train.keys)
    assert {"device", "eval_every"} <= set(NOT_IDENTITY) and "lambda_seg" in MODE_ONLY["unpaired"]


def test_slicing_params_name_required_classes_by_their_ids_in_each_table():
    config = {"slice": {"size": 64, "min_body_fraction": 0.05, "require_classes": ["kidney", "body"]},
              "datasets": {"ct": {"labels": LABELS}, "mr": {}}}
    assert slice_settings(config, "ct") == {"min_body_fraction": 0.05, "require_classes": [2, 3], "size": 64}
    assert "require_classes" not in slice_settings(config, "mr")  # image-only: every body slice


def test_set_like_lists_in_another_order_give_the_same_config():
    """Snakemake compares params by their repr: ``generate.splits: [test, train]`` for ``[train, test]`` reran
    generation and all after it, a reordered ``slice.require_classes`` slicing and training."""
    def config(reverse: bool) -> dict:
        flip = (lambda x: list(reversed(x))) if reverse else list
        return {"datasets": {"ct": {"labels": [{"name": "background", "values": [0]},
                                               {"name": "liver", "values": flip([5, 1])}]}, "mr": {}},
                "experiments": {"e": {"generate_from": flip(["b", "a"])}}, "metrics": {"perceptual": "off"},
                "slice": {"require_classes": flip(["liver", "body"])}, "generate": {"splits": flip(["train", "test"])},
                "export": {"splits": flip(["val", "train", "val"])}, "utility": {"real_patients": flip([1, "all", 2])}}

    a, b = normalise(config(False)), normalise(config(True))
    assert a == b and repr(a) == repr(b)
    # Parts in the split's order (as every shipped config lists them: no rerun after the update).
    assert a["generate"]["splits"] == ["train", "test"] and a["export"]["splits"] == ["train", "val"]
    assert a["utility"]["real_patients"] == [1, 2, "all"] and a["experiments"]["e"]["generate_from"] == ["a", "b"]
    assert a["datasets"]["ct"]["labels"][1]["values"] == [1, 5]
    assert slice_settings(a, "ct") == slice_settings(b, "ct")
