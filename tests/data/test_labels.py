"""The label table (medsynth.data.labels): source values -> consecutive class ids."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth.data.labels import LabelError, LabelTable

ENTRIES = [
    {"name": "background", "values": [0]},
    {"name": "liver", "values": [5]},
    {"name": "kidney", "values": [2, 3]},  # left and right kidney -> one class
    {"name": "bone", "values": [10, 11, 12]},
]


def test_from_config_names_values_and_num_classes() -> None:
    table = LabelTable.from_config(ENTRIES)
    # A table without a body class gets one, last, mapped from no label value.
    assert table.names == ("background", "liver", "kidney", "bone", "body")
    assert table.values == ((0,), (5,), (2, 3), (10, 11, 12), ())
    assert table.num_classes == 5
    assert table.body_class == 4 and table.body_derived


def test_a_table_with_a_body_class_is_not_given_a_second_one() -> None:
    entries = [ENTRIES[0], {"name": "body", "values": [1]}, *ENTRIES[1:]]
    table = LabelTable.from_config(entries)
    assert table.names.count("body") == 1 and table.num_classes == 5
    assert table.body_class == 1 and not table.body_derived
    assert table.apply(np.array([0, 1, 5]), "x")[1] == 1


def test_several_source_values_map_to_one_class() -> None:
    table = LabelTable.from_config(ENTRIES)
    label = np.array([[[0, 5, 2], [3, 10, 11]], [[12, 0, 3], [2, 5, 10]]], dtype=np.int32)
    classes = table.apply(label, "label.nii.gz")
    assert classes.dtype == np.uint8
    expected = np.array([[[0, 1, 2], [2, 3, 3]], [[3, 0, 2], [2, 1, 3]]], dtype=np.uint8)
    np.testing.assert_array_equal(classes, expected)


def test_lookup_marks_unlisted_values() -> None:
    lut = LabelTable.from_config(ENTRIES).lookup()
    assert lut.tolist() == [0, -1, 2, 2, -1, 1, -1, -1, -1, -1, 3, 3, 3]


def test_values_given_as_strings_are_integers() -> None:
    table = LabelTable.from_config([{"name": "bg", "values": ["0"]}, {"name": "x", "values": ["7"]}])
    np.testing.assert_array_equal(table.apply(np.array([7, 0, 7]), "f"), [1, 0, 1])


BAD_VALUES = {"gap": [4], "gap_and_above": [4, 99], "above_max": [200], "negative": [-1],
              "beyond_uint16": [70000], "uint8_max": [255]}


def _fits(values: list[int], dtype: type) -> bool:
    info = np.iinfo(dtype)
    return info.min <= min(values) and max(values) <= info.max


@pytest.mark.parametrize(
    "bad_values, dtype",
    [pytest.param(v, t, id=f"{k}-{np.dtype(t).name}") for k, v in BAD_VALUES.items()
     for t in (np.int32, np.uint8, np.uint16, np.int16) if _fits(v, t)],
)
def test_unknown_values_raise_naming_values_and_source(bad_values: list[int], dtype: type) -> None:
    table = LabelTable.from_config(ENTRIES)
    label = np.array([0, 5, 2, *bad_values], dtype=dtype)
    with pytest.raises(LabelError) as exc:
        table.apply(label, "/data/case_7/label.nii.gz")
    msg = str(exc.value)
    assert "/data/case_7/label.nii.gz" in msg
    assert str(sorted(bad_values)) in msg


@pytest.mark.parametrize("n_unknown, swapped", [(30, False), (150, True)])
def test_many_unknown_values_are_capped_and_an_image_is_called_one(n_unknown: int, swapped: bool) -> None:
    table = LabelTable.from_config(ENTRIES)
    label = np.arange(100, 100 + n_unknown, dtype=np.int16)
    with pytest.raises(LabelError) as exc:
        table.apply(label, "label.nii.gz")
    msg = str(exc.value)
    assert msg.startswith("label.nii.gz: label values [100, 101, ") and f"119, ...] ({n_unknown} values)" in msg
    assert "120" not in msg and len(msg) < 400
    assert ("swapped" in msg) is swapped and ("add them" in msg) is not swapped


def test_hounsfield_like_values_are_called_an_image() -> None:
    table = LabelTable.from_config(ENTRIES)
    with pytest.raises(LabelError, match="looks like an image.*swapped"):
        table.apply(np.array([0, 5, -1000, -1024], dtype=np.int16), "label.nii.gz")


def test_duplicate_value_in_two_classes_raises() -> None:
    entries = [*ENTRIES, {"name": "spleen", "values": [6, 3]}]
    with pytest.raises(LabelError, match="3") as exc:
        LabelTable.from_config(entries)
    assert "kidney" in str(exc.value) and "spleen" in str(exc.value)


def test_duplicate_names_raise() -> None:
    with pytest.raises(LabelError, match="unique"):
        LabelTable.from_config([*ENTRIES, {"name": "liver", "values": [50]}])


@pytest.mark.parametrize(
    "entries",
    [
        [{"name": "liver", "values": [5]}, {"name": "background", "values": [0]}],
        [{"name": "background", "values": [1]}, {"name": "liver", "values": [5]}],
    ],
    ids=["zero_not_first", "no_zero"],
)
def test_first_entry_must_contain_zero(entries) -> None:
    with pytest.raises(LabelError, match="background"):
        LabelTable.from_config(entries)


def test_background_may_group_several_values() -> None:
    table = LabelTable.from_config([{"name": "background", "values": [0, 255]}, {"name": "organ", "values": [1]}])
    np.testing.assert_array_equal(table.apply(np.array([255, 1, 0]), "f"), [0, 1, 0])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64])
def test_apply_matches_a_plain_lookup_for_every_label_dtype(dtype: type) -> None:
    entries = [{"name": "bg", "values": [0]}, {"name": "a", "values": [3, 255]}, {"name": "b", "values": [17]}]
    table = LabelTable.from_config(entries)
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 3, 17, 255], dtype=dtype), size=(9, 8, 7))
    expected = np.vectorize({0: 0, 3: 1, 255: 1, 17: 2}.get)(label)
    out = table.apply(label, "label.nii.gz")
    assert out.dtype == np.uint8 and out.shape == label.shape
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("values, expected", [([2, 3], True), ([10, 12, 11], True), ([5], True), ([0, 0], True),
                                              ([2, 5], False), ([0, 2], False), ([10, 13], False), ([-1, 0], False),
                                              ([], True)])
def test_lists_every_value_of_is_true_only_when_the_maps_range_is_all_known(values, expected) -> None:
    table = LabelTable.from_config(ENTRIES)  # values 0, 2, 3, 5, 10..12
    assert table.lists_every_value_of(np.array(values, dtype=np.int32)) is expected


def test_classes_of_two_tables_are_matched_by_name_and_background_by_place():
    from medsynth.data.labels import class_lookup, organ_ids, table_names

    a = ["background", "body", "liver", "kidney"]
    b = ["clear", "kidney", "spleen", "liver", "body"]  # another order, another class, background named otherwise
    np.testing.assert_array_equal(class_lookup(a, b), [0, 4, 3, 1])
    np.testing.assert_array_equal(class_lookup(b, a), [0, 3, -1, 2, 1])
    np.testing.assert_array_equal(class_lookup(b, a, unknown=1), [0, 3, 1, 2, 1])
    assert organ_ids(b) == [1, 2, 3]  # neither the background nor the body
    config = [{"name": "background", "values": [0]}, {"name": "liver", "values": [1]}]
    assert table_names(["background", "liver"]) == LabelTable.from_config(config).names
    assert table_names(["background", "body", "liver"]) == ("background", "body", "liver")
