"""Segmentation consistency: can a segmenter trained on real images read the generated ones?

A small U-Net is trained on REAL training slices. Its Dice/IoU on GENERATED
test images, scored against the label maps they were generated from, is then
set beside the same scores on the REAL test images (the upper bound). A
generator whose images are realistic and faithful to their labels comes close
to that bound; one that puts tissue in the wrong place, or gives organs the
wrong contrast, falls short. Nothing pretrained is needed, so this works
offline.

Confusion matrices are ``(C, C)`` counts with rows = target class and
columns = predicted class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medsynth.data.labels import ORGAN_MEAN, organ_ids, organ_note
from medsynth.models.segmenter import DEFAULT_CHANNELS, UNetSegmenter

LR_SCHEDULES = ("poly", "constant")


@dataclass(frozen=True)
class SegmenterRecipe:
    """How a U-Net of segmentation consistency or of the utility curve trains. Every segmenter of a run
    trains by one recipe (``from_settings``), so their scores compare and the utility curve can take
    the segmenter rule's model for its own point with every real patient.

    Adam on class-weighted cross-entropy (``class_weights`` with ``class_weight_power``) + foreground
    soft Dice, ``steps`` batches of ``batch_size`` drawn at random (with replacement) by a generator
    seeded with ``seed``, the learning rate decayed from ``lr`` by ``lr_schedule``. ``flips`` flips
    samples left-right and up-down; off by default because preprocessed slices share one orientation
    (RAS): the side tells organs of alike intensity apart (liver and spleen), and flipped anatomy never
    occurs at test time.
    """

    steps: int
    batch_size: int = 8
    channels: tuple[int, ...] = DEFAULT_CHANNELS
    lr: float = 5e-3
    lr_schedule: str = "poly"
    flips: bool = False
    class_weight_power: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.class_weight_power < 0:
            raise ValueError(f"class_weight_power must be >= 0, got {self.class_weight_power}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    @classmethod
    def from_settings(cls, settings: Mapping, seed: int = 0) -> SegmenterRecipe:
        """The recipe of a config's ``metrics.segmenter_*`` keys (``config.keys.SEGMENTER_KEYS``)."""
        return cls(steps=int(settings["segmenter_steps"]), batch_size=int(settings["segmenter_batch"]),
                   channels=tuple(settings["segmenter_channels"]), seed=seed)


def _default_device(device: torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_pairs(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if labels.dim() != 3:
        raise ValueError(f"labels must be (N, H, W) class ids, got shape {tuple(labels.shape)}")
    if images.shape[0] != labels.shape[0] or images.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match "
                         "in number or size of slices")
    if images.shape[0] == 0:
        raise ValueError("images is empty: the segmenter needs at least one training slice")
    if labels.is_floating_point():
        raise ValueError(f"labels must hold integer class ids, got dtype {labels.dtype}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"labels hold class ids {lo}..{hi}, outside 0..{num_classes - 1} (num_classes={num_classes})")


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes present in the batch, each over the whole batch.

    Cross-entropy is dominated by the many background pixels; this term gives
    every organ the same weight, so small ones are not ignored. Background is
    left out (it is easy and would dilute the mean), and so are classes absent
    from the batch: their "Dice" is eps / (their predicted mass + eps), which
    only rewards predicting nothing and would outweigh the few pixels of a
    rare organ that is there. ``eps`` is the usual smoothing term.
    A batch with no foreground gives 0.
    """
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)[1:]
    total = (probs.sum(dims) + onehot.sum(dims))[1:]
    present = onehot.sum(dims)[1:] > 0
    if not bool(present.any()):
        return logits.sum() * 0.0  # zero that keeps the graph, so backward() still works
    return 1 - ((2 * inter + eps) / (total + eps))[present].mean()


def class_counts(labels: torch.Tensor, num_classes: int, chunk: int = 256,
                 sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pixels per class of the labels (N, H, W), float64; ``sample_weights`` (N,): slice i counted by its
    weight, as training draws the slices (a slice of weight 0 is never seen). Counted in chunks, so a large
    uint8 set is never copied whole to int64."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for i in range(0, labels.shape[0], chunk):
        part = labels[i : i + chunk].reshape(min(chunk, labels.shape[0] - i), -1).long().cpu()
        if sample_weights is None:
            counts += torch.bincount(part.reshape(-1), minlength=num_classes).double()
            continue
        w = sample_weights[i : i + chunk].double()
        if not w.any():
            continue
        per_slice = torch.bincount((part + num_classes * torch.arange(len(part))[:, None]).reshape(-1),
                                   minlength=len(part) * num_classes).reshape(len(part), num_classes)
        counts += (w[:, None] * per_slice.double()).sum(0)
    return counts


def class_weights(labels: torch.Tensor, num_classes: int, power: float, chunk: int = 256,
                  sample_weights: torch.Tensor | None = None, counts: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy weights ``frequency ** -power`` from the training labels (N, H, W), mean 1 over pixels.

    Unweighted cross-entropy (power 0) can settle on calling an organ of a few
    pixels its surroundings; full inverse frequency (1) scored no better than
    0.5 on the demo phantom. A class absent from the labels gets weight 1 (it
    is never a target, so its weight is never used). ``sample_weights``: as
    ``class_counts``; ``counts``: ``class_counts``' result when the caller has it.
    """
    if counts is None:
        counts = class_counts(labels, num_classes, chunk, sample_weights)
    freq = counts / counts.sum().clamp(min=1e-300)
    w = torch.where(counts > 0, freq.clamp(min=1e-12) ** -float(power), torch.ones_like(freq))
    w = w / (w * freq).sum().clamp(min=1e-12)  # pixel-weighted mean 1: the loss keeps its scale
    return w.float()


def _random_flips(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip each sample left-right and/or up-down, image and label alike (the label must stay aligned)."""
    flips = torch.rand(2, x.shape[0], generator=g) < 0.5
    fh, fv = flips[0].to(x.device), flips[1].to(x.device)
    x = torch.where(fh[:, None, None, None], x.flip(-1), x)
    y = torch.where(fh[:, None, None], y.flip(-1), y)
    x = torch.where(fv[:, None, None, None], x.flip(-2), x)
    y = torch.where(fv[:, None, None], y.flip(-2), y)
    return x, y


def _lr_factor(schedule: str, step: int, steps: int) -> float:
    """nnU-Net's poly decay (1 - t) ** 0.9: a large step early, small ones to settle at the end."""
    return (1 - step / steps) ** 0.9 if schedule == "poly" else 1.0


def train_segmenter(images: torch.Tensor, labels: torch.Tensor, num_classes: int, recipe: SegmenterRecipe,
                    device: torch.device | None = None, sample_weights: torch.Tensor | None = None) -> UNetSegmenter:
    """Train a U-Net by ``recipe`` on (real) ``images`` (N, C, H, W) in [-1, 1] and ``labels`` (N, H, W);
    return it in eval mode.

    The initial weights come from the recipe's seed, without touching torch's global RNG, so the same call
    gives the same weights (on the same device and thread count). ``sample_weights`` (N,): draw slice i with
    probability proportional to its weight instead of uniformly (e.g. a fixed share of real slices in a
    real + synthetic set). The model's ``class_seen`` says, per class, whether a slice it could draw has it.
    """
    _check_pairs(images, labels, num_classes)
    device = _default_device(device)
    r = recipe

    # A private RNG scope: seeds the initial weights without changing the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(r.seed)
        model = UNetSegmenter(num_classes, image_channels=images.shape[1], channels=r.channels)
    model.to(device).train()
    # Pooling needs the size multiple; fail here with the argument's name rather than inside forward.
    h, w = images.shape[-2:]
    if h % model.size_multiple or w % model.size_multiple:
        raise ValueError(f"images are {h}x{w}, not divisible by {model.size_multiple} for channels={list(r.channels)}; "
                         "pad or crop them, or use fewer levels")

    if sample_weights is not None and (sample_weights.shape != (images.shape[0],) or not (sample_weights >= 0).all()
                                       or not sample_weights.sum() > 0):
        raise ValueError(f"sample_weights must be {images.shape[0]} non-negative numbers, not all 0")
    counts = class_counts(labels, num_classes, sample_weights=sample_weights)
    weight = (class_weights(labels, num_classes, r.class_weight_power, counts=counts).to(device)
              if r.class_weight_power else None)
    g = torch.Generator().manual_seed(r.seed)
    opt = torch.optim.Adam(model.parameters(), lr=r.lr)
    for step in range(r.steps):
        for group in opt.param_groups:
            group["lr"] = r.lr * _lr_factor(r.lr_schedule, step, r.steps)
        if sample_weights is None:
            idx = torch.randint(0, images.shape[0], (r.batch_size,), generator=g)
        else:
            idx = torch.multinomial(sample_weights, r.batch_size, replacement=True, generator=g)
        # Only the batch is converted: the stored set may be float16/uint8 to save memory.
        x = images[idx].to(device).float()
        y = labels[idx].to(device).long()
        if r.flips:
            x, y = _random_flips(x, y, g)
        logits = model(x)
        loss = F.cross_entropy(logits, y, weight=weight) + soft_dice_loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    # Which classes it ever saw (save_segmenter keeps it): one it never saw it cannot find, on any image.
    model.class_seen = (counts > 0).tolist()
    return model.eval()


PREDICT_BATCH = 32  # images per forward in ``predict`` (callers that stream a set keep its batches)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch: int = PREDICT_BATCH,
            device: torch.device | None = None) -> torch.Tensor:
    """Argmax class per pixel, (N, H, W) int64 on the CPU, in batches of ``batch`` images.

    The model runs in eval mode (BatchNorm's running statistics, so a slice's
    prediction does not depend on the others in its batch); its previous mode
    is restored afterwards.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [model(images[i : i + batch].to(device).float()).argmax(dim=1).cpu()
               for i in range(0, images.shape[0], batch)]
    finally:
        model.train(was_training)
    if not out:
        return torch.empty((0, *images.shape[-2:]), dtype=torch.long)
    return torch.cat(out).long()


# --------------------------------------------------------------------------- scores


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts, rows = target class, columns = predicted class."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError(f"pred and target must hold integer class ids, got {pred.dtype} and {target.dtype}")
    p = pred.reshape(-1).long().cpu()
    t = target.reshape(-1).long().cpu()
    for name, v in (("pred", p), ("target", t)):
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= num_classes):
            raise ValueError(f"{name} holds class ids {int(v.min())}..{int(v.max())}, "
                             f"outside 0..{num_classes - 1} (num_classes={num_classes})")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_scores(conf: torch.Tensor) -> dict[str, list[float]]:
    """Dice and IoU per class from a confusion matrix.

    A class absent from both prediction and target has no score (NaN), not a
    perfect one: averaging it in would flatter the mean. A class predicted but
    absent from the target scores 0.
    """
    if conf.dim() != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"conf must be a square (C, C) matrix, got shape {tuple(conf.shape)}")
    c = conf.double()
    tp = c.diagonal()
    fp = c.sum(dim=0) - tp
    fn = c.sum(dim=1) - tp
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    dice_den = 2 * tp + fp + fn
    iou_den = tp + fp + fn
    dice = torch.where(dice_den > 0, 2 * tp / dice_den.clamp(min=1), nan)
    iou = torch.where(iou_den > 0, tp / iou_den.clamp(min=1), nan)
    return {"dice": dice.tolist(), "iou": iou.tolist()}


def organ_mean(values: Sequence[float], names: Sequence[str]) -> tuple[float, list[str]]:
    """The mean of ``values`` (one per class) over the organ classes that have one (not NaN), and their names.

    Background is left out because it covers most of a slice and would push every score towards 1;
    the body class because it is the outline the label map already draws, easy and large, so a mean
    with it reads high however the organs fare (``labels.organ_ids``).
    """
    if len(values) != len(names):
        raise ValueError(f"{len(values)} values for {len(names)} classes; give one per class, background first")
    covered = [i for i in organ_ids(names) if not math.isnan(values[i])]
    mean = sum(values[i] for i in covered) / len(covered) if covered else float("nan")
    return mean, [names[i] for i in covered]


ABSENT = "not scored: no test label has it (the segmenter marks {} pixel(s) of it)"


def summarize(conf: torch.Tensor, class_names: Sequence[str]) -> list[dict]:
    """One row per class, then ``ORGAN_MEAN``: the mean over the organ classes the labels hold
    (``organ_mean``), its ``note`` naming them.

    A class the labels lack has no score (NaN, noted), even where the segmenter marks a few pixels of it:
    scored 0, those stray pixels would pull the organ mean down as a missed organ would (a perfect liver
    and one stray kidney pixel read 0.5); evaluate's segmentation consistency and the utility curve do the
    same."""
    if len(class_names) != conf.shape[0]:
        raise ValueError(f"class_names has {len(class_names)} names for a {conf.shape[0]}-class confusion matrix; "
                         "give one name per class, background first")
    scores = per_class_scores(conf)
    voxels, predicted = conf.sum(dim=1).tolist(), conf.sum(dim=0).tolist()
    nan = float("nan")
    rows = [{"class": str(name), "dice": d if v else nan, "iou": i if v else nan, "voxels": int(v),
             "note": ABSENT.format(int(p)) if not v and p else ""}
            for name, d, i, v, p in zip(class_names, scores["dice"], scores["iou"], voxels, predicted)]
    dice, covered = organ_mean([r["dice"] for r in rows], class_names)
    iou, _ = organ_mean([r["iou"] for r in rows], class_names)  # NaN exactly where Dice is: the same classes
    rows.append({"class": ORGAN_MEAN, "dice": dice, "iou": iou, "voxels": int(sum(voxels[i] for i in
                 organ_ids(class_names))), "note": organ_note(covered)})
    return rows
