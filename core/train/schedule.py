"""How fast and how long the loop learns: optimizer, learning-rate schedule (and its restart for "train N more
epochs"), the layer groups active in an epoch under gradual unfreezing, and the run's time budget."""
from __future__ import annotations

import time

import torch

from core.config import RunConfig

def make_optimizer(config: RunConfig, groups: list[dict]) -> torch.optim.Optimizer:
    # One fused kernel per step instead of a Python loop over the tensors (the default on the CPU): on
    # EfficientNet-Lite0 the optimizer step was ~8% of a fine-tuning step on 2 CPU cores.
    fused = {"fused": True} if _fusable(groups) else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True, **fused)
    return torch.optim.AdamW(groups, lr=config.lr, **fused)


def _fusable(groups: list[dict]) -> bool:
    """Whether every parameter is a floating-point tensor on a device with fused optimizer kernels."""
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)


def make_scheduler(config: RunConfig, opt: torch.optim.Optimizer, total_steps: int):
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                   total_steps=max(total_steps, 1), pct_start=0.25)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1), eta_min=0.0)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def active_groups(config: RunConfig, target: list[str], epoch: int) -> list[str]:
    """Groups that learn during ``epoch`` (0-based) under the gradual-unfreezing settings."""
    if config.unfreeze_after <= 0 or epoch >= config.unfreeze_after and config.unfreeze_mode == "all":
        return list(target)
    if epoch < config.unfreeze_after:
        return ["head"]
    body = [g for g in target if g != "head"]
    n = min(epoch - config.unfreeze_after + 1, len(body))  # one more group per epoch, from the head toward the stem
    return body[len(body) - n:] + ["head"]


RESTART_FACTOR = 0.5  # peak of a restarted schedule relative to the first one (SGDR-style warm restarts decay it)


def schedule_end(state: dict, step: int) -> int | None:
    """The step at which a saved schedule ends (it began at ``step - last_epoch``); None for a constant one."""
    length = state.get("T_max") or state.get("total_steps")
    return None if length is None else step - int(state["last_epoch"]) + int(length)


def restart_schedule(config: RunConfig, opt: torch.optim.Optimizer, steps: int):
    """A new schedule of the config's kind over ``steps`` more steps, peaking at RESTART_FACTOR times the first
    schedule's peak: the finished schedule had annealed to ~0, and rising back to the full peak would undo
    much of what the first run learned."""
    for g in opt.param_groups:
        peak = g.get("max_lr", g.get("initial_lr", g["lr"])) * RESTART_FACTOR
        g["lr"] = g["initial_lr"] = peak
    return make_scheduler(config, opt, steps)


class Budget:
    """The run's time budget: whether it is spent, and whether another epoch of a kind would still fit."""

    def __init__(self, seconds: float, t0: float):
        self.seconds, self.t0, self.times = float(seconds), t0, {}

    @property
    def on(self) -> bool:
        return self.seconds > 0

    def elapsed(self) -> float:
        return time.time() - self.t0

    def spent(self) -> bool:
        return self.on and self.elapsed() > self.seconds

    def record(self, kind, seconds: float) -> None:
        """One finished epoch's duration; ``kind`` separates cached-feature epochs from image epochs."""
        self.times.setdefault(kind, []).append(seconds)

    def next_fits(self, kind) -> bool:
        """Whether an epoch of ``kind`` would end within the budget (unknown kinds are tried; the check
        between steps stops them)."""
        seen = self.times.get(kind)
        if not seen:
            return not self.spent()
        return self.elapsed() + sum(seen) / len(seen) <= self.seconds
