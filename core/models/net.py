"""The model shape every technique trains: a pretrained body and a head, ``logits = head(body(x))``.

Its own module so the image registry (core.models.backbones) and the text one (core.models.text_backbones),
which the image registry imports, build the same class."""
from __future__ import annotations

import torch
from torch import nn


class TransferNet(nn.Module):
    """A pretrained body and a fresh linear head: ``logits = head(body(x))``."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
