"""Freeze plans over layer groups, train/eval modes that respect them, per-group learning rates."""
from __future__ import annotations

import re

from torch import nn

from core.models import backbones
from core.i18n import _

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def plan(backbone: str, trainable: str = "head", groups: list[str] | None = None) -> list[str]:
    """Trainable group names (ordered stem -> head) for a preset or an explicit list; head always learns."""
    order = backbones.group_names(backbone)
    if groups is not None:
        unknown = [g for g in groups if g not in order]
        if unknown:
            raise ValueError(_("unknown layer group(s) {unknown} for {backbone}; its groups are {order}").format(
                                 unknown=', '.join(unknown), backbone=backbone, order=', '.join(order)))
        chosen = set(groups) | {"head"}
        return [g for g in order if g in chosen]
    if trainable == "head":
        return ["head"]
    if trainable == "all":
        return order
    m = re.fullmatch(r"last-(\d+)", str(trainable))
    if not m:
        raise ValueError(_("trainable must be head, last-N or all; got {trainable!r}").format(trainable=trainable))
    n = min(int(m.group(1)), len(order) - 1)
    return order[len(order) - 1 - n:]


def apply(model: nn.Module, backbone: str, trainable_groups: list[str]) -> dict[str, int]:
    """Set requires_grad per group; returns {'trainable': n, 'total': n} parameter counts."""
    counts = {"trainable": 0, "total": 0}
    for g, params in backbones.param_groups_of(backbone, model).items():
        on = g in trainable_groups
        for _name, p in params:
            p.requires_grad_(on)
            counts["total"] += p.numel()
            counts["trainable"] += p.numel() if on else 0
    return counts


def set_train_mode(model: nn.Module, backbone: str, trainable_groups: list[str]) -> None:
    """model.train(), but BatchNorm in frozen groups stays in eval mode (running stats kept).

    When the whole body is frozen it goes to eval entirely (dropout off too), which is what makes
    pre-computed features exactly equal to what the body would produce during training.
    """
    model.train()
    body_groups = backbones.group_names(backbone)[:-1]
    if not any(g in trainable_groups for g in body_groups):
        model.body.eval()
        return
    for g in body_groups:
        if g not in trainable_groups:
            for m in backbones.modules_in(backbone, model, g):
                if isinstance(m, _BN):
                    m.eval()


def batchnorm_learning(model: nn.Module) -> bool:
    """Whether any BatchNorm layer is in training mode (normalising with the statistics of the batch it sees)."""
    return any(isinstance(m, _BN) and m.training for m in model.modules())


def param_groups(model: nn.Module, backbone: str, trainable_groups: list[str], lr: float,
                 decay: float = 1.0, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer param groups: head at ``lr``, each trainable group toward the stem at lr * decay^k."""
    by_group = backbones.param_groups_of(backbone, model)
    out = []
    for k, g in enumerate(reversed(trainable_groups)):
        params = [p for _, p in by_group[g]]
        if params:
            out.append({"params": params, "lr": lr * decay ** k, "name": g, "weight_decay": weight_decay})
    return out
