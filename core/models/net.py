"""The model shape every technique trains: a pretrained body and a head, ``logits = head(body(x))``.

Its own module so the image registry (core.models.backbones) and the text one (core.models.text_backbones),
which the image registry imports, build the same class."""
from __future__ import annotations

import torch
from torch import nn

# On a CPU a pass costs more per image when a batch's activations outgrow the caches, so there batches go through
# in chunks of about this many input pixels. Best-of-3 timings by a one-off script on this project's 2-core machine
# (last-3 learning, body BatchNorm in eval, channels_last; img/s in chunks of 4 / 8 / 16 / 32 images):
#   inference  Lite0 96 px 158 / 201 / 228 / 190, 160 px 104 / 112 / 91 / 64, 224 px 67 / 58 / 52 / 33,
#              Lite2 260 px 26 / 26 / 22 / 16;
#   training   Lite0 96 px 53 / 72 / 82 / 102, 160 px 34 / 36 / 45 / 46, 224 px 23 / 24 / 19 / 23,
#              Lite2 260 px 14 / 12 / 11 / 11.
INFER_PIXELS = 2 ** 18  # ~5 images at 224 px, 28 at 96 px
TRAIN_PIXELS = 2 ** 19  # ~10 images at 224 px, 7 at 260 px; a whole batch of 32 at 96 px


def cpu_chunk(image_pixels: int, budget: int) -> int:
    """Images per chunk on a CPU: as many images of ``image_pixels`` pixels as fit ``budget`` pixels (at least 1)."""
    return max(1, budget // max(image_pixels, 1))


def infer(module: nn.Module, x: torch.Tensor):
    """``module(x)``; an image batch on a CPU goes through in chunks (``INFER_PIXELS``) when nothing learns
    (autograd off, module in eval mode: each output row then depends on its own image only, so the result is the
    same). Outputs may be a tensor or a dict or tuple of tensors (multi-task heads)."""
    if (x.device.type != "cpu" or x.dim() != 4 or torch.is_grad_enabled() or module.training
            or torch.jit.is_tracing()):
        return module(x)
    size = cpu_chunk(x.shape[-1] * x.shape[-2], INFER_PIXELS)
    if len(x) <= size:
        return module(x)
    parts = [module(part) for part in x.split(size)]
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    if isinstance(parts[0], (tuple, list)):
        return type(parts[0])(torch.cat(col) for col in zip(*parts))
    return torch.cat(parts)


class TransferNet(nn.Module):
    """A pretrained body and a fresh linear head: ``logits = head(body(x))``."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
