"""The segmenter behind segmentation consistency and the utility benchmark: a small 2D U-Net, and its
file, which names its classes so that another label table's can be matched to them by name."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medsynth.io.checkpoint import load_checkpoint, save_checkpoint

KIND = "segmenter"
# Four levels: at 64 px the bottleneck is 8 x 8 and the receptive field
# (~90 px) spans the slice, which small organs told apart by their
# surroundings need (aorta in front of the spine, bowel gas vs lung). On the
# demo phantom three levels (~45 px) scored Dice <= 0.17 on those two.
DEFAULT_CHANNELS = (16, 32, 64, 64)


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """conv-BN-ReLU twice; no conv bias because BN's shift replaces it."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class UNetSegmenter(nn.Module):
    """A plain U-Net: one conv block per level, max-pool down, bilinear up with skip concatenation.

    ``channels`` gives the width of each level, from full resolution down to
    the bottleneck; ``len(channels) - 1`` poolings follow, so the input size
    must be divisible by ``2 ** (len(channels) - 1)``.
    """

    def __init__(self, num_classes: int, image_channels: int = 1,
                 channels: Sequence[int] = DEFAULT_CHANNELS) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background and at least one class), got {num_classes}")
        if image_channels < 1:
            raise ValueError(f"image_channels must be >= 1, got {image_channels}")
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive widths, got {channels}")
        self.num_classes = int(num_classes)
        self.image_channels = int(image_channels)
        self.channels = channels
        # Per class, whether a training slice had it (``train_segmenter``); None: not recorded (older files).
        self.class_seen: list[bool] | None = None

        self.down = nn.ModuleList()
        prev = image_channels
        for width in channels:
            self.down.append(_conv_block(prev, width))
            prev = width
        # Decoder level i takes the upsampled level i+1 next to the skip of level i.
        self.up = nn.ModuleList(
            _conv_block(channels[i + 1] + channels[i], channels[i]) for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.image_channels:
            raise ValueError(f"input must be (B, {self.image_channels}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(f"image size {h}x{w} is not divisible by {m} (2 ** (len(channels) - 1)); "
                             f"pad or crop the slices to a multiple of {m}")
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()  # the bottleneck has no skip partner
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


# --------------------------------------------------------------------------- training


def save_segmenter(model: UNetSegmenter, path: Path, num_classes: int, channels: Sequence[int],
                   class_names: Sequence[str]) -> Path:
    """Write the weights with what is needed to rebuild the network and to read its output (atomically,
    like training checkpoints): ``class_names`` are the label table's, one per output channel, so that
    another table's classes can be matched to them by name."""
    channels, class_names = [int(c) for c in channels], [str(n) for n in class_names]
    if getattr(model, "num_classes", num_classes) != num_classes or getattr(model, "channels", channels) != channels:
        raise ValueError(f"num_classes={num_classes}, channels={channels} do not describe the model "
                         f"(num_classes={model.num_classes}, channels={model.channels}); pass the model's own")
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a {num_classes}-class segmenter; pass the label "
                         "table's names (LabelTable.names), background first")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(path, {"kind": KIND, "state": state, "num_classes": int(num_classes),
                                  "channels": channels, "class_names": class_names,
                                  "image_channels": int(getattr(model, "image_channels", 1)),
                                  "class_seen": getattr(model, "class_seen", None)})


def load_segmenter(path: Path, device: torch.device | None = None) -> tuple[UNetSegmenter, tuple[str, ...]]:
    """A segmenter written by ``save_segmenter``, in eval mode on ``device`` (default: CPU), and the names
    of its classes (output channel i is class ``names[i]``)."""
    payload = load_checkpoint(path, map_location="cpu")
    if payload.get("kind") != KIND:
        raise ValueError(f"{path}: not a segmenter checkpoint (kind={payload.get('kind')!r}); "
                         "pass a file written by save_segmenter")
    if "class_names" not in payload:  # written before classes were matched by name: which is which is unknown
        raise ValueError(f"{path}: the segmenter does not name its classes (an older medsynth wrote it); rerun "
                         "the segmenter rule (snakemake --forcerun segmenter)")
    model = UNetSegmenter(int(payload["num_classes"]), image_channels=int(payload.get("image_channels", 1)),
                          channels=payload["channels"])
    model.load_state_dict(payload["state"])
    model.class_seen = payload.get("class_seen")
    return model.to(device if device is not None else "cpu").eval(), tuple(payload["class_names"])
