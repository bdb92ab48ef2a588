"""The label table: dataset label values -> consecutive class ids.

The number of classes is derived here and nowhere else.

Every table has a **body** class. Real label sets (TotalSegmentator) label
organs, not the body: their background covers the air around the patient *and*
unlabelled tissue (fat, skin, bowel content). A generator conditioned on such a
map cannot see the body outline it must draw. So a table without a class named
``body`` gets one, appended as the last class and listed under no label value:
preprocessing gives it to the voxels inside the body mask that carry no label
(as MAISI does with its body label). A table that has a ``body`` class (the
phantom's) keeps it, and those voxels join it.

An image-only dataset (images without label maps: the unpaired mode's real
images, e.g. unlabelled MR) has no table in the config; its table is
background and the derived body class (``LabelTable.from_config(None)``), so
its preprocessed label maps are its body masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    import numpy as np


UNKNOWN = 255  # class ids are stored as uint8; this value marks labels the table does not list
BODY = "body"  # the class of labelled-as-nothing voxels inside the body mask
IMAGE_ONLY = ({"name": "background", "values": [0]},)  # an image-only dataset's table, before the body class
ORGAN_MEAN = "mean (organs)"  # the row of a per-class table that averages ``organ_ids``


class LabelError(ValueError):
    """Label values that the label table does not describe."""


@dataclass(frozen=True)
class LabelTable:
    names: tuple[str, ...]
    values: tuple[tuple[int, ...], ...]  # source values per class id

    @classmethod
    def from_config(cls, entries: Sequence[Mapping[str, object]] | None) -> "LabelTable":
        """Build from config: a list of {name, values}; class id = position in the list.

        ``None`` (a dataset without ``labels``: image-only) gives background and body."""
        if entries is None:
            entries = IMAGE_ONLY
        names = tuple(str(e["name"]) for e in entries)
        values = tuple(tuple(int(v) for v in e["values"]) for e in entries)
        seen: dict[int, str] = {}
        for name, vals in zip(names, values):
            for v in vals:
                if v in seen:
                    raise LabelError(f"label value {v} is listed for both '{seen[v]}' and '{name}' in the label table")
                seen[v] = name
        if len(set(names)) != len(names):
            raise LabelError(f"label table names must be unique, got {list(names)}")
        if 0 not in values[0]:
            raise LabelError("the first label-table entry must be the background and include value 0")
        if BODY not in names:
            names, values = names + (BODY,), values + ((),)
        return cls(names, values)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def body_class(self) -> int:
        """Class id of the body: the table's own ``body`` entry or the derived last class."""
        return self.names.index(BODY)

    @property
    def body_derived(self) -> bool:
        """True when the body class was added here (no label value of the dataset maps to it)."""
        return not self.values[self.body_class]

    def lookup(self) -> np.ndarray:
        """Array mapping source value -> class id, -1 for values not in the table."""
        import numpy as np  # here, not at the top: the config checks build tables at every Snakemake start

        top = max(max(v) for v in self.values if v)
        table = np.full(top + 1, -1, dtype=np.int16)
        for cls_id, vals in enumerate(self.values):
            table[list(vals)] = cls_id
        return table

    def lists_every_value_of(self, label: np.ndarray) -> bool:
        """True when every value from the map's minimum to its maximum is in the table (two reductions)."""
        if not label.size:
            return True
        lut = self.lookup()
        lo, hi = int(label.min()), int(label.max())
        return 0 <= lo and hi < len(lut) and bool((lut[lo : hi + 1] >= 0).all())

    def apply(self, label: np.ndarray, source: str) -> np.ndarray:
        """Map a label map to class ids; unknown values stop with their list and the file."""
        import numpy as np

        unknown = UNKNOWN
        if self.num_classes > unknown:  # ids 0..254 are classes, 255 marks unknown values
            raise LabelError(f"the label table has {self.num_classes} classes; at most {unknown} are supported")
        lut = self.lookup()
        lo, hi = (int(label.min()), int(label.max())) if label.size else (0, 0)
        if lo < 0 or hi >= 1 << 16:  # beyond any table we ship: the general (sorting) path
            _check_known(np.unique(label), lut, source)
            return lut.astype(np.uint8)[label]
        # One gather through a uint8 table marks unknown values on the way, so a large volume is
        # read once (no np.unique sort, no int64 copy as np.bincount would make).
        lut8 = np.full(max(hi, len(lut) - 1) + 1, unknown, dtype=np.uint8)
        lut8[: len(lut)] = np.where(lut < 0, unknown, lut)
        classes = lut8[label]
        if (classes == unknown).any():
            _check_known(np.unique(label[classes == unknown]), lut, source)
        return classes


def table_names(names: Sequence[str]) -> tuple[str, ...]:
    """The class names of a table whose config lists ``names``: the body class appended when missing
    (as ``LabelTable.from_config`` does), for callers that know a table by its names only."""
    names = tuple(str(n) for n in names)
    return names if BODY in names else (*names, BODY)


def class_lookup(source: Sequence[str], target: Sequence[str], unknown: int = -1) -> np.ndarray:
    """Source class id -> target class id, matched by name; ``unknown`` where ``target`` lacks the name.

    Two datasets may list their classes in other orders, or other classes: only names say which
    class is which. Class 0 is the background in every table (its first entry holds value 0),
    whatever it is called, so it maps to 0.
    """
    import numpy as np

    where = {name: i for i, name in enumerate(target)}
    lut = np.array([0] + [where.get(name, unknown) for name in list(source)[1:]], dtype=np.int64)
    return lut[: len(source)]


def organ_ids(names: Sequence[str]) -> list[int]:
    """The organ classes of a table: the foreground without the body class, which is easy (the
    outline the label map already draws) and large, so a mean with it reads high whatever the organs do."""
    return [i for i, name in enumerate(names) if i > 0 and name != BODY]


def organ_note(names: Sequence[str]) -> str:
    """What an ``ORGAN_MEAN`` over ``names`` (the classes it averages) covers, for a table's note."""
    if not names:
        return "no organ class to average (background and body left out)"
    return f"organ mean over {', '.join(names)} (background and body left out)"


SHOWN_VALUES = 20  # unknown values listed in a message; the rest are counted
IMAGE_LIKE_VALUES = 100  # this many unknown values (or HU-like negatives) suggest an image, not labels


def _check_known(values: np.ndarray, lut: np.ndarray, source: str) -> None:
    unknown = [int(v) for v in values if v < 0 or v >= len(lut) or lut[int(v)] < 0]
    if not unknown:
        return
    listing = "[" + ", ".join(map(str, unknown[:SHOWN_VALUES]))
    listing += f", ...] ({len(unknown)} values)" if len(unknown) > SHOWN_VALUES else "]"
    if len(unknown) >= IMAGE_LIKE_VALUES or min(unknown) <= -100:
        advice = ("this looks like an image, not a label map: are the image and label columns of the cases "
                  "table (or layout.image and layout.label) swapped?")
    else:
        advice = "add them to the dataset's 'labels' list in the config (or map them to an existing class)"
    raise LabelError(f"{source}: label values {listing} are not in the label table; {advice}")
