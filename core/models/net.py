"""The model shape every technique trains: a pretrained body and a head, ``logits = head(body(x))``.

Its own module so the image registry (core.models.backbones) and the text one (core.models.text_backbones),
which the image registry imports, build the same class."""
from __future__ import annotations

import torch
from torch import nn

# On a CPU a forward pass costs more per image in big batches: activations outgrow the caches. Timed by one-off
# scripts on this project's 2-core machine (Lite0 last-3 at 224 px, channels_last): inference 28 img/s in one
# batch of 32 against 54 in chunks of 8; a training step (body BatchNorm in eval mode) 16-20 against 27-28.
CPU_CHUNK = 8


def infer(module: nn.Module, x: torch.Tensor):
    """``module(x)``; an image batch on a CPU goes through in chunks of ``CPU_CHUNK`` when nothing learns (autograd
    off, module in eval mode: each output row then depends on its own image only, so the result is the same).
    Outputs may be a tensor or a dict or tuple of tensors (multi-task heads)."""
    if (x.device.type != "cpu" or x.dim() != 4 or len(x) <= CPU_CHUNK or torch.is_grad_enabled() or module.training
            or torch.jit.is_tracing()):
        return module(x)
    parts = [module(part) for part in x.split(CPU_CHUNK)]
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
