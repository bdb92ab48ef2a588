"""The licences of the data behind what is shared, in the config's own words (``datasets.<d>.licence``)."""

from __future__ import annotations

from typing import Mapping

NOT_STATED = "not stated in the config (datasets.{name}.licence): ask the data's owner before sharing"


def licence_lines(licences: Mapping[str, str | None], missing: str = NOT_STATED) -> dict[str, str]:
    """Dataset -> its licence, or ``missing`` (formatted with the dataset's ``name``: what to do) where the
    config states none; in ``licences``' order."""
    return {d: (text or missing.format(name=d)) for d, text in licences.items()}


def licence_summary(licences: Mapping[str, str | None]) -> str:
    """One line for nnU-Net's ``licence`` field of dataset.json: every dataset and its licence."""
    return "; ".join(f"{d}: {text}" for d, text in licence_lines(licences).items())
