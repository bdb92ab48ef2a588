"""Checkpoint selection by a validation metric (never by the test split)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import medsynth
import torch

from medsynth.inference.generate_cases import generator_from_state
from medsynth.io.tables import parse_float, read_tsv
from medsynth.metrics import DIRECTIONS
from medsynth.models.spectral import refresh_spectral_norm
from medsynth.io.checkpoint import load_checkpoint, save_checkpoint


def refreshed_ema(snapshot: dict, source: Path) -> dict:
    """The snapshot's EMA generator weights with exact spectral norms.

    Training refreshes them before each snapshot; snapshots written by older versions
    were not, and the sigma their layers use can be far from the weights' (see
    ``models.spectral``). On a refreshed snapshot this changes next to nothing.
    """
    G, _ = generator_from_state(snapshot, source, torch.device("cpu"))
    refresh_spectral_norm(G)
    return G.state_dict()


def with_selection(card: dict, summary: dict, state: dict, ema: dict) -> dict:
    """The model card with the selected step, its metric and the generator's size."""
    parameters = sum(v.numel() for k, v in ema.items() if not k.endswith(("weight_u", "weight_v")))
    selection = {k: summary[k] for k in ("metric", "value", "direction", "step", "candidates", "reason")}
    return {**card, "selection": selection,
            "model": {**card["model"], "step": summary["step"], "classes": state.get("num_classes"),
                      "parameters": parameters}}


def select_checkpoint(run_dir: Path, metric: str, out_json: Path, out_generator: Path,
                      fallback: str | None = None, data: dict | None = None, card: dict | None = None) -> dict:
    """Pick the best validation step by ``metric`` (or ``fallback`` when ``metric`` was never computed,
    e.g. FID without its weights); export that EMA generator weights-only.

    ``data`` (label table, modality, preprocessing and slice settings) goes into
    the exported file, so it can generate from new label maps on its own; ``card`` (the model
    card, ``model_card.build_card``) too, with the selection added.
    """
    run_dir = Path(run_dir)
    for name in (metric, fallback):
        if name is not None and name not in DIRECTIONS:
            raise KeyError(f"select metric {name!r} is not a validation metric; choose one of {sorted(DIRECTIONS)}")
    rows = read_tsv(run_dir / "metrics.tsv")
    ckpts = {int(r["step"]): r["checkpoint"] for r in read_tsv(run_dir / "checkpoints.tsv")}

    def finite(name: str) -> list[tuple[int, float]]:
        pairs = [(int(r["step"]), parse_float(r.get(name, "NA"))) for r in rows]
        return [(s, v) for s, v in pairs if math.isfinite(v) and s in ckpts]

    requested, scored, note = metric, finite(metric), ""
    if not scored and fallback is not None:
        note = f"{requested} was not computed (see metrics.tsv), so the fallback {fallback} decided: "
        metric, scored = fallback, finite(fallback)
    if not scored:
        raise ValueError(f"{run_dir / 'metrics.tsv'}: no finite '{metric}' values with a checkpoint to select from")
    direction = DIRECTIONS[metric]
    # Best first; ties go to the later step (more training, same validation score).
    ranked = sorted(scored, key=lambda sv: (-sv[1] if direction == "max" else sv[1], -sv[0]))
    step, value = ranked[0]
    ckpt_path = run_dir / ckpts[step]
    state = load_checkpoint(ckpt_path)
    ema = refreshed_ema(state, ckpt_path)
    runner_up = {"step": ranked[1][0], "value": ranked[1][1]} if len(ranked) > 1 else None
    summary = {
        "requested_metric": requested,
        "fallback_used": metric != requested,
        "metric": metric,
        "direction": direction,
        "step": step,
        "value": value,
        "checkpoint": str(ckpt_path),
        "generator": str(out_generator),
        "runner_up": runner_up,
        "candidates": len(ranked),
        "reason": f"{note}{'highest' if direction == 'max' else 'lowest'} validation {metric} "
        f"({value:.4g}) among {len(ranked)} evaluated checkpoints",
    }
    save_checkpoint(out_generator, {
        "kind": "generator", "step": step, "ema": ema, "model": state["model"],
        "num_classes": state["num_classes"], "selected_by": {metric: value}, "version": medsynth.__version__,
        "data": data or {}, **{k: state[k] for k in ("classes", "slice_size") if state.get(k)},
        **({"card": with_selection(card, summary, state, ema)} if card is not None else {}),
    })
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(summary, indent=2))
    return summary
