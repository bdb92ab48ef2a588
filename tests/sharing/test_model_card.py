import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medsynth.cli import main
from medsynth.io.tables import write_tsv
from medsynth.sharing.card_text import render
from medsynth.sharing.model_card import (NOT_STATED, PENDING, SECTIONS, card_before_selection, dataset_entry, job_times,
                                         missing_fields, spacing_by_dataset, write_cards)
from medsynth.io.checkpoint import load_checkpoint, save_checkpoint
from medsynth.train.records import JOB_COLUMNS

LABELS = [{"name": "background", "values": [0]}, {"name": "liver", "values": [3, 4]}]


def job(time: str, event: str, step: int, detail: str = "") -> dict:
    return {"time": time, "event": event, "step": step, "slurm_job_id": "", "processes": 1, "detail": detail}


def test_wall_time_sums_each_job_from_start_to_end_and_names_the_hardware(tmp_path):
    write_tsv(tmp_path / "jobs.tsv", [
        job("2026-01-01T10:00:00", "started", 0, "1 x NVIDIA H200"),
        job("2026-01-01T11:00:00", "stopped", 500, "SIGUSR1 (time limit); checkpoint written"),
        job("2026-01-01T12:00:00", "resumed", 500, "1 x NVIDIA H200"),  # crashed: no end
        job("2026-01-01T13:00:00", "resumed", 600, "2 x NVIDIA A100"),
        job("2026-01-01T13:30:00", "finished", 900),
    ], JOB_COLUMNS)
    times = job_times(tmp_path / "jobs.tsv")
    assert times["wall_time_s"] == 5400 and times["wall_time"] == "1 h 30 min"
    assert times["jobs"] == 3 and times["jobs_without_end"] == 1
    assert times["hardware"] == ["1 x NVIDIA H200", "2 x NVIDIA A100"]
    assert job_times(tmp_path / "absent.tsv")["hardware"] == ["not recorded"]


@pytest.fixture
def sources(tmp_path):
    """A dataset's split table, two training cases' slices and preprocessing meta, a job log."""
    rows = [{"case_id": f"p{i}_s{j}", "patient_id": f"p{i}", "part": part}
            for i, part in enumerate(["train", "train", "val", "test"]) for j in range(2 if i == 0 else 1)]
    write_tsv(tmp_path / "split.tsv", rows, ["case_id", "patient_id", "part"])
    slices, metas = [], []
    for n, (case, thickness) in enumerate((("p0_s0", 2.5), ("p1_s0", 3.0))):
        slices.append(tmp_path / f"{case}.npz")
        # The second case's body is wider than the crop: 5 of its 50 body voxels outside.
        np.savez(slices[-1], z=np.arange(3 + n), labels=np.zeros((3 + n, 4, 4), np.uint8), crop_cut=[5 * n, 40 + 10 * n])
        metas.append(tmp_path / f"{case}.json")
        metas[-1].write_text(json.dumps({"spacing": [2.0, 2.0, thickness]}))
    write_tsv(tmp_path / "jobs.tsv", [job("2026-01-01T10:00:00", "started", 0, "CPU x86_64, 2 threads"),
                                      job("2026-01-01T10:05:00", "finished", 6)], JOB_COLUMNS)
    return tmp_path, slices, metas


def selection_card(root, slices, metas, **settings):
    dataset = {"source": "local", "modality": "CT"}
    entry = dataset_entry("ct", "label maps and images (paired)", dataset, root / "split.tsv", slices)
    return card_before_selection("exp", [entry], LABELS, "CT", {"ct_window": [-1000, 1000], "spacing_xy": 2.0},
                                 metas, {"model": "tiny", "mode": "paired", "steps": 6, **settings}, 32,
                                 root / "jobs.tsv", "9.9")


def test_card_counts_patients_slices_and_spacing_from_the_files(sources):
    card = selection_card(*sources)
    data = card["training_data"]
    (entry,) = data["datasets"]
    assert entry["patients"] == {"train": 2, "val": 1, "test": 1} and entry["cases"]["train"] == 3
    assert entry["train_slices"] == 3 + 4
    assert entry["body_outside_crop"] == {"cases": 1, "of": 2, "share": round(5 / 90, 4)}
    assert data["spacing"] == {"in_plane_mm": [2.0, 2.0], "slice_mm": [2.5, 3.0]}
    assert data["intensity"] == {"ct_window": [-1000, 1000]}
    # The table as the generator sees it: a derived body class after the listed ones.
    assert data["labels"] == [{"id": 0, "name": "background", "values": [0]},
                              {"id": 1, "name": "liver", "values": [3, 4]}, {"id": 2, "name": "body", "values": []}]
    assert card["training"]["wall_time_s"] == 300 and card["training"]["hardware"] == ["CPU x86_64, 2 threads"]
    assert card["training"]["init_from"] is None and card["model"]["slice_size"] == 32
    assert "diagnosis" in card["use"]["not_for"]
    assert missing_fields(card) == ["selection", "test_metrics", "licence"] and card["test_metrics"] == PENDING


def test_a_fine_tuned_run_names_its_source_and_says_when_the_source_holds_no_card(sources, tmp_path):
    source = tmp_path / "latest.pt"  # a run's latest.pt or a snapshot: weights, no card
    save_checkpoint(source, {"step": 3, "ema": {"w": torch.ones(2)}, "classes": ["background", "liver", "body"]})
    card = selection_card(*sources, init_from=str(source))
    init = card["training"]["init_from"]
    assert init["path"] == str(source) and len(init["digest"]) > 8
    assert "holds no model card" in init["card"] and "not known" in init["card"] and "datasets" not in init
    text = render({**card, "selection": {"step": 6}})
    assert "## Initialised from" in text and f"{source} holds no model card" in text


def shared_source(sources, tmp_path, licence: str | None) -> Path:
    """A source generator with its card: selection's generator.pt, completed (and shared) when ``licence``."""
    root, slices, metas = sources
    card = {**selection_card(root, slices, metas), "selection": {"metric": "ssim", "value": 0.5, "step": 6}}
    save_checkpoint(tmp_path / "src" / "generator.pt", {"step": 6, "ema": {"w": torch.ones(2)}, "card": card})
    if licence is None:
        return tmp_path / "src" / "generator.pt"
    write_tsv(tmp_path / "src" / "test_metrics.tsv", [{"metric": "ssim", "mean": 0.6, "std": 0.1, "n": 3}],
              ["metric", "mean", "std", "n", "note"])
    write_cards(tmp_path / "src" / "generator.pt", tmp_path / "src" / "test_metrics.tsv", {"ct": licence},
                tmp_path / "src" / "MODEL_CARD.md", tmp_path / "src" / "share")
    return tmp_path / "src" / "share" / "generator.pt"


def test_a_fine_tuned_generators_card_carries_its_sources_data_and_licences(sources, tmp_path):
    source = shared_source(sources, tmp_path, "CC BY-NC 4.0")
    card = {**selection_card(*sources, init_from=str(source)), "selection": {"metric": "ssim", "value": 0.4, "step": 2}}
    init = card["training"]["init_from"]
    assert init["experiment"] == "exp"
    assert init["datasets"] == [{"name": "ct", "role": "label maps and images (paired)", "source": "local",
                                 "modality": "CT", "licence": "CC BY-NC 4.0"}]
    save_checkpoint(tmp_path / "generator.pt", {"step": 2, "ema": {"w": torch.ones(2)}, "card": card})
    write_tsv(tmp_path / "test_metrics.tsv", [{"metric": "ssim", "mean": 0.5, "std": 0.1, "n": 3}],
              ["metric", "mean", "std", "n", "note"])
    full = write_cards(tmp_path / "generator.pt", tmp_path / "test_metrics.tsv", {"ct": "CC BY 4.0"},
                       tmp_path / "MODEL_CARD.md", tmp_path / "share")
    text = (tmp_path / "MODEL_CARD.md").read_text()
    assert full["training"]["init_from"]["datasets"][0]["licence"] == "CC BY-NC 4.0"  # not this run's CC BY 4.0
    for needle in ("## Initialised from", "generator `exp`",
                   "| ct | label maps and images (paired) | local | CT | CC BY-NC 4.0 |",
                   "- ct (initialised from generator `exp`): CC BY-NC 4.0", "- ct: CC BY 4.0"):
        assert needle in text, needle


def test_a_source_cards_missing_licences_come_from_the_workflow_or_are_said_to_be_missing(sources, tmp_path):
    """Selection's own generator.pt (another experiment of the workflow) holds a card without licences."""
    source = shared_source(sources, tmp_path, None)
    card = {**selection_card(*sources, init_from=str(source)), "selection": {"step": 2}}
    assert card["training"]["init_from"]["datasets"][0]["licence"] is None
    save_checkpoint(tmp_path / "generator.pt", {"step": 2, "ema": {"w": torch.ones(2)}, "card": card})
    write_tsv(tmp_path / "t.tsv", [{"metric": "ssim", "mean": 0.5, "std": 0.1, "n": 3}], ["metric", "mean", "std", "n"])
    args = (tmp_path / "generator.pt", tmp_path / "t.tsv", {"ct": "CC BY 4.0"}, tmp_path / "C.md", tmp_path / "share")
    given = write_cards(*args, source_licences={"ct": "CC BY-NC 4.0"})
    assert given["training"]["init_from"]["datasets"][0]["licence"] == "CC BY-NC 4.0"
    unstated = write_cards(*args)
    assert "not stated" in unstated["training"]["init_from"]["datasets"][0]["licence"]


def test_cards_with_test_metrics_are_written_beside_the_generator_and_shared(sources, tmp_path, capsys):
    card = {**selection_card(*sources), "selection": {"metric": "ssim", "value": 0.5, "step": 6}}
    save_checkpoint(tmp_path / "generator.pt", {"step": 6, "ema": {"w": torch.ones(2)}, "card": card})
    write_tsv(tmp_path / "test_metrics.tsv", [
        {"metric": "ssim", "mean": 0.61, "std": 0.1, "n": 7},
        {"metric": "fid", "mean": "NA", "std": "NA", "n": 0, "note": "weights absent"}],
        ["metric", "mean", "std", "n", "note"])
    full = write_cards(tmp_path / "generator.pt", tmp_path / "test_metrics.tsv", {"ct": "CC BY 4.0"},
                       tmp_path / "MODEL_CARD.md", tmp_path / "share")
    assert full["licence"] == {"ct": "CC BY 4.0"}
    assert missing_fields(full) == [] and set(SECTIONS) <= set(full)
    assert full["test_metrics"]["ssim"] == {"mean": 0.61, "std": 0.1, "n": 7}
    assert math.isnan(full["test_metrics"]["fid"]["mean"]) and full["test_metrics"]["fid"]["note"] == "weights absent"
    shared = load_checkpoint(tmp_path / "share/generator.pt")
    assert json.dumps(shared["card"], sort_keys=True) == json.dumps(full, sort_keys=True)
    torch.testing.assert_close(shared["ema"]["w"], torch.ones(2))
    text = (tmp_path / "MODEL_CARD.md").read_text()
    assert text == (tmp_path / "share/MODEL_CARD.md").read_text() == render(full)
    for needle in ("| ssim | 0.61 | 0.1 | 7 |", "| fid | NA |", "1: liver ← 3, 4", "2: body ← derived",
                   "| ct | label maps and images (paired) | local | CT | 2 / 1 / 1 | 7 | CC BY 4.0 |", "- ct: CC BY 4.0", "wall time: 5.0 min",
                   "spacing: 2.0 x 2.0 mm in-plane, slices 2.5 to 3.0 mm"):
        assert needle in text, needle
    assert main(["info", str(tmp_path / "share/generator.pt"), "--card"]) == 0
    assert capsys.readouterr().out.strip() == text.strip()
    assert main(["info", str(tmp_path / "share/generator.pt")]) == 0
    assert json.loads(capsys.readouterr().out)["card"]["selection"]["step"] == 6
    unstated = write_cards(tmp_path / "generator.pt", tmp_path / "test_metrics.tsv", {"ct": None},
                           tmp_path / "MODEL_CARD.md", tmp_path / "share")
    assert unstated["licence"]["ct"] == NOT_STATED.format(name="ct") and "datasets.ct.licence" in NOT_STATED.format(
        name="ct")


def test_an_unpaired_card_states_the_grid_of_the_label_maps_and_of_the_images(sources, tmp_path):
    """Selection's card has the image dataset's spacing only; an unpaired generator draws on the label maps'
    grid, whose slices may be thinner or thicker: the model_card rule states both."""
    root, slices, _ = sources
    entries = [dataset_entry("ct", "label maps", {"source": "local", "modality": "CT"}, root / "split.tsv", slices),
               dataset_entry("mr", "images (unpaired: other patients)", {"source": "local", "modality": "MR"},
                             root / "split.tsv", slices)]
    metas = []
    for dataset, case, spacing in (("ct", "a", [1.5, 1.5, 2.0]), ("ct", "b", [1.5, 1.5, 5.0]), ("mr", "c", [1.5, 1.5, 4.0])):
        metas.append(tmp_path / "preprocess" / dataset / case / "meta.json")
        metas[-1].parent.mkdir(parents=True)
        metas[-1].write_text(json.dumps({"spacing": spacing}))
    card = card_before_selection("exp", entries, LABELS, "MR", {"mr_percentiles": [0.5, 99.5]}, metas[2:],
                                 {"model": "tiny", "mode": "unpaired", "steps": 6}, 32, root / "jobs.tsv", "9.9")
    save_checkpoint(tmp_path / "generator.pt", {"step": 6, "card": {**card, "selection": {"step": 6}}})
    write_tsv(tmp_path / "test_metrics.tsv", [{"metric": "fid", "mean": 1.0, "std": 0.0, "n": 3}],
              ["metric", "mean", "std", "n"])
    # Selection's card: the image dataset's grid, named as such (not the label maps').
    assert "- spacing (mr): 1.5 x 1.5 mm in-plane, slices 4.0 mm\n- intensity" in render({**card, "licence": None})
    spacing = spacing_by_dataset(metas)
    assert spacing == {"ct": {"in_plane_mm": [1.5, 1.5], "slice_mm": [2.0, 5.0]},
                       "mr": {"in_plane_mm": [1.5, 1.5], "slice_mm": [4.0, 4.0]}}
    full = write_cards(tmp_path / "generator.pt", tmp_path / "test_metrics.tsv", {}, tmp_path / "MODEL_CARD.md",
                       tmp_path / "share", spacing=spacing)
    assert [d["spacing"] for d in full["training_data"]["datasets"]] == [spacing["ct"], spacing["mr"]]
    text = (tmp_path / "share/MODEL_CARD.md").read_text()
    assert "- spacing (ct): 1.5 x 1.5 mm in-plane, slices 2.0 to 5.0 mm" in text
    assert "- spacing (mr): 1.5 x 1.5 mm in-plane, slices 4.0 mm" in text
    assert "- spacing: " not in text


def test_a_generator_without_a_card_is_refused_naming_the_file(tmp_path, capsys):
    save_checkpoint(tmp_path / "old.pt", {"step": 1, "ema": {}})
    with pytest.raises(ValueError, match="old.pt: holds no model card"):
        write_cards(tmp_path / "old.pt", tmp_path / "t.tsv", {}, tmp_path / "c.md", tmp_path / "share")
    assert main(["info", str(tmp_path / "old.pt"), "--card"]) == 2
    assert "old.pt: holds no model card" in capsys.readouterr().err


def test_the_card_shows_the_memorisation_audit_of_what_is_shared(sources, tmp_path):
    from medsynth.evaluation.memorisation_audit import EXPORT_AUDIT_COLUMNS
    from medsynth.sharing.model_card import shared_audit

    card = {**selection_card(*sources), "selection": {"metric": "ssim", "value": 0.5, "step": 6}}
    save_checkpoint(tmp_path / "generator.pt", {"step": 6, "ema": {"w": torch.ones(2)}, "card": card})
    write_tsv(tmp_path / "test_metrics.tsv", [{"metric": "ssim", "mean": 0.61, "std": 0.1, "n": 7}],
              ["metric", "mean", "std", "n", "note"])
    rows = [{"case_id": c, "sample": k, "flagged": c == "p0_s0" and k == 1, "audited_share": share}
            for c, share in (("p0_s0", 0.62), ("p1_s0", 0.4)) for k in (0, 1)]
    rows.append({"case_id": "p2_s0", "sample": 0, "flagged": None, "audited_share": None})  # no check could run
    write_tsv(tmp_path / "memorisation_audit.tsv", rows, EXPORT_AUDIT_COLUMNS)
    audit = shared_audit(tmp_path / "memorisation_audit.tsv", refuse=True)
    full = write_cards(tmp_path / "generator.pt", tmp_path / "test_metrics.tsv", {"ct": "CC BY 4.0"},
                       tmp_path / "MODEL_CARD.md", tmp_path / "share", audit=audit)
    assert full["shared_audit"]["volumes audited"] == 4 and full["shared_audit"]["flagged as possible copies"] == 1
    text = (tmp_path / "share/MODEL_CARD.md").read_text()
    for needle in ("## Memorisation audit of the shared synthetic cases", "volumes audited: 4",
                   "flagged volumes: p0_s0 sample 1", "not audited): p2_s0 sample 0",
                   "flagged or not audited volumes in the export: left out",
                   "labelled voxels of a volume audited: median 51 %, smallest 40 %"):
        assert needle in text, needle
    assert "shipped, marked as they are" in render({**full, "shared_audit": shared_audit(
        tmp_path / "memorisation_audit.tsv", refuse=False)})
    assert "nothing" in render({**full, "shared_audit": shared_audit(None, refuse=True)})
    # With generate_from datasets the card says which cases generation left out, or that it left out none.
    # It counts them and names none: their ids and files are test patients'.
    left = render({**full, "shared_audit": shared_audit(tmp_path / "memorisation_audit.tsv", True,
                                                        {"maps.PETCT_06a": "patient PETCT_06a is in the test part"})})
    assert "label maps left out of generation (a test patient's study): 1 (generate_from label maps" in left
    assert "logs/generate/<experiment>.log names them" in left and "PETCT_06a" not in left
    assert "(a test patient's study): none" in render({**full, "shared_audit": shared_audit(
        tmp_path / "memorisation_audit.tsv", True, {})})
    assert "left out of generation" not in text  # an experiment without generate_from
    assert "against the real image of its own label map and the nearest training slice of another patient" in text
    # Unpaired, the own-image check is NA for every volume: the card must not claim it was made.
    unpaired = render({**full, "model": {**full["model"], "mode": "unpaired"}})
    assert "real image of its own label map and" not in unpaired
    assert ("against the nearest training slice of the image dataset" in unpaired
            and "Unpaired, no volume is compared with a real image of its own label map" in unpaired)


def test_a_metric_whose_count_is_na_is_carried_to_the_card(sources, tmp_path):
    card = {**selection_card(*sources), "selection": {"metric": "ssim", "value": 0.5, "step": 6}}
    save_checkpoint(tmp_path / "generator.pt", {"step": 6, "ema": {"w": torch.ones(2)}, "card": card})
    write_tsv(tmp_path / "test_metrics.tsv", [{"metric": "kid", "mean": "NA", "std": "NA", "n": "NA",
                                               "note": "too few slices"}], ["metric", "mean", "std", "n", "note"])
    full = write_cards(tmp_path / "generator.pt", tmp_path / "test_metrics.tsv", {"ct": "CC BY 4.0"},
                       tmp_path / "MODEL_CARD.md", tmp_path / "share")
    assert full["test_metrics"]["kid"]["n"] == "NA"
    assert "| kid | NA |  | NA | too few slices |" in (tmp_path / "MODEL_CARD.md").read_text()


def test_the_card_says_how_much_body_the_crop_cut_or_why_it_cannot(sources):
    """A body wider than slice.size x spacing_xy (a 384-mm crop, a 450-mm pelvis) trains on cut slices: the card
    counts the cases and the voxels; slices of an older medsynth have no count, which the card says."""
    root, slices, metas = sources
    text = render({**selection_card(root, slices, metas), "selection": {"step": 6}})
    assert ("- body outside the training crop (ct): 1 of 2 training cases (5.6 % of all training slices' body "
            "voxels): training saw their body cut at the crop's edge; a larger slice.size or "
            "datasets.ct.preprocess.spacing_xy takes it in") in text
    with np.load(slices[1]) as npz:
        np.savez(slices[1], z=npz["z"], labels=npz["labels"], crop_cut=[0, 50])
    assert "- body outside the training crop (ct): none" in render({**selection_card(root, slices, metas),
                                                                    "selection": {"step": 6}})
    with np.load(slices[0]) as npz:
        np.savez(slices[0], z=npz["z"], labels=npz["labels"])  # written before medsynth counted it
    card = selection_card(root, slices, metas)
    assert card["training_data"]["datasets"][0]["body_outside_crop"]["cases"].startswith("NA: the slices of 1 ")
    assert "(ct): NA: the slices of 1 training case(s) were written before" in render({**card, "selection": {}})


def test_the_card_names_the_classes_in_no_training_slice(sources):
    """liver (class 1) is in no training slice: the generator paints it without having learnt it. The counts
    are summed over the training cases; slices of an older medsynth have none: NA, and how to re-slice."""
    root, slices, metas = sources
    counts = [np.bincount([0, 2, 2], minlength=3), np.array([5])]  # background and body; background only
    for path, voxels in zip(slices, counts):
        with np.load(path) as npz:
            np.savez(path, **{k: npz[k] for k in npz.files}, class_voxels=voxels)
    card = selection_card(root, slices, metas)
    assert card["training_data"]["datasets"][0]["class_voxels"] == [6, 0, 2]
    text = render({**card, "selection": {"step": 6}})
    assert ("- classes in no training slice (ct): liver (1): the generator never saw them in training, so what "
            "it paints under them") in text
    with np.load(slices[0]) as npz:
        np.savez(slices[0], **{k: npz[k] for k in npz.files if k != "class_voxels"}, class_voxels=np.array([1, 3, 2]))
    assert "- classes in no training slice (ct): none" in render({**selection_card(root, slices, metas),
                                                                  "selection": {"step": 6}})
    with np.load(slices[1]) as npz:
        np.savez(slices[1], z=npz["z"], labels=npz["labels"], crop_cut=npz["crop_cut"])  # before the count
    card = selection_card(root, slices, metas)
    assert card["training_data"]["datasets"][0]["class_voxels"] is None
    assert ("- classes in no training slice (ct): NA: its training slices predate the count"
            in render({**card, "selection": {}}))
    del card["training_data"]["datasets"][0]["class_voxels"]  # a card from before the count: no line
    assert "classes in no training slice" not in render({**card, "selection": {}})


def test_the_card_says_when_its_patients_are_cases(sources):
    """A cases table without patient ids splits (and counts) cases as patients: the card says so."""
    root, slices, metas = sources
    text = render({**selection_card(root, slices, metas), "selection": {}})
    assert "- patients (ct)" not in text  # p0 has two studies: patient ids are given
    write_tsv(root / "split.tsv", [{"case_id": c, "patient_id": c, "part": p} for c, p in
                                   (("a", "train"), ("b", "train"), ("c", "val"), ("d", "test"))],
              ["case_id", "patient_id", "part"])
    card = selection_card(root, slices, metas)
    assert card["training_data"]["datasets"][0]["patient_ids"] is False
    assert "- patients (ct): no patient ids given: each case counted as its own patient" in render(
        {**card, "selection": {}})


def test_the_audited_share_median_of_an_even_count_is_the_mean_of_the_middle_two(tmp_path):
    """Two volumes audited over 50 % and 100 % of their voxels: the median is 75 %, not the upper one."""
    from medsynth.evaluation.memorisation_audit import EXPORT_AUDIT_COLUMNS
    from medsynth.sharing.model_card import shared_audit

    rows = [{"case_id": c, "sample": 0, "flagged": False, "audited_share": s} for c, s in (("a", 0.5), ("b", 1.0))]
    write_tsv(tmp_path / "audit.tsv", rows, EXPORT_AUDIT_COLUMNS)
    covered = shared_audit(tmp_path / "audit.tsv", refuse=True)["labelled voxels of a volume audited"]
    assert covered.startswith("median 75 %, smallest 50 %"), covered
