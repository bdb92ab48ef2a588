"""A fine-tuning's chain of init_from within a config, and the datasets its starting weights learnt from."""

from __future__ import annotations

from medsynth.config.lineage import chain_datasets, init_from_chain, source_experiment


def _experiments(here: str) -> dict:
    """a (unpaired ct -> mr) -> b (paired ct2, its path spelt absolute) -> c (paired ct3); d from elsewhere."""
    return {
        "a": {"dataset": "ct", "images_from": "mr", "train": {"mode": "unpaired"}},
        "b": {"dataset": "ct2", "train": {"mode": "paired", "init_from": f"{here}/results/select/a/generator.pt"}},
        "c": {"dataset": "ct3", "train": {"mode": "paired", "init_from": "results/train/b/checkpoints/latest.pt"}},
        "d": {"dataset": "ct3", "train": {"mode": "paired", "init_from": "/elsewhere/generator.pt"}},
    }


def test_the_chain_goes_up_every_fine_tuning_of_the_config_and_stops_at_a_file_from_elsewhere(tmp_path) -> None:
    here = str(tmp_path)
    experiments = _experiments(here)
    assert source_experiment(experiments, "results/select/a/generator.pt", here) == "a"
    assert source_experiment(experiments, "/elsewhere/generator.pt", here) is None
    assert init_from_chain(experiments, "c", here) == ["b", "a"]
    # C's starting weights learnt from b's dataset and, through b, from a's label and image datasets.
    assert chain_datasets(experiments, "c", here) == ["ct", "ct2", "mr"]
    assert chain_datasets(experiments, "b", here) == ["ct", "mr"]
    assert init_from_chain(experiments, "a", here) == chain_datasets(experiments, "d", here) == []


def test_a_chain_that_comes_back_to_itself_ends(tmp_path) -> None:
    here = str(tmp_path)
    experiments = {"x": {"dataset": "p", "train": {"init_from": "results/select/y/generator.pt"}},
                   "y": {"dataset": "q", "train": {"init_from": "results/select/x/generator.pt"}}}
    assert init_from_chain(experiments, "x", here) == ["y"]
    assert chain_datasets(experiments, "x", here) == ["q"]
