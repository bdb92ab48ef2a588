"""The case ids of a phantom cohort: known from ``n_cases`` alone, before anything is drawn.

Apart from the drawing code (numpy, nibabel): the config checks list a phantom cohort's test
patients at every Snakemake start.
"""


def case_id(index: int) -> str:
    """The id of case ``index`` in every phantom cohort, whatever its seed (the cases table has no
    patient_id: each case is its own patient)."""
    return f"phantom_{index:03d}"


def case_ids(n_cases: int) -> list[str]:
    """The case ids ``write_cohort`` lists for a cohort of ``n_cases``."""
    return [case_id(i) for i in range(n_cases)]
