"""Matching two label tables' classes by name (fine-tuning), and the warning for a class renamed between them."""

from __future__ import annotations

import logging

from medsynth.models.classes import match_classes

SOURCE = ("background", "kidney", "liver", "body")
TARGET = ("background", "kidneys", "liver", "spleen", "body")


def test_a_renamed_class_with_the_same_label_values_is_warned_about_naming_both(caplog) -> None:
    values_src = {"background": (0,), "kidney": (2, 3), "liver": (5,), "body": ()}
    values_dst = {"background": (0,), "kidneys": (3, 2), "liver": (5,), "spleen": (1,), "body": ()}
    with caplog.at_level(logging.WARNING, logger="medsynth.models.classes"):
        match = match_classes(SOURCE, TARGET, values_src, values_dst)
    assert (match.shared, match.new, match.dropped) == (("background", "liver", "body"), ("kidneys", "spleen"),
                                                        ("kidney",))
    assert match.renamed == (("kidney", "kidneys"),)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "'kidney'" in record.getMessage() and "'kidneys'" in record.getMessage() and "[2, 3]" in record.getMessage()


def test_other_values_or_unknown_values_give_no_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="medsynth.models.classes"):
        other = match_classes(SOURCE, TARGET, {"kidney": (2, 3)}, {"kidneys": (2,)})
        unknown = match_classes(SOURCE, TARGET)  # a source that stores names only (an EMA snapshot)
    assert other.renamed == unknown.renamed == () and not caplog.records
    assert unknown.mapping == (0, None, 2, None, 3)
