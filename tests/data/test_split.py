"""Deterministic patient-level split (medsynth.data.split)."""

from __future__ import annotations

from collections import Counter

import pytest

from medsynth.data.split import PARTS, split_cases

RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _ids(n: int, prefix: str = "case") -> list[str]:
    return [f"{prefix}_{i:04d}" for i in range(n)]


def test_every_case_in_exactly_one_part() -> None:
    ids = _ids(50)
    parts = split_cases(ids, RATIOS, seed=0)
    assert sorted(parts) == sorted(ids)
    assert set(parts.values()) <= set(PARTS)
    assert sum(Counter(parts.values()).values()) == 50


def test_deterministic_for_same_seed_and_independent_of_order() -> None:
    ids = _ids(50)
    a = split_cases(ids, RATIOS, seed=3)
    b = split_cases(list(reversed(ids)), RATIOS, seed=3)
    assert a == b


def test_different_seed_gives_different_assignment() -> None:
    ids = _ids(50)
    a = split_cases(ids, RATIOS, seed=0)
    b = split_cases(ids, RATIOS, seed=1)
    moved = sum(a[c] != b[c] for c in ids)
    assert moved >= 10  # independent draws: about half the cases change part


def test_adding_cases_never_moves_existing_ones() -> None:
    old = _ids(50)
    new = old + _ids(10, prefix="late")
    before = split_cases(old, RATIOS, seed=0)
    after = split_cases(new, RATIOS, seed=0)
    assert {c: after[c] for c in old} == before
    # Removing cases does not move the others either.
    fewer = split_cases(old[10:], RATIOS, seed=0)
    assert fewer == {c: before[c] for c in old[10:]}


def test_ratios_roughly_respected_on_1000_cases() -> None:
    ratios = {"train": 0.7, "val": 0.1, "test": 0.2}
    counts = Counter(split_cases(_ids(1000), ratios, seed=0).values())
    for part, ratio in ratios.items():
        assert abs(counts[part] / 1000 - ratio) <= 0.05, (part, counts)


@pytest.mark.parametrize("seed", range(10))
def test_six_cases_leave_no_part_empty(seed: int) -> None:
    parts = split_cases(_ids(6), RATIOS, seed=seed)
    counts = Counter(parts.values())
    assert all(counts[p] >= 1 for p in PARTS), counts
    assert sum(counts.values()) == 6


def test_three_cases_fill_three_parts() -> None:
    counts = Counter(split_cases(_ids(3), RATIOS, seed=0).values())
    assert counts == Counter({"train": 1, "val": 1, "test": 1})


def test_zero_ratio_part_stays_empty() -> None:
    parts = split_cases(_ids(40), {"train": 0.8, "val": 0.2, "test": 0.0}, seed=0)
    counts = Counter(parts.values())
    assert counts["test"] == 0 and counts["train"] > 0 and counts["val"] > 0


def test_too_few_cases_for_the_parts_raise() -> None:
    with pytest.raises(ValueError, match="cannot fill"):
        split_cases(_ids(2), RATIOS, seed=0)


def test_duplicate_case_ids_raise() -> None:
    with pytest.raises(ValueError, match="duplicate") as exc:
        split_cases(["a", "b", "a", "c", "d"], RATIOS, seed=0)
    assert "'a'" in str(exc.value)


@pytest.mark.parametrize(
    "ratios",
    [{"train": 0.6, "val": 0.2, "test": 0.1}, {"train": 0.8, "val": 0.2, "test": 0.2}],
)
def test_ratios_not_summing_to_one_raise(ratios) -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        split_cases(_ids(10), ratios, seed=0)
