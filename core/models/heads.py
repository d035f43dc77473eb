"""Heads on a shared body: one linear layer per task (multi-task learning)."""
from __future__ import annotations

import torch
from torch import nn

from core.models import backbones


class MultiTaskNet(nn.Module):
    """A shared body and one linear head per task: ``forward`` returns {task: logits}."""

    def __init__(self, body: nn.Module, heads: nn.ModuleDict):
        super().__init__()
        self.body = body
        self.heads = heads

    def forward_features(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every head on pre-computed body features."""
        return {t: h(feats) for t, h in self.heads.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_features(self.body(x))


def build_multitask(backbone: str, tasks: dict[str, list[str]], pretrained: bool = True) -> tuple[MultiTaskNet, nn.Module]:
    """(MultiTaskNet, the TransferNet it was cut from): the latter keeps layer groups and freezing working."""
    net = backbones.build_model(backbone, 1, pretrained=pretrained)
    dim = backbones.feature_dim(net)
    heads = nn.ModuleDict({t: nn.Linear(dim, len(cl)) for t, cl in tasks.items()})
    return MultiTaskNet(net.body, heads), net


class TaskHeads(nn.ModuleDict):
    """The head of a multi-task TransferNet: one linear layer per task, ``forward`` returns {task: logits}.

    Inside ``TransferNet(body, TaskHeads(...))`` the layer groups, freezing and cached features work as for
    any classifier; saved, its weights are renamed ``heads.<task>.*`` to load as a ``MultiTaskNet``."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {t: h(x) for t, h in self.items()}
