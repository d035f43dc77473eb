"""Test-time augmentation: a few views of each image, their softmax averaged (evaluation and exported graphs).

Modes (``MODES``): ``none``; ``flip``, the image and its mirror; ``multicrop``, the centre and the four corners
of the image enlarged by ``ZOOM`` (five views at the model's input size, the "5-crop" of the ImageNet papers
taken from the already centre-cropped image, so it needs no second decode and fits inside an exported graph).
"""
from __future__ import annotations

import torch
from torch import nn

from core.i18n import _
from core.models.net import infer

MODES = ("none", "flip", "multicrop")
ZOOM = 1.15  # how much larger than the input the multi-crop views are cut from: a mild zoom keeps every view whole


def mode_of(tta) -> str:
    """The mode a caller asked for: a name of ``MODES``, or a bool (True meant "flip" before there were modes)."""
    if tta is True:
        return "flip"
    if tta is False or tta is None:
        return "none"
    if tta not in MODES:
        raise ValueError(_("test-time augmentation must be one of {modes}; got {got!r}").format(
            modes=", ".join(MODES), got=tta))
    return tta


def multicrop_views(x: torch.Tensor, zoom: float = ZOOM) -> list[torch.Tensor]:
    """The centre and the four corners of a batch enlarged by ``zoom``, each view at the batch's own size."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    big_h, big_w = max(h, round(h * zoom)), max(w, round(w * zoom))
    big = nn.functional.interpolate(x, size=(big_h, big_w), mode="bilinear", align_corners=False)
    dy, dx = big_h - h, big_w - w
    corners = [(dy // 2, dx // 2), (0, 0), (0, dx), (dy, 0), (dy, dx)]
    return [big[..., y:y + h, c:c + w] for y, c in corners]


def views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The batches a mode averages over (``none``: the batch itself)."""
    if mode == "flip":
        return [x, torch.flip(x, [3])]
    if mode == "multicrop":
        return multicrop_views(x)
    return [x]


def probs(net: nn.Module, x: torch.Tensor, mode: str = "flip") -> torch.Tensor:
    """The mean over the mode's views of the softmax of ``net``'s outputs (CPU batches in chunks, ``infer``)."""
    return _mean_softmax([infer(net, v) for v in views(x, mode)])


def _mean_softmax(outputs: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([torch.softmax(o.float(), 1) for o in outputs]).mean(0)


class TTA(nn.Module):
    """Test-time augmentation inside an exported graph: the mean of the softmax over the mode's views, returned
    as log-probabilities so the output stays "logits" (its softmax is that mean)."""

    def __init__(self, net: nn.Module, mode: str = "flip"):
        super().__init__()
        self.net = net
        self.mode = mode_of(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The views go through whole: an exported graph holds no chunking loop.
        return torch.log(_mean_softmax([self.net(v) for v in views(x, self.mode)]).clamp_min(1e-12))


def note(mode) -> str | None:
    """What an exported model's card says about the augmentation inside its graph (None without)."""
    mode = mode_of(mode)
    if mode == "flip":
        return ("horizontal flip: the output is the log of the mean of the image's and its mirror's softmax "
                "(softmax of it gives the averaged probabilities)")
    if mode == "multicrop":
        return (f"multi-crop: the output is the log of the mean softmax of 5 views, the centre and the 4 corners of "
                f"the image enlarged {ZOOM:g}x (softmax of it gives the averaged probabilities)")
    return None
