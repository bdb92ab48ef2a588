"""Send a stage's logging, warnings, progress bars and errors to its log file."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path


@contextlib.contextmanager
def log_to(path: str | Path | None, level: int = logging.INFO):
    """Everything a stage prints, tracebacks included, ends up in ``path`` (Snakemake's ``log:``)."""
    if path is None:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", buffering=1) as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(True)
        old_err, old_out = sys.stderr, sys.stdout
        sys.stderr = sys.stdout = fh
        try:
            yield
        except BaseException:
            logging.getLogger("medsynth").exception("stage failed")
            raise
        finally:
            sys.stderr, sys.stdout = old_err, old_out
            root.removeHandler(handler)
