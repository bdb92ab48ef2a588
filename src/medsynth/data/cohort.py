"""Case tables: which image and label files form a dataset (``cases.tsv``)."""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from medsynth.io.tables import read_tsv, write_tsv

log = logging.getLogger(__name__)

# mask is optional (empty when the dataset provides none); patient_id defaults to the case id.
# A file column may name a DICOM series folder; <column>_series then picks a series by its
# SeriesInstanceUID where the folder holds several (medsynth.io.dicom).
FILE_COLUMNS = ("image", "label", "mask")
SERIES_COLUMNS = tuple(f"{col}_series" for col in FILE_COLUMNS)
CASE_COLUMNS = ["case_id", "patient_id", "image", "label", "mask", "modality", *SERIES_COLUMNS]


def read_cases(path: Path, labelled: bool | None = None) -> list[dict[str, str]]:
    """Rows of a ``cases.tsv`` sorted by case id, validated: required columns and cells, unique ids.

    ``labelled``: True, every case needs a label map (a dataset with a label table); False, none may
    have one and every case needs an image (an image-only dataset); None, as the pipeline's own
    tables are read: each row needs an image, a label or both. Paths come back absolute. A file that
    does not exist is not an error of the table but of its case (``missing_files``): the other
    cases can still be preprocessed.
    """
    return [row for _, row in sorted(_numbered_rows(Path(path), labelled), key=lambda lr: lr[1]["case_id"])]


def _numbered_rows(path: Path, labelled: bool | None = None) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a validated cases table, in file order; the header is line 1."""
    rows = read_tsv(path)
    if not rows:
        raise ValueError(f"{path}: the cases table has no rows")
    needed = {True: ("case_id", "label"), False: ("case_id", "image"), None: ("case_id",)}[labelled]
    missing_cols = [c for c in needed if c not in rows[0]]
    if missing_cols or not {"image", "label"} & set(rows[0]):
        raise ValueError(f"{path}: missing column(s) {missing_cols or ['image', 'label']}; expected tab-separated "
                         "case_id, image, label (label-only datasets leave image empty, image-only datasets "
                         "have no label column)")
    seen: set[str] = set()
    numbered = []
    for i, row in enumerate(rows, start=2):
        _check_row(path, i, row, labelled)
        cid = row["case_id"] = row["case_id"].strip()
        if cid in seen:
            raise ValueError(f"{path}, line {i}: duplicate case id {cid!r}; every case id must be unique")
        seen.add(cid)
        row["patient_id"] = (row.get("patient_id") or "").strip() or cid
        for col in FILE_COLUMNS:
            if row.get(col):
                f = Path(row[col]) if Path(row[col]).is_absolute() else path.parent / row[col]
                row[col] = str(f.resolve())
        numbered.append((i, row))
    _check_id_spellings(path, numbered)
    return numbered


def _id_key(value: str) -> str:
    """What two spellings of one id share: letter case and spaces folded, invisible characters dropped."""
    visible = "".join(ch for ch in value if unicodedata.category(ch) not in ("Cf", "Cc"))
    return " ".join(visible.split()).casefold()


def _check_id_spellings(path: Path, numbered: Sequence[tuple[int, Mapping[str, str]]]) -> None:
    """Refuse ids that are one id spelt two ways. Patients are split by their id string: 'PETCT_06a' and
    'petct_06A' (or one with a zero-width space copied along) would put one patient's studies in train and
    test. Case ids differing only in letter case would also share their folders on a case-insensitive file
    system (macOS, Windows shares)."""
    for column, what in (("case_id", "case"), ("patient_id", "patient")):
        first: dict[str, tuple[int, str]] = {}
        for line, row in numbered:
            value = row[column]
            if any(unicodedata.category(ch) in ("Cf", "Cc") for ch in value):
                raise ValueError(f"{path}, line {line}: {what} id {value!r} holds an invisible character; "
                                 "retype it")
            seen = first.setdefault(_id_key(value), (line, value))
            if seen[1] != value:
                raise ValueError(f"{path}, lines {seen[0]} and {line}: {what} ids {seen[1]!r} and {value!r} differ "
                                 "only in letter case or spaces; if they are one "
                                 f"{what}, spell them alike; if not, give them ids that differ in more")


# The longest name built from a case id, export's "<dataset>.<id>_syn00_0000.nii.gz.part.nii.gz", adds ~60 bytes
# with a dataset name of 20, ~70 with the digest sharing/nnunet_naming.case_identifiers adds to an id whose plain
# name another's takes: within 255 for ids up to 180 (two DICOM UIDs joined are ~130).
MAX_CASE_ID_BYTES = 180


# What a case id may hold: the workflow's {case} wildcard (common.smk's wildcard_constraints; a test keeps
# the two equal). An id outside it made Snakemake refuse the whole plan with a bare MissingInputException.
CASE_ID_CHARS = r"A-Za-z0-9_.\-"
CASE_ID = f"[{CASE_ID_CHARS}]+"


def _check_row(path: Path, line: int, row: Mapping[str, str], labelled: bool | None) -> None:
    """A row's required cells: a case id, and an image, a label or both as the dataset's kind says."""
    cid = (row.get("case_id") or "").strip()
    if not re.fullmatch(CASE_ID, cid):
        raise ValueError(f"{path}, line {line}: case id {row.get('case_id')!r} must be non-empty and hold only "
                         "letters, digits, '_', '.' and '-' (no slashes, spaces or '+'): it names the case's files "
                         "and folders; rename it in the table")
    if len(cid.encode()) > MAX_CASE_ID_BYTES:
        raise ValueError(f"{path}, line {line}: case id {cid!r} is {len(cid.encode())} bytes; file names built "
                         f"from it (export's <id>_syn00_0000.nii.gz and its temporary twin) would pass the file "
                         f"system's 255: shorten it to at most {MAX_CASE_ID_BYTES}")
    has = {c: bool((row.get(c) or "").strip()) for c in ("image", "label")}
    if labelled and not has["label"]:
        raise ValueError(f"{path}, line {line}: empty or missing ['label']; every row of a dataset with a label "
                         "table needs a label map (and an image, unless the case is label-only)")
    if labelled is False and has["label"]:
        raise ValueError(f"{path}, line {line}: case {cid!r} names a label map, but the dataset has no label "
                         "table (labels:): add the table, or leave the label column out for an image-only dataset")
    if labelled is False and not has["image"]:
        raise ValueError(f"{path}, line {line}: empty or missing ['image']; an image-only dataset needs an image "
                         "in every row")
    if not any(has.values()):
        raise ValueError(f"{path}, line {line}: case {cid!r} has neither an image nor a label map")


def patient_of(row: Mapping[str, str]) -> str:
    """A cases table row's patient: its ``patient_id``, or the case itself (``read_cases`` fills the column so;
    a row made by hand may lack it)."""
    return row.get("patient_id") or row["case_id"]


def generated_case_id(dataset: str, case: str, own: str) -> str:
    """A case's id among an experiment's generated cases, its folder ``results/generate/<e>/cases/<id>/``: a case
    of the experiment's own dataset ``own`` keeps its id (its outputs keep their paths), a ``generate_from``
    dataset's is ``<dataset>.<case>`` (its ids may repeat the own dataset's)."""
    return case if dataset == own else f"{dataset}.{case}"


def clashing_ids(cases: Sequence[tuple[str, str, str]], folder: str) -> list[str]:
    """One message per case whose id (each ``cases`` item: id, dataset, its case id there) an earlier case
    already has, letter case ignored (a case-insensitive file system gives them one folder): both would write
    ``folder``/<id>/, the later replacing the earlier, and rows of one would point at the other's volumes."""
    first: dict[str, tuple[str, str]] = {}
    out = []
    for cid, dataset, case in cases:
        if _id_key(cid) not in first:
            first[_id_key(cid)] = (dataset, case)
            continue
        seen = first[_id_key(cid)]
        out.append(f"case {seen[1]!r} of datasets.{seen[0]} and case {case!r} of datasets.{dataset} would both "
                   f"be written to {folder}/{cid}/ (a generate_from dataset's case is named <dataset>.<case>), "
                   "the later replacing the earlier: rename one of them (its case_id in its cases table, or "
                   "its file or folder where a layout finds it)")
    return out


def generated_id_clashes(experiment: str, own: str, cases: Mapping[str, Iterable[str]]) -> list[str]:
    """``clashing_ids`` of an experiment's generated cases (``cases``: dataset -> case ids; ``own``: its
    dataset): own case ``extra.s0001`` and ``generate_from`` dataset ``extra``'s ``s0001``, say."""
    named = [(generated_case_id(d, c, own), d, c) for d in sorted(cases, key=lambda d: (d != own, d))
             for c in sorted(cases[d])]
    return [f"experiments.{experiment}: {m}" for m in clashing_ids(named, f"results/generate/{experiment}/cases")]


def missing_files(row: Mapping[str, str]) -> list[tuple[str, str]]:
    """(column, path) of a case's files (or DICOM folders) that do not exist; mask only when one is given."""
    return [(col, row[col]) for col in FILE_COLUMNS if row.get(col) and not Path(row[col]).exists()]


def series_of(row: Mapping[str, str]) -> dict[str, str]:
    """The SeriesInstanceUIDs a case row gives for its DICOM folders, by file column."""
    return {col: row[f"{col}_series"].strip() for col in FILE_COLUMNS if (row.get(f"{col}_series") or "").strip()}


def case_problems(table: Path, case_id: str, output_paths: Sequence[str | Path] = ()) -> list[str]:
    """Why a case of ``table`` cannot be preprocessed: missing input files, or a plain file where
    one of its output folders belongs (Snakemake would fail on it before the job starts)."""
    table = Path(table)
    found = [(i, row) for i, row in _numbered_rows(table) if row["case_id"] == case_id]
    if not found:
        return [f"{table}: no case {case_id!r}; run the download step again (snakemake -R download)"]
    line, row = found[0]
    problems = [f"{path}: {col} file of case {case_id!r} does not exist ({table}, line {line}); put the file "
                "there, correct the path in your cases table or layout, or remove the case"
                for col, path in missing_files(row)]
    for blocker in sorted({b for b in map(blocking_file, output_paths) if b is not None}):
        problems.append(f"{blocker}: a file where case {case_id!r} needs an output folder; "
                        "move or delete it and run again")
    return problems


def blocking_file(path: str | Path) -> Path | None:
    """The first folder on the way to ``path`` that exists but is not a folder, if any."""
    for parent in reversed(Path(path).parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def _warn_missing(rows: Sequence[tuple[str, Mapping[str, str]]], source: str) -> None:
    """Missing files fail their case at preprocessing, so they are only warned about here (each
    ``rows`` item: where the row came from, the row); when no case is complete, the table or
    the pattern itself is wrong, and that stops the dataset."""
    incomplete = [(where, row, missing_files(row)) for where, row in rows]
    incomplete = [item for item in incomplete if item[2]]
    for where, row, files in incomplete:
        for col, path in files:
            log.warning("%s: %s file of case %r does not exist (%s); that case will fail at preprocessing",
                        path, col, row["case_id"], where)
    if rows and len(incomplete) == len(rows):
        where, row, ((col, path), *_) = incomplete[0]
        raise FileNotFoundError(f"{source}: no case has all its files (e.g. {col} file {path} of case "
                                f"{row['case_id']!r}, {where}); check that the paths are relative to the "
                                "table's folder, or the layout patterns")


def register_local(table: Path, out_tsv: Path, modality: str, labelled: bool = True) -> Path:
    """A local folder cohort: validate the user's table and write the pipeline's ``cases.tsv``
    (``labelled``: the dataset has a label table; False for an image-only dataset)."""
    numbered = _numbered_rows(Path(table), labelled)
    _warn_missing([(f"{table}, line {i}", row) for i, row in numbered], str(table))
    for i, row in numbered:
        # Preprocessing takes the dataset's modality (threshold, window): an MR row in a CT dataset was
        # windowed as CT in silence.
        given = (row.get("modality") or "").strip()
        if given and given.upper() != modality.upper():
            raise ValueError(f"{table}, line {i}: case {row['case_id']!r} is {given}, its dataset "
                             f"(datasets.<name>.modality) {modality}: put the {given} cases in a dataset of "
                             "their own, or correct the cell")
        row["modality"] = modality
    rows = sorted((row for _, row in numbered), key=lambda r: r["case_id"])
    return write_tsv(out_tsv, rows, CASE_COLUMNS)


def _pattern_regex(pattern: str, lazy: bool = False) -> tuple[re.Pattern, list[str]]:
    """The regex of a layout pattern, each placeholder one path part or a piece of one: as long as it can be
    (or, ``lazy``, as short: where the two read a name differently, the pattern is ambiguous)."""
    names = re.findall(r"\{(\w+)\}", pattern)
    if not names:
        raise ValueError(f"layout pattern {pattern!r} has no {{placeholder}}; use e.g. '{{case}}/ct.nii.gz'")
    regex, used = "", set()
    for literal, name in re.findall(r"([^{]*)(?:\{(\w+)\})?", pattern):
        regex += re.escape(literal)
        if name:
            regex += f"(?P={name})" if name in used else f"(?P<{name}>[^/]+{'?' if lazy else ''})"
            used.add(name)
    return re.compile(regex + r"\Z"), list(dict.fromkeys(names))


def discover_cases(root: Path, layout: Mapping[str, str], label_root: Path | None = None) -> list[dict[str, str]]:
    """Find cases by filename pattern, e.g. ``image: "{patient}/{study}/CTres.nii.gz"``.

    The placeholders of the image pattern identify a case (their values joined
    by ``_`` form the case id); ``{patient}``, when it is one of them, gives the
    patient id (default: the case id), so all studies of a patient share a split
    part. The label and mask patterns may use the same placeholders, ``{case}``
    and ``{patient}``. Image and mask patterns are relative to ``root``, the
    label pattern to ``label_root`` (default ``root``). A label or mask file that
    does not exist is kept in its row: it fails that case, not the dataset.
    Without an image pattern the cases are label-only, found by the label
    pattern's placeholders (in ``label_root``), with an empty image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found; check local.root in the config")
    label_root = Path(label_root) if label_root is not None else root
    key = "image" if layout.get("image") else "label"  # the files that identify a case
    base = root if key == "image" else label_root
    regex, names = _pattern_regex(layout[key])
    lazy, _ = _pattern_regex(layout[key], lazy=True)
    glob = re.sub(r"\{\w+\}", "*", layout[key])
    rows, seen = [], {}
    for found in sorted(base.glob(glob)):
        match = regex.match(found.relative_to(base).as_posix())
        if not match:
            continue
        values = {n: match.group(n) for n in names}
        _check_unambiguous(values, lazy.match(found.relative_to(base).as_posix()), found, key, layout[key])
        joined = "_".join(values[n] for n in names)
        # Folder names may hold spaces (AutoPET's TCIA study folders: "03-23-2003-NA-PET-CT Ganzkoerper  primaer
        # mit KM-10445") or "+" ("CT Thorax+Abdomen"), which a case id may not (CASE_ID): each run of them
        # becomes one "_". {case} in the label and mask patterns stays the names as found.
        case_id = re.sub(f"[^{CASE_ID_CHARS}]+", "_", joined.strip())
        if case_id in seen:
            raise ValueError(f"{base}: {found} and {seen[case_id]} both give case id {case_id!r}; "
                             f"add a placeholder to layout.{key} that tells them apart")
        seen[case_id] = found
        fields = {"patient": case_id, **values, "case": joined}
        row = {"case_id": case_id, "patient_id": fields["patient"], "image": "", key: str(found.resolve())}
        for other, folder in (("label", label_root), ("mask", root)):
            if other != key and layout.get(other):
                row[other] = str((folder / _format(layout, other, fields, key)).resolve())
        rows.append(row)
    if not rows:
        raise ValueError(f"{base}: no files match layout.{key} = {layout[key]!r}")
    return rows


def _check_unambiguous(values: Mapping[str, str], lazy: re.Match | None, found: Path, key: str, pattern: str) -> None:
    """Refuse a file name the pattern reads two ways: '{patient}_{study}.nii.gz' on P01_2020_01.nii.gz is
    patient P01 or P01_2020, and a wrong patient id puts one patient's studies in several split parts."""
    other = {n: lazy.group(n) for n in values} if lazy else values
    if other != values:
        raise ValueError(f"{found}: layout.{key} = {pattern!r} reads this name two ways ({values} or {other}); "
                         "put the placeholders in their own folders (e.g. '{patient}/{study}.nii.gz'), separate "
                         "them by a text their values do not hold, or list the cases in a cases table")


def _format(layout: Mapping[str, str], key: str, fields: Mapping[str, str], by: str = "image") -> str:
    try:
        return layout[key].format(**fields)
    except KeyError as exc:
        raise ValueError(f"layout.{key} = {layout[key]!r} uses {{{exc.args[0]}}}, which layout.{by} = "
                         f"{layout[by]!r} does not give; use its placeholders, {{case}} or {{patient}}"
                         ) from exc


def register_layout(root: Path, layout: Mapping[str, str], out_tsv: Path, modality: str,
                    label_root: Path | None = None) -> Path:
    rows = discover_cases(root, layout, label_root)
    patterns = ", ".join(f"layout.{k} = {layout[k]!r}" for k in ("label", "mask") if layout.get(k))
    _warn_missing([(patterns, row) for row in rows], str(root))
    for row in rows:
        row["modality"] = modality
    return write_tsv(out_tsv, rows, CASE_COLUMNS)


def use_image_column(table: Path, column: str, modality: str) -> Path:
    """Make ``column`` (e.g. the phantom's ``mr``) the image of every case of a cases table."""
    rows = read_tsv(table)
    if rows and column not in rows[0]:
        raise KeyError(f"{table}: no column {column!r} to take the images from")
    for row in rows:
        row["image"], row["modality"] = row[column], modality
    return write_tsv(table, rows, list(rows[0]) if rows else CASE_COLUMNS)


def drop_labels(table: Path) -> Path:
    """Empty the label column of a cases table: the phantom writes label maps for every cohort, but
    a dataset declared without a label table is image-only (as unlabelled MR is)."""
    rows = read_tsv(table)
    for row in rows:
        row["label"] = ""
    return write_tsv(table, rows, list(rows[0]) if rows else CASE_COLUMNS)
