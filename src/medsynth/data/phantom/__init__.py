"""The built-in synthetic cohort: label maps with matching CT and MR, made by code.

The pipeline must be runnable (and testable end to end) without any licensed
or downloaded data, so this module invents patients. Each case is a function
of ``(index, seed, shape, spacing)`` only, which makes a cohort reproducible
bit for bit and lets any single case be regenerated on its own.

The anatomy is drawn in millimetres, not voxels, so the same patient appears
on any voxel grid; what the model later learns (label -> intensity) is the
same whatever grid the cohort is written on. The parts of a real scan that
have no label (CT table, foam pad, a cable) are included on purpose: real
training data have them, and the preprocessing must cope with them.
"""

from medsynth.data.phantom.ids import case_id, case_ids

# The drawing code brings numpy and nibabel; the config checks, at every Snakemake start, need only the ids.
_COHORT = ("DEFAULT_SHAPE", "DEFAULT_SPACING", "PHANTOM_LABELS", "PhantomCase", "make_case", "write_cohort")

__all__ = ["case_id", "case_ids", *_COHORT]


def __getattr__(name: str):
    if name in _COHORT:
        from medsynth.data.phantom import cohort

        return getattr(cohort, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
