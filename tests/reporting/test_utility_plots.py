"""The utility curve's figure, from the tables as the report rule reads them (strings, NA)."""

from PIL import Image

from medsynth.data.labels import ORGAN_MEAN
from medsynth.evaluation.utility_curve import COLUMNS, DRAW_COLUMNS
from medsynth.io.tables import read_tsv, write_tsv
from medsynth.reporting.utility_plots import _series, utility_curve_plot


def _tables(tmp_path):
    points = {("real", 1): 0.60, ("real", 3): 0.80, ("real", 8): 0.90, ("real+synthetic", 1): 0.70,
              ("real+synthetic", 3): 0.82, ("real+synthetic", 8): None, ("synthetic", 0): 0.65}
    rows, draws = [], []
    for (arm, k), dice in points.items():
        for cls in ("background", "organ", ORGAN_MEAN):
            real = points.get(("real", k))
            rows.append({"arm": arm, "real_patients": k, "class": cls, "dice": dice,
                         "ci_low": dice and dice - 0.05, "ci_high": dice and dice + 0.04,
                         "delta": dice - real if arm == "real+synthetic" and dice else None,
                         "delta_ci_low": dice - real - 0.02 if arm == "real+synthetic" and dice else None,
                         "delta_ci_high": dice - real + 0.03 if arm == "real+synthetic" and dice else None,
                         "note": "95 % bootstrap interval over 9 test patients (9 cases); organ mean over organ"})
        for draw in range(1, (3 if k in (1, 3) else 1) + 1):
            draws.append({"arm": arm, "real_patients": k, "draw": draw, "organ_dice": dice and dice + 0.01 * draw})
    table = write_tsv(tmp_path / "utility.tsv", rows, COLUMNS)
    return read_tsv(table), read_tsv(write_tsv(tmp_path / "draws.tsv", draws, DRAW_COLUMNS))


def test_the_curve_reads_the_tables_and_draws_every_arm(tmp_path) -> None:
    rows, draws = _tables(tmp_path)
    k, d, lo, hi = _series(rows, "real+synthetic")
    assert list(k) == [1, 3, 8] and d[0] == 0.70 and lo[1] == 0.82 - 0.05 and str(d[2]) == "nan"
    path = utility_curve_plot(rows, draws, tmp_path / "utility_curve.png", dpi=100)
    with Image.open(path) as img:
        assert img.size[0] > 800 and img.size[1] > 300
        # The synthetic-only reference is drawn (orange dashes), and (b) in blue: both colours are in the picture.
        colours = {c for _, c in img.convert("RGB").getcolors(1 << 20)}
        assert (255, 127, 14) in colours and (31, 119, 180) in colours
