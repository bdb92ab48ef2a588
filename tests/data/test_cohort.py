"""Case tables (medsynth.data.cohort) and the OASIS folder view (medsynth.data.views)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medsynth.data.cohort import (CASE_COLUMNS, case_problems, clashing_ids, generated_case_id, generated_id_clashes,
                                  read_cases, register_local)
from medsynth.data.views import oasis_view
from medsynth.io.images import load_png, save_png


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")
    return path


def _write_table(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture
def cohort_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cohort"
    for cid in ("b", "a", "c"):
        _touch(root / "scans" / f"{cid}_img.nii.gz")
        _touch(root / "scans" / f"{cid}_lab.nii.gz")
    return root


# ------------------------------------------------------------------ read_cases


def test_read_cases_resolves_relative_paths_and_sorts(cohort_dir: Path, tmp_path: Path) -> None:
    absolute = _touch(tmp_path / "elsewhere" / "c_img.nii.gz")
    table = _write_table(
        cohort_dir / "cases.tsv",
        ["case_id", "image", "label"],
        [
            ["c", str(absolute), "scans/c_lab.nii.gz"],
            ["a", "scans/a_img.nii.gz", "./scans/a_lab.nii.gz"],
            ["b", "scans/b_img.nii.gz", "scans/../scans/b_lab.nii.gz"],
        ],
    )
    # Run from another directory: paths must be relative to the table, not the working directory.
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        rows = read_cases(table)
    finally:
        os.chdir(old)
    assert [r["case_id"] for r in rows] == ["a", "b", "c"]
    scans = (cohort_dir / "scans").resolve()
    assert rows[0]["image"] == str(scans / "a_img.nii.gz")
    assert rows[0]["label"] == str(scans / "a_lab.nii.gz")
    assert rows[1]["label"] == str(scans / "b_lab.nii.gz")  # normalised
    assert rows[2]["image"] == str(absolute.resolve())
    assert all(Path(r[c]).is_absolute() and Path(r[c]).is_file() for r in rows for c in ("image", "label"))


def test_duplicate_case_id_raises_naming_table_and_line(cohort_dir: Path) -> None:
    table = _write_table(
        cohort_dir / "cases.tsv",
        ["case_id", "image", "label"],
        [
            ["a", "scans/a_img.nii.gz", "scans/a_lab.nii.gz"],
            ["b", "scans/b_img.nii.gz", "scans/b_lab.nii.gz"],
            ["a", "scans/c_img.nii.gz", "scans/c_lab.nii.gz"],
        ],
    )
    with pytest.raises(ValueError, match="duplicate case id 'a'") as exc:
        read_cases(table)
    assert str(table) in str(exc.value)
    assert "line 4" in str(exc.value)  # header is line 1


@pytest.mark.parametrize("patients,message", [
    (["PETCT_06a", "petct_06A"], r"lines 2 and 3: patient ids 'PETCT_06a' and 'petct_06A' differ only in letter case"),
    (["PETCT_06a", "PETCT  06a", "PETCT 06a"], r"lines 3 and 4: patient ids 'PETCT  06a' and 'PETCT 06a'"),
    (["PETCT_06a", "PETCT_06a\u200b"], r"line 3: patient id 'PETCT_06a\\u200b' holds an invisible character"),
])
def test_one_patient_spelt_two_ways_is_refused(cohort_dir: Path, patients: list[str], message: str) -> None:
    """Split by the id string, one patient spelt two ways would have studies in train and in test."""
    rows = [[c, p, f"scans/{c}_img.nii.gz", f"scans/{c}_lab.nii.gz"] for c, p in zip("abc", patients)]
    table = _write_table(cohort_dir / "cases.tsv", ["case_id", "patient_id", "image", "label"], rows)
    with pytest.raises(ValueError, match=message):
        read_cases(table)
    same = [[c, patients[0], f"scans/{c}_img.nii.gz", f"scans/{c}_lab.nii.gz"] for c in "ab"]
    read_cases(_write_table(cohort_dir / "same.tsv", ["case_id", "patient_id", "image", "label"], same))


def test_case_ids_differing_only_in_case_are_refused(cohort_dir: Path) -> None:
    """They would share their folders on a case-insensitive file system."""
    rows = [[c, "scans/a_img.nii.gz", "scans/a_lab.nii.gz"] for c in ("case_a", "Case_A")]
    with pytest.raises(ValueError, match="case ids 'case_a' and 'Case_A' differ only in letter case"):
        read_cases(_write_table(cohort_dir / "cases.tsv", ["case_id", "image", "label"], rows))


@pytest.mark.parametrize("column", ["image", "label"])
def test_missing_file_fails_its_case_not_the_table(cohort_dir: Path, tmp_path: Path, column: str, caplog) -> None:
    row = {"case_id": "b", "image": "scans/b_img.nii.gz", "label": "scans/b_lab.nii.gz"}
    row[column] = "scans/missing.nii.gz"
    table = _write_table(
        cohort_dir / "cases.tsv",
        ["case_id", "image", "label"],
        [["a", "scans/a_img.nii.gz", "scans/a_lab.nii.gz"], [row["case_id"], row["image"], row["label"]]],
    )
    with caplog.at_level("WARNING"):
        out = register_local(table, tmp_path / "raw" / "cases.tsv", "CT")
    assert [r["case_id"] for r in read_cases(out)] == ["a", "b"]  # the table stands, with both cases
    warned = caplog.text
    assert "missing.nii.gz" in warned and "'b'" in warned and f"{table}, line 3" in warned
    assert case_problems(out, "a") == []
    (problem,) = case_problems(out, "b")
    missing = str((cohort_dir / "scans" / "missing.nii.gz").resolve())
    assert problem.startswith(missing) and f"{column} file of case 'b'" in problem
    assert f"{out}, line 3" in problem and "remove the case" in problem


def test_table_where_no_case_has_its_files_stops(cohort_dir: Path, tmp_path: Path) -> None:
    table = _write_table(cohort_dir / "sub" / "cases.tsv", ["case_id", "image", "label"],
                         [["a", "scans/a_img.nii.gz", "scans/a_lab.nii.gz"],
                          ["b", "scans/b_img.nii.gz", "scans/b_lab.nii.gz"]])  # relative to the wrong folder
    with pytest.raises(FileNotFoundError, match="no case has all its files") as exc:
        register_local(table, tmp_path / "cases.tsv", "CT")
    assert str(table) in str(exc.value) and "relative to the table" in str(exc.value)


def test_case_problems_name_a_file_where_an_output_folder_belongs(cohort_dir: Path, tmp_path: Path) -> None:
    table = _write_table(cohort_dir / "cases.tsv", ["case_id", "image", "label"],
                         [["a", "scans/a_img.nii.gz", "scans/a_lab.nii.gz"]])
    blocker = _touch(tmp_path / "results" / "preprocess" / "mine" / "a")
    outputs = [tmp_path / "results/preprocess/mine/a/image.nii.gz", tmp_path / "results/preprocess/mine/a/meta.json",
               tmp_path / "results/slices/mine/cases/a/slices.npz"]
    (problem,) = case_problems(table, "a", outputs)
    assert problem.startswith(str(blocker)) and "move or delete it" in problem
    assert case_problems(table, "a", outputs[2:]) == []


def test_patient_id_column_is_optional_and_defaults_to_the_case_id(cohort_dir: Path, tmp_path: Path) -> None:
    table = _write_table(cohort_dir / "cases.tsv", ["case_id", "patient_id", "image", "label"],
                         [["a", "P1", "scans/a_img.nii.gz", "scans/a_lab.nii.gz"],
                          ["b", "P1", "scans/b_img.nii.gz", "scans/b_lab.nii.gz"],
                          ["c", "", "scans/c_img.nii.gz", "scans/c_lab.nii.gz"]])
    rows = _read_tsv(register_local(table, tmp_path / "cases.tsv", "CT"))
    assert {r["case_id"]: r["patient_id"] for r in rows} == {"a": "P1", "b": "P1", "c": "c"}
    plain = _write_table(cohort_dir / "plain.tsv", ["case_id", "image", "label"],
                         [["a", "scans/a_img.nii.gz", "scans/a_lab.nii.gz"]])
    assert read_cases(plain)[0]["patient_id"] == "a"


def test_missing_columns_empty_table_and_bad_ids_raise(cohort_dir: Path) -> None:
    no_label = _write_table(cohort_dir / "t1.tsv", ["case_id", "image"], [["a", "scans/a_img.nii.gz"]])
    with pytest.raises(ValueError, match="label"):
        read_cases(no_label, labelled=True)
    empty = _write_table(cohort_dir / "t2.tsv", ["case_id", "image", "label"], [])
    with pytest.raises(ValueError, match="no rows"):
        read_cases(empty)
    slash = _write_table(
        cohort_dir / "t3.tsv", ["case_id", "image", "label"], [["x/y", "scans/a_img.nii.gz", "scans/a_lab.nii.gz"]]
    )
    with pytest.raises(ValueError, match="slashes"):
        read_cases(slash)
    # Outside the workflow's {case} wildcard: refused here, naming the line (Snakemake's own error named no case).
    plus = _write_table(cohort_dir / "t6.tsv", ["case_id", "image", "label"],
                        [["CT+KM", "scans/a_img.nii.gz", "scans/a_lab.nii.gz"]])
    with pytest.raises(ValueError, match=r"t6.tsv, line 2: case id 'CT\+KM' .*letters, digits"):
        read_cases(plus)
    # A stray space after an id (a spreadsheet's) is not kept: it would name a folder 'a '.
    spaced = _write_table(cohort_dir / "t7.tsv", ["case_id", "image", "label"],
                          [["a ", "scans/a_img.nii.gz", "scans/a_lab.nii.gz"]])
    assert [r["case_id"] for r in read_cases(spaced)] == ["a"]
    # Two DICOM UIDs joined (~130 bytes) are fine; an id whose export file names pass 255 bytes is refused.
    uid = "1.3.6.1.4.1.14519.5.2.1.4219.6651.270884691234567890"
    ok = _write_table(cohort_dir / "t4.tsv", ["case_id", "image", "label"],
                      [[f"{uid}.{uid}", "scans/a_img.nii.gz", "scans/a_lab.nii.gz"]])
    assert read_cases(ok)[0]["case_id"] == f"{uid}.{uid}"
    long = _write_table(cohort_dir / "t5.tsv", ["case_id", "image", "label"],
                        [["x" * 200, "scans/a_img.nii.gz", "scans/a_lab.nii.gz"]])
    with pytest.raises(ValueError, match="line 2: case id 'x+' is 200 bytes.*shorten it to at most 180"):
        read_cases(long)


def test_row_with_missing_cell_raises_naming_table_and_line(cohort_dir: Path) -> None:
    table = cohort_dir / "cases.tsv"
    table.write_text("case_id\timage\tlabel\na\tscans/a_img.nii.gz\tscans/a_lab.nii.gz\nb\tscans/b_img.nii.gz\n")
    with pytest.raises(ValueError) as exc:
        read_cases(table, labelled=True)
    assert str(table) in str(exc.value) and "line 3" in str(exc.value)


def test_an_empty_image_cell_makes_a_label_only_case(cohort_dir: Path) -> None:
    table = _write_table(cohort_dir / "lo.tsv", ["case_id", "image", "label"], [["a", "", "scans/a_lab.nii.gz"]])
    (row,) = read_cases(table)
    assert row["image"] == "" and row["label"] == str((cohort_dir / "scans/a_lab.nii.gz").resolve())
    no_label = _write_table(cohort_dir / "nl.tsv", ["case_id", "image", "label"], [["a", "scans/a_img.nii.gz", ""]])
    with pytest.raises(ValueError, match="line 2.*label"):
        read_cases(no_label, labelled=True)


def test_an_image_only_table_has_no_label_column_or_empty_cells(cohort_dir: Path) -> None:
    """Images without label maps (the unpaired mode's real images): no label column, or empty cells."""
    no_column = _write_table(cohort_dir / "io.tsv", ["case_id", "image"], [["a", "scans/a_img.nii.gz"]])
    (row,) = read_cases(no_column, labelled=False)
    assert row["image"] == str((cohort_dir / "scans/a_img.nii.gz").resolve()) and not row.get("label")
    empty = _write_table(cohort_dir / "ie.tsv", ["case_id", "image", "label"], [["a", "scans/a_img.nii.gz", ""]])
    assert read_cases(empty, labelled=False)[0]["image"]
    written = _read_tsv(register_local(no_column, cohort_dir / "out.tsv", "MR", labelled=False))
    assert written[0]["label"] == "" and written[0]["modality"] == "MR"
    # Without a label table a label map cannot be read: refused, naming the line and what to do.
    with pytest.raises(ValueError, match=r"line 2: case 'a' names a label map.*no label table"):
        read_cases(_write_table(cohort_dir / "il.tsv", ["case_id", "image", "label"],
                                [["a", "scans/a_img.nii.gz", "scans/a_lab.nii.gz"]]), labelled=False)
    with pytest.raises(ValueError, match="line 2.*image-only dataset needs an image"):
        read_cases(_write_table(cohort_dir / "in.tsv", ["case_id", "image"], [["a", ""]]), labelled=False)
    # The pipeline's own tables hold all three kinds of case.
    assert len(read_cases(_write_table(cohort_dir / "mix.tsv", ["case_id", "image", "label"],
                                       [["a", "scans/a_img.nii.gz", ""], ["b", "", "scans/b_lab.nii.gz"]]))) == 2


def test_missing_table_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.tsv"):
        read_cases(tmp_path / "absent.tsv")


# ------------------------------------------------------------------ register_local


def test_register_local_writes_cases_table_with_modality(cohort_dir: Path, tmp_path: Path) -> None:
    table = _write_table(
        cohort_dir / "my_cases.tsv",
        ["case_id", "image", "label", "notes"],
        [["b", "scans/b_img.nii.gz", "scans/b_lab.nii.gz", "x"], ["a", "scans/a_img.nii.gz", "scans/a_lab.nii.gz", "y"]],
    )
    out = register_local(table, tmp_path / "results" / "cases.tsv", "MR")
    assert out == tmp_path / "results" / "cases.tsv"
    assert out.read_text().splitlines()[0].split("\t") == CASE_COLUMNS
    rows = _read_tsv(out)
    assert [r["case_id"] for r in rows] == ["a", "b"]
    assert [r["modality"] for r in rows] == ["MR", "MR"]
    assert rows[0]["image"] == str((cohort_dir / "scans" / "a_img.nii.gz").resolve())
    # The written table is itself a valid cases table.
    assert [r["case_id"] for r in read_cases(out)] == ["a", "b"]


def test_register_local_refuses_a_row_of_another_modality_and_fills_empty(cohort_dir: Path, tmp_path: Path) -> None:
    """Preprocessing takes the dataset's modality: an MR row in a CT dataset was thresholded and windowed as CT."""
    rows = [["a", "scans/a_img.nii.gz", "scans/a_lab.nii.gz", "ct"], ["b", "scans/b_img.nii.gz", "scans/b_lab.nii.gz", ""]]
    table = _write_table(cohort_dir / "my_cases.tsv", ["case_id", "image", "label", "modality"], rows)
    written = _read_tsv(register_local(table, tmp_path / "cases.tsv", "CT"))
    assert {r["case_id"]: r["modality"] for r in written} == {"a": "CT", "b": "CT"}
    rows[1][3] = "MR"
    table = _write_table(cohort_dir / "mixed.tsv", ["case_id", "image", "label", "modality"], rows)
    with pytest.raises(ValueError, match=r"mixed.tsv, line 3: case 'b' is MR, its dataset .* CT"):
        register_local(table, tmp_path / "cases2.tsv", "CT")


# ------------------------------------------------------------------ oasis_view


def test_a_generate_from_case_named_like_an_own_case_is_a_clash_naming_both() -> None:
    """Own dataset totalseg's test case 'extra.s0001' and generate_from dataset extra's 's0001' would both be
    written to cases/extra.s0001/ (the later replacing the earlier)."""
    assert generated_case_id("totalseg", "s0001", "totalseg") == "s0001"  # own ids keep their paths
    assert generated_case_id("extra", "s0001", "totalseg") == "extra.s0001"
    cases = {"totalseg": ["a", "extra.s0001"], "extra": ["s0001", "s0002"]}
    (clash,) = generated_id_clashes("e", "totalseg", cases)
    assert clash.startswith("experiments.e: case 'extra.s0001' of datasets.totalseg and case 's0001' of "
                            "datasets.extra")
    assert "results/generate/e/cases/extra.s0001/" in clash and "rename one of them" in clash
    # Letter case ignored (one folder on a case-insensitive file system); dots in dataset names too.
    assert generated_id_clashes("e", "totalseg", {"totalseg": ["EXTRA.S0001"], "extra": ["s0001"]})
    assert generated_id_clashes("e", "own", {"own": ["x"], "a.b": ["c"], "a": ["b.c"]})
    assert generated_id_clashes("e", "totalseg", {"totalseg": ["a", "extra_s0001"], "extra": ["s0001"]}) == []
    assert clashing_ids([("c", "d", "c"), ("c", "", "c")], "out") != []  # any repeated id, whatever says where


def _png_dir(root: Path, case_id: str, zs: list[int]) -> Path:
    for z in zs:
        name = f"{case_id}_z{z:03d}.png"
        save_png(root / "images" / name, np.full((4, 4), z * 10 + len(case_id), dtype=np.uint8))
        save_png(root / "labels" / name, np.full((4, 4), z % 3, dtype=np.uint8))
    return root


def test_oasis_view_links_pngs_under_their_part(tmp_path: Path) -> None:
    results = tmp_path / "results"
    png_dirs = {
        "p1": _png_dir(results / "slices" / "p1" / "png", "p1", [0, 1, 2]),
        "p22": _png_dir(results / "slices" / "p22" / "png", "p22", [5]),
        "p333": _png_dir(results / "slices" / "p333" / "png", "p333", [3, 4]),
    }
    parts = {"p1": "train", "p22": "val", "p333": "test", "unused": "train"}
    out = results / "views" / "demo"
    n = oasis_view(parts, png_dirs, out)
    assert n == 2 * (3 + 1 + 2)
    expected = {"train": ["p1_z000.png", "p1_z001.png", "p1_z002.png"], "val": ["p22_z005.png"], "test": ["p333_z003.png", "p333_z004.png"]}
    for part, names in expected.items():
        for kind in ("images", "labels"):
            folder = out / part / kind
            assert sorted(p.name for p in folder.iterdir()) == names
            for name in names:
                link = folder / name
                assert link.is_symlink()
                assert not os.path.isabs(os.readlink(link))  # relative: survives moving the tree
                case = name.split("_z")[0]
                target = png_dirs[case] / kind / name
                assert link.resolve() == target.resolve()
                np.testing.assert_array_equal(load_png(link), load_png(target))

    # Relative links keep working when the whole results tree moves.
    moved = tmp_path / "moved"
    shutil.move(str(results), str(moved))
    link = moved / "views" / "demo" / "val" / "labels" / "p22_z005.png"
    assert link.resolve() == (moved / "slices" / "p22" / "png" / "labels" / "p22_z005.png").resolve()
    assert load_png(link)[0, 0] == 5 % 3


def test_oasis_view_case_without_split_row_raises(tmp_path: Path) -> None:
    png = _png_dir(tmp_path / "png", "lost", [0])
    with pytest.raises(KeyError, match="lost"):
        oasis_view({"other": "train"}, {"lost": png}, tmp_path / "view")


def test_oasis_view_refuses_cases_sliced_without_pngs(tmp_path: Path) -> None:
    """slice.pngs: none leaves the PNG folder empty; a view of it would silently miss the case."""
    kept = _png_dir(tmp_path / "kept" / "png", "kept", [0])
    bare = tmp_path / "bare" / "png"
    bare.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"'bare'.*slice\.pngs"):
        oasis_view({"kept": "train", "bare": "test"}, {"kept": kept, "bare": bare}, tmp_path / "view")
    # A case whose slicing kept no slice still has its (empty) folders and is no error.
    (bare / "images").mkdir()
    (bare / "labels").mkdir()
    assert oasis_view({"kept": "train", "bare": "test"}, {"kept": kept, "bare": bare}, tmp_path / "view2") == 2


def test_a_table_saved_with_a_byte_order_mark_reads_its_first_column(cohort_dir: Path) -> None:
    """Spreadsheets save UTF-8 with a byte-order mark: the table was told it had no case_id column."""
    table = cohort_dir / "excel.tsv"
    table.write_text("\ufeffcase_id\timage\tlabel\na\tscans/a_img.nii.gz\tscans/a_lab.nii.gz\n", encoding="utf-8")
    assert [r["case_id"] for r in read_cases(table)] == ["a"]
