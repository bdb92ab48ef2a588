"""Config checks made when the workflow loads its config (medsynth.config.checks)."""

from __future__ import annotations

import pytest

from medsynth.config.checks import config_errors
from medsynth.models.registry import PRESETS

GOOD_LABELS = [{"name": "background", "values": [0]}, {"name": "liver", "values": [5]}]


def _config(size: int = 32, labels=GOOD_LABELS, model: str = "tiny") -> dict:
    return {"datasets": {"ct": {"labels": labels}}, "slice": {"size": size},
            "experiments": {"exp": {"dataset": "ct", "train": {"model": model}}}}


def test_a_good_config_has_no_errors() -> None:
    assert config_errors(_config()) == []


def test_a_value_listed_twice_names_the_key_and_the_file() -> None:
    labels = [*GOOD_LABELS, {"name": "spleen", "values": [6, 5]}]
    (inline,) = config_errors(_config(labels=labels))
    assert inline.startswith("config: datasets.ct.labels: ") and "value 5" in inline and "'spleen'" in inline
    (from_file,) = config_errors(_config(labels=labels), {"ct": "config/labels/mine.yaml"})
    assert from_file.startswith("config: datasets.ct.labels (from config/labels/mine.yaml): ")


@pytest.mark.parametrize("model", sorted(PRESETS))
def test_a_slice_size_the_preset_cannot_take_names_size_preset_and_experiment(model: str) -> None:
    m = PRESETS[model].min_size_multiple
    assert config_errors(_config(size=4 * m, model=model)) == []
    (error,) = config_errors(_config(size=4 * m + 2, model=model))
    assert "slice.size" in error and f"experiments.exp.train.model = {model!r}" in error
    assert f"multiple of {m}" in error and f"{4 * m} or {5 * m}" in error


def test_without_experiments_the_size_is_not_checked() -> None:
    config = _config(size=50)
    config["experiments"] = {}
    assert config_errors(config) == []


def test_a_slice_size_the_segmenter_cannot_take_names_its_key() -> None:
    config = _config(size=32)
    config["metrics"] = {"segmenter_channels": [8, 8, 8, 8, 8, 8]}  # 5 poolings need a multiple of 32
    assert config_errors(config) == []
    config["metrics"]["segmenter_channels"].append(8)  # 6 poolings: 64
    (error,) = config_errors(config)
    assert "slice.size 32" in error and "multiple of 64" in error and "metrics.segmenter_channels" in error


def test_unpaired_class_stats_needs_the_image_dataset_labelled_with_the_same_table() -> None:
    config = _config()
    config["datasets"]["mr"] = {"labels": [GOOD_LABELS[0], {"name": "kidney", "values": [5]}]}
    config["experiments"]["exp"].update(images_from="mr")
    config["experiments"]["exp"]["train"].update(mode="unpaired", lambda_class_stats=1.0)
    (error,) = config_errors(config)
    assert error.startswith("config: experiments.exp.train.lambda_class_stats needs datasets.mr.labels")
    assert "'kidney'" in error and "lambda_class_stats: 0" in error
    config["experiments"]["exp"]["train"]["lambda_class_stats"] = 0.0
    assert config_errors(config) == []
    config["experiments"]["exp"]["train"]["lambda_class_stats"] = 1.0
    config["datasets"]["mr"]["labels"] = GOOD_LABELS
    assert config_errors(config) == []
    # The same classes in another order: evaluation would match them by name, training cannot.
    config["datasets"]["mr"]["labels"] = [GOOD_LABELS[0], {"name": "body", "values": [1]}, GOOD_LABELS[1]]
    (error,) = config_errors(config)  # ... body, liver against liver, body (derived)
    assert "same order" in error and "training compares class ids" in error


def test_unpaired_class_stats_against_an_image_only_dataset_says_it_has_no_labels() -> None:
    from medsynth.config.checks import class_stats_errors

    config = _config()
    config["datasets"]["mr"] = {"source": "phantom", "modality": "MR"}  # image-only: no labels
    config["experiments"]["exp"].update(images_from="mr")
    config["experiments"]["exp"]["train"].update(mode="unpaired", lambda_class_stats=1.0)
    (error,) = class_stats_errors(config)
    assert error.startswith("config: experiments.exp.train.lambda_class_stats pulls each class")
    assert "datasets.mr, which has no labels (image-only)" in error and "set lambda_class_stats: 0" in error


def test_generate_from_needs_the_generators_classes_and_spacing_and_label_only_sets_do_not_train() -> None:
    config = _config()
    config["datasets"]["ct"]["preprocess"] = {"spacing_xy": 6.0}
    config["datasets"]["lo"] = {"labels": GOOD_LABELS, "preprocess": {"spacing_xy": 6.0},
                                "layout": {"label": "{case}.nii.gz"}}
    config["experiments"]["exp"]["generate_from"] = ["lo"]
    assert config_errors(config) == []
    config["datasets"]["lo"]["preprocess"]["spacing_xy"] = 3.0
    config["datasets"]["lo"]["labels"] = [GOOD_LABELS[0], {"name": "spleen", "values": [5]}]
    names, spacing = config_errors(config)
    assert "experiments.exp.generate_from names 'lo'" in names and "spleen" in names and "'liver'" in names
    assert "spacing_xy is 3.0" in spacing and "6.0" in spacing
    config["experiments"]["exp"]["generate_from"] = ["nope"]
    (missing,) = config_errors(config)
    assert "'nope', which is not one of the datasets" in missing
    config["experiments"]["exp"] = {"dataset": "lo", "train": {"model": "tiny"}}
    (label_only,) = config_errors(config)
    assert "experiments.exp.dataset is 'lo', a label-only dataset" in label_only and "generate_from" in label_only


def test_init_from_names_a_file_or_another_experiments_generator(tmp_path) -> None:
    config = _config()
    config["experiments"]["tuned"] = {"dataset": "ct", "train": {"model": "tiny",
                                                                "init_from": "results/select/exp/generator.pt"}}
    assert config_errors(config) == []  # the workflow builds it first
    config["experiments"]["tuned"]["train"]["init_from"] = str(tmp_path / "gone.pt")
    (missing,) = config_errors(config)
    assert missing.startswith("config: experiments.tuned.train.init_from: ") and "gone.pt does not exist" in missing
    (tmp_path / "gone.pt").write_bytes(b"x")
    assert config_errors(config) == []
    config["experiments"]["tuned"]["train"]["init_from"] = "results/select/tuned/generator.pt"
    (own,) = config_errors(config)
    assert "the experiment's own generator" in own


def _image_only_config() -> dict:
    """An unpaired experiment whose real images come from an image-only MR dataset (no labels)."""
    config = _config()
    config["datasets"]["mr"] = {"source": "local", "modality": "MR", "layout": {"image": "{case}/mr.nii.gz"}}
    config["experiments"]["exp"].update(images_from="mr")
    config["experiments"]["exp"]["train"].update(mode="unpaired", lambda_class_stats=0.0)
    return config


def test_an_image_only_dataset_can_give_an_unpaired_experiment_its_images() -> None:
    assert config_errors(_image_only_config()) == []


def test_an_image_only_dataset_in_any_other_role_is_refused_naming_the_key() -> None:
    config = _image_only_config()
    config["experiments"]["paired"] = {"dataset": "mr", "generate_from": ["mr"], "train": {"model": "tiny"}}
    errors = config_errors(config)
    assert any(e.startswith("config: experiments.paired.dataset names 'mr', an image-only dataset") for e in errors)
    assert any(e.startswith("config: experiments.paired.generate_from names 'mr', an image-only") for e in errors)


def test_class_statistics_need_the_labels_an_image_only_dataset_lacks() -> None:
    config = _image_only_config()
    config["experiments"]["exp"]["train"]["lambda_class_stats"] = 30.0
    (error,) = config_errors(config)
    assert "experiments.exp.train.lambda_class_stats" in error and "datasets.mr, which has no labels" in error
    assert "set lambda_class_stats: 0" in error


def test_a_layout_with_label_files_but_no_label_table_is_refused() -> None:
    config = _image_only_config()
    config["datasets"]["mr"]["layout"]["label"] = "{case}/seg.nii.gz"
    (error,) = config_errors(config)
    assert error.startswith("config: datasets.mr.layout.label is set, but the dataset has no labels")
    config["datasets"]["mr"]["layout"] = {"label": "{case}/seg.nii.gz"}
    assert "config: datasets.mr is label-only (layout has no image) and has no labels: add its label table " \
        "(labels:)" in config_errors(config)


def test_required_classes_must_be_in_every_labelled_table() -> None:
    config = _image_only_config()
    config["slice"]["require_classes"] = ["liver"]
    assert config_errors(config) == []  # the image-only dataset keeps all its slices
    config["slice"]["require_classes"] = ["liver", "hip"]
    (error,) = config_errors(config)
    assert error.startswith("config: slice.require_classes names ['hip'], which datasets.ct.labels does not have")


def test_an_unpaired_experiment_needs_one_in_plane_spacing() -> None:
    config = _image_only_config()
    config["datasets"]["ct"]["preprocess"] = {"spacing_xy": 2.0}
    config["datasets"]["mr"]["preprocess"] = {"spacing_xy": 1.5}
    (error,) = config_errors(config)
    assert error.startswith("config: experiments.exp is unpaired with datasets.ct.preprocess.spacing_xy 2.0 but "
                            "datasets.mr.preprocess.spacing_xy 1.5")
    config["datasets"]["mr"]["preprocess"]["spacing_xy"] = 2.0
    assert config_errors(config) == []


def test_an_unpaired_experiment_cannot_be_selected_by_pixel_aligned_metrics() -> None:
    """Unpaired validation has no ssim/psnr/rmse and fid is NA without its weights: the demo's select defaults
    (fid, fallback ssim) would fail after the whole training."""
    config = _image_only_config()
    config["select"] = {"metric": "fid", "fallback": "ssim"}
    (error,) = config_errors(config)
    assert error.startswith("config: experiments.exp.select_fallback is ssim") and "unpaired" in error
    assert error.endswith("set experiments.exp.select_fallback: intensity_w1 (or body_dice)")
    config["experiments"]["exp"]["select_metric"] = "psnr"
    (error,) = config_errors(config)
    assert error.startswith("config: experiments.exp.select_metric is psnr")
    config["experiments"]["exp"]["select_metric"] = "intensity_w1"
    assert config_errors(config) == []
    del config["experiments"]["exp"]["select_metric"]
    config["experiments"]["exp"]["select_fallback"] = "body_dice"
    assert config_errors(config) == []
    config["experiments"]["exp"]["train"]["mode"] = "paired"  # paired validation computes ssim
    config["experiments"]["exp"].pop("images_from")
    assert config_errors(config) == []


def test_gpus_for_a_cpu_training_are_refused_naming_both_keys() -> None:
    """A shared cluster's GPUs held idle: the job asks for them (gpus) and trains on the CPU (device)."""
    config = _config()
    config["experiments"]["exp"].update(gpus=2, train={"model": "tiny", "device": "cpu"})
    (error,) = config_errors(config)
    assert error.startswith("config: experiments.exp.gpus is 2, but experiments.exp.train.device is cpu")
    assert "experiments.exp.gpus: 0" in error and "train.device: auto" in error
    for fine in ({"gpus": 0}, {"gpus": 2, "train": {"model": "tiny", "device": "auto"}},
                 {"gpus": 1, "train": {"model": "tiny", "device": "cuda"}}):
        config["experiments"]["exp"] = {"dataset": "ct", "train": {"model": "tiny", "device": "cpu"}, **fine}
        assert config_errors(config) == [], fine
