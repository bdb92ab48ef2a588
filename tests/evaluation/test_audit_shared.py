"""The memorisation audit of what is shared (medsynth.evaluation.memorisation_audit.audit_shared) and how the export uses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsynth.evaluation.memorisation_audit import audit_shared
from medsynth.data.slicing import CaseSlices

SIZE, N = 16, 4


def _anatomy(rng: np.random.Generator) -> np.ndarray:
    """Smooth random images in [-1, 1]: one patient's slices."""
    base = rng.normal(size=(N, SIZE // 4, SIZE // 4))
    return np.tanh(np.kron(base, np.ones((4, 4)))).astype(np.float32)


def _slices(path: Path, images: np.ndarray) -> Path:
    masks = np.ones(images.shape, np.uint8)
    return CaseSlices(images, masks.copy(), masks, np.arange(N, dtype=np.int32),
                      np.zeros((N, 2), np.int32)).save(path / "slices.npz")


def _samples(path: Path, fakes: np.ndarray) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / "samples.npz", samples=fakes.astype(np.float16), z=np.arange(N, dtype=np.int32))
    return path / "samples.npz"


@pytest.fixture
def cohort(tmp_path: Path):
    """Paired: patients p0-p3 train (their real images are the training set), p4 and p5 are test patients
    whose generated images differ from their real ones as an honest generator's do."""
    rng = np.random.default_rng(0)
    real = {p: _anatomy(rng) for p in ("p0", "p1", "p2", "p3", "p4", "p5")}
    honest = lambda p: np.clip(real[p] + rng.normal(0, 0.3, real[p].shape), -1, 1)[None]  # noqa: E731
    files = {p: _slices(tmp_path / "real" / p, real[p]) for p in real}
    train = [files[p] for p in ("p0", "p1", "p2", "p3")]
    test = [(files[p], _samples(tmp_path / "gen" / p, honest(p))) for p in ("p4", "p5")]
    generated = {"p0": real["p0"][None], "p1": honest("p1"), "p2": real["p3"][None]}  # a copy, honest, another's
    return real, files, train, test, {p: _samples(tmp_path / "gen" / p, g) for p, g in generated.items()}


def test_a_copy_of_its_own_scan_or_of_another_training_patient_is_flagged(cohort) -> None:
    from medsynth.evaluation.memorisation_audit import SharedCase

    real, files, train, test, samples = cohort
    shared = [SharedCase(p, p, files[p], samples[p], own=True) for p in samples]
    rows, summary = audit_shared(shared, train, [files["p4"], files["p5"]], test, paired=True, threshold=0.5)
    by = {r["case_id"]: r for r in rows}
    assert by["p0"]["own_ratio_min"] == 0 and by["p0"]["flagged"]  # its own real scan, copied
    assert by["p1"]["own_ratio_median"] > 0.7 and not by["p1"]["flagged"]  # as far as on unseen patients
    assert by["p2"]["nearest_ratio_min"] < 1e-3 and by["p2"]["nearest_case"] == "p3" and by["p2"]["flagged"]
    # Paired, a case's own patient is not its "nearest other patient" (the own-image check covers it).
    assert by["p0"]["nearest_case"] != "p0"
    assert summary["volumes"] == 3 and summary["flagged"] == 2 and summary["own_scale"] > 0


def test_unpaired_has_no_own_image_and_compares_with_every_training_slice(cohort) -> None:
    from medsynth.evaluation.memorisation_audit import SharedCase

    _, files, train, test, samples = cohort
    shared = [SharedCase("p0", "p0", files["p0"], samples["p0"], own=False)]
    rows, summary = audit_shared(shared, train, [files["p4"], files["p5"]], test, paired=False, threshold=0.5)
    (row,) = rows
    assert row["own_ratio_min"] is None and row["own_ratio_median"] is None  # NA: nothing to compare with
    assert row["note"].startswith("own image: NA, unpaired")  # and the row says so
    assert row["nearest_case"] == "p0" and row["nearest_ratio_min"] < 1e-3 and row["flagged"]
    # Paired, a label map whose image the generator was not trained on (a generate_from cohort's): NA, said why.
    (row,), _ = audit_shared(shared, train, [files["p4"], files["p5"]], test, paired=True, threshold=0.5)
    assert row["own_ratio_min"] is None and "a generate_from label map: no image of it is known" in row["note"]


def test_one_training_scan_keeps_the_own_image_check_and_says_why_the_other_is_na(cohort) -> None:
    """Paired, every training slice is the case's own scan's (a 1/1/1 split): nothing else to search. The
    own-image check still flags a copy of the scan. Another study of the same patient (p1 here) is searched:
    its nearest training slices are p0's."""
    from medsynth.evaluation.memorisation_audit import SharedCase

    real, files, _, test, samples = cohort
    shared = [SharedCase(p, "p0", files[p], samples[p], own=True) for p in ("p0", "p1")]
    rows, _ = audit_shared(shared, [files["p0"]], [files["p4"], files["p5"]], test, paired=True, threshold=0.5)
    by = {r["case_id"]: r for r in rows}
    assert by["p0"]["nearest_ratio_min"] is None and by["p0"]["nearest_case"] is None
    assert "the training set holds only this case's own slices" in by["p0"]["note"]
    assert by["p0"]["own_ratio_min"] == 0 and by["p0"]["flagged"]
    assert by["p1"]["nearest_case"] == "p0" and by["p1"]["nearest_ratio_min"] > 0.5 and by["p1"]["note"] == ""
    assert by["p1"]["own_ratio_min"] > 0.5 and not by["p1"]["flagged"]


def test_a_copy_of_another_study_of_a_training_patient_is_flagged(cohort) -> None:
    """A generate_from study of training patient p3 (no own-image check: the generator never saw this scan),
    whose volume reproduces p3's training scan; and a training scan of p3's whose volume copies p3's other
    training scan. The own patient's other scans are searched: both flagged, nearest p3."""
    from medsynth.evaluation.memorisation_audit import SharedCase

    _, files, train, test, samples = cohort
    shared = [SharedCase("followup.p2", "p3", files["p2"], samples["p2"], own=False),  # samples["p2"]: p3's scan
              SharedCase("p2", "p3", files["p2"], samples["p2"], own=True)]  # p2 and p3: two studies of p3
    rows, _ = audit_shared(shared, train, [files["p4"], files["p5"]], test, paired=True, threshold=0.5)
    for row in rows:
        assert row["nearest_case"] == "p3" and row["nearest_ratio_min"] < 1e-3 and row["flagged"], row


def test_without_generated_test_slices_the_own_scan_is_searched_and_the_note_says_why(cohort) -> None:
    """No generated test slice: the own-image check has no unit. A copy of its own scan must still flag."""
    from medsynth.evaluation.memorisation_audit import SharedCase

    _, files, train, _, samples = cohort
    rows, summary = audit_shared([SharedCase("p0", "p0", files["p0"], samples["p0"], own=True)], train,
                                 [files["p4"], files["p5"]], [], paired=True, threshold=0.5)
    (row,) = rows
    assert np.isnan(summary["own_scale"]) and row["own_ratio_min"] is None
    assert row["note"].startswith("own image: NA, no generated test slice")
    assert row["nearest_case"] == "p0" and row["nearest_ratio_min"] < 1e-3 and row["flagged"]


def test_a_perfect_generator_on_the_test_maps_leaves_the_own_check_no_unit_and_says_so(cohort, tmp_path) -> None:
    """Generated test slices equal to their real images: the unit is 0, and the note says so (it said no test
    slice was generated). A copy of its own scan is still flagged by the nearest-slice search."""
    from medsynth.evaluation.memorisation_audit import OWN_EXACT, SharedCase

    real, files, train, _, samples = cohort
    test = [(files[p], _samples(tmp_path / "perfect" / p, real[p][None])) for p in ("p4", "p5")]
    rows, summary = audit_shared([SharedCase("p0", "p0", files["p0"], samples["p0"], own=True)], train,
                                 [files["p4"], files["p5"]], test, paired=True, threshold=0.5)
    (row,) = rows
    assert summary["own_scale"] == 0 and row["own_ratio_min"] is None
    assert row["note"].startswith(OWN_EXACT) and "no generated test slice" not in row["note"]
    assert row["nearest_case"] == "p0" and row["flagged"]


def test_a_volume_without_generated_slices_is_audited_as_such(cohort, tmp_path: Path) -> None:
    """slice.require_classes kept none of a label map's slices: generate wrote no sample slice for it."""
    from medsynth.evaluation.memorisation_audit import SharedCase

    _, files, train, test, samples = cohort
    empty = CaseSlices(np.zeros((0, SIZE, SIZE), np.float32), *(np.zeros((0, SIZE, SIZE), np.uint8),) * 2,
                       np.zeros(0, np.int32), np.zeros((0, 2), np.int32)).save(tmp_path / "empty" / "slices.npz")
    (tmp_path / "gen" / "e").mkdir(parents=True)
    np.savez(tmp_path / "gen" / "e" / "samples.npz", samples=np.zeros((2, 0, SIZE, SIZE), np.float16),
             z=np.zeros(0, np.int32))
    shared = [SharedCase("e", "p9", empty, tmp_path / "gen" / "e" / "samples.npz", own=True),
              SharedCase("p1", "p1", files["p1"], samples["p1"], own=True)]
    for paired in (True, False):
        rows, summary = audit_shared(shared, train, [files["p4"], files["p5"]], test, paired, threshold=0.5)
        e = [r for r in rows if r["case_id"] == "e"]
        assert len(e) == 2 and all(r["slices"] == 0 and r["flagged"] is None and r["nearest_ratio_min"] is None
                                   and r["note"].startswith("no generated slice") and "not audited" in r["note"]
                                   for r in e)
        assert summary["not_audited"] == 2 and summary["volumes"] == 3
        assert next(r for r in rows if r["case_id"] == "p1")["nearest_ratio_min"] > 0  # the others still scored


def test_volumes_no_check_could_compare_are_not_audited_and_the_export_leaves_them_out(cohort, tmp_path) -> None:
    """No real test slice and no generated one (a test split whose slicing kept nothing): neither distance
    has its unit. Copies of training scans must not read "not flagged" and ship as audited."""
    from medsynth.evaluation.memorisation_audit import EXPORT_AUDIT_COLUMNS, SharedCase
    from medsynth.io.tables import read_tsv, write_tsv
    from medsynth.sharing.nnunet_export import ExportCase, apply_audit

    _, files, train, _, samples = cohort
    shared = [SharedCase(p, p, files[p], samples[p], own=True) for p in samples]
    rows, summary = audit_shared(shared, train, [], [], paired=True, threshold=0.5)
    assert all(r["flagged"] is None and r["flagged_slices"] is None and "not audited" in r["note"] for r in rows)
    assert summary["flagged"] == 0 and summary["not_audited"] == 3
    table = read_tsv(write_tsv(tmp_path / "audit.tsv", rows, EXPORT_AUDIT_COLUMNS))
    assert {r["flagged"] for r in table} == {"NA"}
    cases = [ExportCase(f"{p}_syn00", Path(f"{p}.nii.gz"), Path("l.nii.gz"), p,
                        provenance={"synthetic": True, "case_id": p, "sample": "0"}) for p in samples]
    kept, result = apply_audit(cases, table, refuse=True)
    assert kept == [] and result["not_audited"] == result["refused"] == [c.identifier for c in cases]
    assert result["audited"] == 0 and result["flagged"] == []
    shipped, _ = apply_audit(cases, table, refuse=False)
    assert [c.provenance["memorisation"]["flagged"] for c in shipped] == ["NA"] * 3


def test_the_audit_says_how_much_of_each_volume_its_crops_cover(cohort, tmp_path: Path) -> None:
    """The audit sees the crops of the kept slices; the volume covers every labelled slice over the whole
    labelled extent (a body wider than the crop, slices with too little body for the slicing)."""
    from medsynth.evaluation.memorisation_audit import SharedCase
    from medsynth.io.nifti import save_volume

    _, files, train, test, samples = cohort
    grid = np.zeros((24, 24, 6), np.uint8)
    grid[:, :, :5] = 2  # 5 labelled slices of 24 x 24; the crops: 4 slices of 16 x 16 labelled voxels
    label = save_volume(tmp_path / "pre" / "p1" / "label.nii.gz", grid, np.diag([6.0, 6.0, 8.0, 1.0]))
    shared = [SharedCase("p1", "p1", files["p1"], samples["p1"], own=True, grid_label=label),
              SharedCase("p2", "p2", files["p2"], samples["p2"], own=True)]  # no grid label: NA
    rows, summary = audit_shared(shared, train, [files["p4"], files["p5"]], test, paired=True, threshold=0.5)
    by = {r["case_id"]: r for r in rows}
    assert by["p1"]["audited_share"] == pytest.approx(4 * 16 * 16 / (5 * 24 * 24))
    assert by["p2"]["audited_share"] is None
    assert summary["audited_share"] == pytest.approx(4 * 16 * 16 / (5 * 24 * 24))


def test_the_export_leaves_flagged_volumes_out_and_ships_the_audit(tmp_path: Path) -> None:
    from medsynth.sharing.nnunet_export import ExportCase, apply_audit

    cases = [ExportCase(f"c{i}_syn00", Path(f"c{i}.nii.gz"), Path("l.nii.gz"), f"p{i}",
                        provenance={"synthetic": True, "case_id": f"c{i}", "sample": "0"}) for i in range(3)]
    rows = [{"case_id": f"c{i}", "sample": "0", "own_ratio_min": "0.9", "nearest_ratio_min": "1.1",
             "audited_share": "0.7", "flagged": "True" if i == 1 else "False"} for i in range(3)]
    kept, summary = apply_audit(cases, rows, refuse=True)
    assert [c.identifier for c in kept] == ["c0_syn00", "c2_syn00"]
    assert summary["flagged"] == summary["refused"] == ["c1_syn00"]
    assert kept[0].provenance["memorisation"] == {"own_ratio_min": "0.9", "nearest_ratio_min": "1.1",
                                                  "audited_share": "0.7", "flagged": "False"}
    shipped, summary = apply_audit(cases, rows, refuse=False)
    assert len(shipped) == 3 and summary["refused"] == [] and shipped[1].provenance["memorisation"]["flagged"] == "True"
    with pytest.raises(ValueError, match="c2_syn00 has no row in the memorisation audit"):
        apply_audit(cases, rows[:2], refuse=True)


def test_the_closest_pairs_panels_show_each_generated_slice_beside_its_nearest_training_slice(tmp_path: Path) -> None:
    """The figure reads only the training cases its rows name; each panel holds the slices the row names."""
    from memory_cohort import write_cohort

    from medsynth.evaluation.memorisation_audit import (MEMORISATION_COLUMNS, generated_images, memorisation_cases,
                                memorisation_pairs_panels)
    from medsynth.inference.generate_cases import generated_cases
    from medsynth.io.tables import write_tsv

    c = write_cohort(tmp_path, 2, 3, slices=6, size=16)
    cases = generated_cases(c["test"], Path(c["cases_dir"]))
    rows, _, _ = memorisation_cases(generated_images(cases), c["train"], c["test"], 0.5)
    table = write_tsv(tmp_path / "memorisation.tsv", rows, MEMORISATION_COLUMNS)
    panels = memorisation_pairs_panels(table, Path(c["cases_dir"]), c["test"], c["train"], count=4)
    assert len(panels) == 4
    for (generated, nearest, title, flagged), row in zip(panels, rows):
        train = CaseSlices.load(tmp_path / "slices" / row["nearest_case"] / "slices.npz")
        with np.load(Path(c["cases_dir"]) / row["case_id"] / "samples.npz") as f:
            sample = f["samples"][row["sample"]][list(f["z"]).index(row["z"])].astype(np.float32)
        np.testing.assert_array_equal(nearest, train.images[list(train.z).index(row["nearest_z"])])
        np.testing.assert_array_equal(generated, sample)
        assert title.startswith(f"{row['case_id']} z{row['z']} s{row['sample']}") and flagged == row["flagged"]
    # No real test slice of the image dataset: every ratio is NA (memorisation.tsv's "NA"); the figure has no
    # panel to show rather than failing to read the table.
    for row in rows:
        row["ratio"], row["flagged"] = None, False
    table = write_tsv(tmp_path / "memorisation_na.tsv", rows, MEMORISATION_COLUMNS)
    assert memorisation_pairs_panels(table, Path(c["cases_dir"]), c["test"], c["train"], count=4) == []


def test_test_slices_that_are_training_slices_stop_the_audit_of_what_is_shared(cohort) -> None:
    """A test study also in training under another id (here p4's slices are the training set's p0's): the audit's
    unit, the test slices' median distance to training, is 0. evaluate's audit refuses it; the audit of what is
    shared shipped every volume unflagged by the nearest-slice check, noting 'no real test slice'."""
    from medsynth.evaluation.memorisation_audit import SharedCase

    real, files, train, test, samples = cohort
    shared = [SharedCase(p, p, files[p], samples[p], own=True) for p in samples]
    with pytest.raises(ValueError, match="distance 0 to the training set.*list each study once"):
        audit_shared(shared, train, [files["p0"], files["p1"]], test, paired=True, threshold=0.5)
