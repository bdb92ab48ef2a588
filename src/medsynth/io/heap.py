"""Give the memory a finished case freed back to the operating system before the next case is read.

The stages that stream a test set a case at a time (evaluate, the memorisation audits, utility) free
each case's arrays and tensors, yet their resident set grew with the number of cases: glibc raises its
mmap threshold each time a large block is freed, so later blocks of a few MB come from the heap, and
the holes they leave behind blocks still held (a case's scores) are rarely returned. Measured with
tests/helpers/memory_run.py on 64 test cases of 32 slices at 64 px, ``evaluate`` peaked at 0.73-1.82 GB
from run to run (0.54 GB of it after the imports) in 15-18 s; trimming the heap as each case is read:
0.62-0.74 GB in 20-22 s (freed pages are faulted in again; on real slices a case's work is far larger).
Pinning the threshold instead (every large block its own mapping) held 0.58 GB but took 60 s.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS: nothing to do there)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed() -> bool:
    """Return the heap's free pages to the operating system (``malloc_trim(0)``); whether any were."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
