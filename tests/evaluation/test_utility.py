"""The utility benchmark's scoring and data: bootstrap intervals over test patients, paired differences, the
training pool with each slice's patient, the test set read a case at a time, relabelling by name."""


import numpy as np
import pytest
import torch

from medsynth.metrics.segmentation import SegmenterRecipe, train_segmenter
from medsynth.data.slice_set import SliceSet
from medsynth.evaluation.utility import bootstrap_dice, bootstrap_units, score_confusions

NAMES = ("background", "body", "organ")


def _set(n: int, seed: int, cases: int) -> SliceSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, 16, 16, dtype=torch.uint8)
    labels[:, 3:13, 3:13] = 1
    for i in range(n):
        x = int(torch.randint(4, 9, (1,), generator=g))
        labels[i, x:x + 3, 5:9] = 2
    images = (labels.float() - 1) * 0.8 + 0.05 * torch.randn(n, 16, 16, generator=g)
    return SliceSet(images[:, None], labels, (labels > 0)[:, None], [f"c{i % cases}" for i in range(n)], list(range(n)))


def _each_its_own(data: SliceSet) -> dict[str, str]:
    """Every case its own patient."""
    return {c: c for c in data.case_ids}


def test_bootstrap_of_perfect_predictions_is_a_point_at_one() -> None:
    conf = torch.zeros(6, 3, 3, dtype=torch.long)
    conf[:, 0, 0], conf[:, 1, 1], conf[:, 2, 2] = 100, 40, 10
    point, lo, hi = bootstrap_dice(conf, 200, 0, organs=[1, 2])
    np.testing.assert_array_equal(point, [1, 1, 1, 1])
    np.testing.assert_array_equal(lo, point)
    np.testing.assert_array_equal(hi, point)


def test_bootstrap_interval_holds_the_point_and_widens_with_spread() -> None:
    g = torch.Generator().manual_seed(0)
    conf = torch.zeros(8, 2, 2, dtype=torch.long)
    conf[:, 0, 0] = 100
    conf[:, 1, 1] = torch.randint(5, 30, (8,), generator=g)
    conf[:, 1, 0] = torch.randint(0, 20, (8,), generator=g)
    point, lo, hi = bootstrap_dice(conf, 500, 0, organs=[1])
    assert lo[1] < point[1] < hi[1] and hi[1] - lo[1] > 0.02


def test_few_test_cases_resample_slices_and_say_so() -> None:
    test = _set(8, 1, 2)
    unit, units, note = bootstrap_units(test.case_ids, _each_its_own(test))
    assert units == 8 and list(unit) == list(range(8))
    assert "over 8 test slices: only 2 test patient(s)" in note and "too narrow" in note


def _case_files(root, case: str, labels: np.ndarray, images: np.ndarray, samples: np.ndarray | None = None):
    """A case's slices.npz (and generate's samples.npz beside it under ``root / "gen"``)."""
    from medsynth.data.slicing import CaseSlices

    n = len(labels)
    path = CaseSlices(images, labels, (labels > 0).astype(np.uint8), np.arange(3, 3 + n, dtype=np.int32),
                      np.zeros((n, 2), np.int32)).save(root / "slices" / case / "slices.npz")
    if samples is not None:
        (root / "gen" / case).mkdir(parents=True)
        np.savez_compressed(root / "gen" / case / "samples.npz", samples=samples.astype(np.float16),
                            z=np.arange(3, 3 + n, dtype=np.int32))
    return path


def _manifest(path, rows: list[tuple[str, str, str, str, str]]):
    from medsynth.io.tables import write_tsv

    return write_tsv(path, [dict(zip(("case_id", "dataset", "source_case", "patient_id", "part"), r)) for r in rows
                            for _ in range(2)], ["case_id", "dataset", "source_case", "patient_id", "part"])


def test_the_training_pool_pairs_every_sample_with_its_label_map_and_patient_in_one_float16_set(tmp_path) -> None:
    """Real slices relabelled by name, then every sample of every generated case of the training label maps
    and the generate_from cohorts (not of the test part), each slice with its patient."""
    from medsynth.evaluation.utility_data import load_training_pool, synthetic_cases

    labels = np.zeros((3, 8, 8), np.uint8)
    labels[1, 2:6, 2:6], labels[1, 3, 3] = 1, 2
    samples = np.stack([np.full((3, 8, 8), k / 2, np.float32) for k in range(2)])
    root = tmp_path / "results"
    own = _case_files(root / "ct", "l0", labels, np.zeros((3, 8, 8), np.float32))
    extra = _case_files(root / "lo", "l0", labels, np.zeros((3, 8, 8), np.float32))  # the same case id elsewhere
    test = _case_files(root / "ct", "t0", labels, np.zeros((3, 8, 8), np.float32))
    gen = tmp_path / "gen"
    for case in ("l0", "lo.l0", "t0"):
        (gen / case).mkdir(parents=True)
        np.savez_compressed(gen / case / "samples.npz", samples=samples.astype(np.float16), z=np.arange(3, 6))
    manifest = _manifest(tmp_path / "manifest.tsv", [("l0", "ct", "l0", "pa", "train"), ("t0", "ct", "t0", "pt", "test"),
                                                     ("lo.l0", "lo", "l0", "px", "generate_from")])
    cases = synthetic_cases(manifest, [own, extra], gen)
    assert [(c.case_id, c.patient_id, c.slices) for c in cases] == [("l0", "pa", own), ("lo.l0", "px", extra)]
    image_labels = np.array([0, 2, 1], np.uint8)[labels]  # the same anatomy, organ and body swapped in its table
    real = _case_files(root / "mr", "r0", image_labels, np.full((3, 8, 8), -0.5, np.float32))
    pool = load_training_pool([real], {"r0": "pr"}, ("background", "organ", "body"), NAMES, cases, "mr")
    assert pool.real == 3 and pool.data.images.dtype == torch.float16 and pool.data.images.shape == (15, 1, 8, 8)
    assert list(pool.patients) == ["pr"] * 3 + ["pa"] * 6 + ["px"] * 6
    assert torch.equal(pool.data.labels[:3], torch.from_numpy(labels))  # relabelled into the experiment's table
    for k in range(2):  # sample k, slice i: its own image with the label map of slice i
        assert torch.equal(pool.data.labels[3 + 3 * k:6 + 3 * k], torch.from_numpy(labels))
        assert float(pool.data.images[3 + 3 * k + 1].max()) == k / 2
    assert pool.data.z[3:9] == [3, 4, 5, 3, 4, 5] and pool.data.masks[4].sum() == 16
    with pytest.raises(ValueError, match="not in the image dataset's split.tsv"):
        load_training_pool([real], {}, NAMES, NAMES, cases, "mr")
    with pytest.raises(ValueError, match="rerun generate"):
        synthetic_cases(manifest, [own], gen)  # generate_from's slices missing from the inputs
    with pytest.raises(ValueError, match="generate.splits"):
        synthetic_cases(_manifest(tmp_path / "only_test.tsv", [("t0", "ct", "t0", "pt", "test")]), [test], gen)


def test_the_test_cases_read_a_case_at_a_time_score_as_the_whole_set(tmp_path) -> None:
    """``TestCases`` (read per file) and the joined set give the same confusions: integer counts summed."""
    from medsynth.evaluation.utility_data import TestCases

    real, test = _set(16, 0, 4), _set(12, 1, 6)
    files = [_case_files(tmp_path, f"c{c}", test.labels[i::6].numpy(), test.images[i::6, 0].float().numpy())
             for i, c in enumerate(range(6))]
    joined = SliceSet(torch.cat([test.images[i::6] for i in range(6)]), torch.cat([test.labels[i::6] for i in range(6)]),
                      torch.cat([test.masks[i::6] for i in range(6)]), [f"c{c}" for c in range(6) for _ in range(2)],
                      list(range(12)))
    models = {name: train_segmenter(real.images, real.labels, 3, SegmenterRecipe(steps, 4, (4, 8)))
              for name, steps in (("a", 2), ("b", 3))}
    streamed_set = TestCases(files, NAMES, NAMES, "mr")
    unit, units, _ = bootstrap_units(streamed_set.case_ids, {f"c{c}": f"c{c}" for c in range(6)})
    streamed = score_confusions(models, streamed_set, unit, units, 3)
    whole = score_confusions(models, joined, unit, units, 3)
    assert all(torch.equal(streamed[k], whole[k]) for k in models) and int(whole["a"].sum()) == 12 * 16 * 16


def test_the_difference_to_real_is_a_paired_bootstrap() -> None:
    """The same test cases resampled for both settings: a setting that is a copy of real differs by exactly 0,
    and a uniformly worse one has an interval below 0 even when the two marginal intervals overlap."""
    from medsynth.evaluation.utility import bootstrap_draws

    g = torch.Generator().manual_seed(0)
    real = torch.zeros(10, 2, 2, dtype=torch.long)
    real[:, 0, 0] = 100
    real[:, 1, 1] = torch.randint(20, 60, (10,), generator=g)  # cases differ a lot in how much organ they show
    real[:, 1, 0] = 4
    worse = real.clone()
    worse[:, 1, 0] += 2  # every case loses a little
    p_real, d_real = bootstrap_draws(real, 400, 3, [1])
    p_worse, d_worse = bootstrap_draws(worse, 400, 3, [1])
    delta = d_worse[:, 1] - d_real[:, 1]
    assert (delta < 0).all()  # paired: every resample sees the same cases lose
    _, lo_real, hi_real = bootstrap_dice(real, 400, 3, [1])
    _, lo_worse, hi_worse = bootstrap_dice(worse, 400, 3, [1])
    assert hi_worse[1] > lo_real[1]  # ... while the marginal intervals overlap
    np.testing.assert_array_equal(bootstrap_draws(real, 400, 3, [1])[1], d_real)


def _relabelled(data: SliceSet, ids: list[int]) -> SliceSet:
    """``data`` with class c written as ``ids[c]`` (the same anatomy in another table)."""
    labels = torch.tensor(ids, dtype=torch.uint8)[data.labels.long()]
    return SliceSet(data.images, labels, data.masks, data.case_ids, data.z)


def in_table(data: SliceSet, names, target, source: str) -> SliceSet:
    """``data`` relabelled from the table ``names`` into ``target`` as the pool and the test cases read it."""
    from medsynth.evaluation.utility_data import relabelling

    lookup = relabelling(names, target, source)
    labels = data.labels if lookup is None else torch.from_numpy(lookup[data.labels.numpy()])
    return SliceSet(data.images, labels, data.masks, data.case_ids, data.z)


def test_the_image_datasets_slices_are_relabelled_into_the_experiments_classes_by_name() -> None:
    data = _set(6, 0, 2)
    other_order = _relabelled(data, [0, 2, 1])  # ("background", "organ", "body")
    back = in_table(other_order, ("background", "organ", "body"), NAMES, "mr")
    assert torch.equal(back.labels, data.labels)
    # A class the experiment does not name is tissue it calls body; the background is class 0 by any name.
    extra = _relabelled(data, [0, 1, 3])
    extra.labels[:, 3, 3] = 2  # a "spleen" pixel inside the body
    moved = in_table(extra, ("clear", "body", "spleen", "organ"), NAMES, "mr")
    expected = data.labels.clone()
    expected[:, 3, 3] = 1
    assert torch.equal(moved.labels, expected)
    with pytest.raises(ValueError, match="label table of the image dataset mr lacks \\['organ'\\]"):
        in_table(data, ("background", "body", "kidney"), NAMES, "the image dataset mr")


def test_the_bootstrap_resamples_patients_not_their_studies(tmp_path) -> None:
    """Six patients with two identical studies each: twelve cases, six units, each study with its twin."""
    from medsynth.io.tables import write_tsv
    from medsynth.evaluation.utility import _unit_confusions, patients_of

    def _units(pred, data, num_classes, patients):  # the test set's per-unit confusions, as the benchmark counts them
        unit, units, note = bootstrap_units(data.case_ids, patients)
        return _unit_confusions(pred, data.labels, torch.from_numpy(unit), units, num_classes), note

    one = _set(12, 2, 6)  # six studies, two slices each
    cases = [f"p{i % 6}_s0" for i in range(12)] + [f"p{i % 6}_s1" for i in range(12)]
    test = SliceSet(torch.cat([one.images, one.images]), torch.cat([one.labels, one.labels]),
                    torch.cat([one.masks, one.masks]), cases, list(range(24)))
    split = write_tsv(tmp_path / "split.tsv", [{"case_id": c, "patient_id": c.split("_")[0], "part": "test"}
                                               for c in sorted(set(cases))], ["case_id", "patient_id", "part"])
    patients = patients_of(split)
    g = torch.Generator().manual_seed(0)
    pred = torch.where(torch.rand(test.labels.shape, generator=g) < 0.15, 1, test.labels.long())  # some errors
    for i in range(12):  # each patient's two studies are predicted alike too
        pred[12 + i] = pred[i]
    confs, note = _units(pred, test, 3, patients)
    assert len(confs) == 6 and note == "95 % bootstrap interval over 6 test patients (12 cases)"
    one_study, _ = _units(pred[:12], SliceSet(one.images, one.labels, one.masks, cases[:12], list(range(12))), 3,
                          patients)
    assert torch.equal(confs, 2 * one_study)  # a patient's studies always move together
    by_case, case_note = _units(pred, test, 3, {c: c for c in cases})
    assert len(by_case) == 12 and "12 test patients" in case_note
    _, lo, hi = bootstrap_dice(confs, 400, 0, organs=[2])
    _, lo_case, hi_case = bootstrap_dice(by_case, 400, 0, organs=[2])
    assert hi[2] - lo[2] > 1.2 * (hi_case[2] - lo_case[2])  # twelve "independent" cases: too narrow
    with pytest.raises(ValueError, match="not in the image dataset's split.tsv"):
        _units(pred, test, 3, {"p0_s0": "p0"})
