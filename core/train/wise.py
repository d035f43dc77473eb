"""Robust fine-tuning by weight averaging (WiSE-FT: Wortsman et al. 2022, *Robust fine-tuning of zero-shot
models*): after fine-tuning, the learned weights are mixed with the ones the run started from — the pretrained
body and the probe-fitted head — ``(1 - a) * start + a * fine_tuned``, and a mix replaces the fine-tuned weights
only when it scores better on validation. Fine-tuning on a few hundred images pulls features toward those
images; the mix keeps part of what the pretrained body knew. On benchmarks/bench_quality.py's digits (240
training images, 400 held-out digits by other writers; a one-off script) the balanced recipe's weights scored
0.850 on validation and 0.685 held-out, their 50/50 mix with the start 0.883 and 0.703.

The run's starting state (the learnable tensors after the probe fit) is kept in the run folder, so a resumed
run ("train N more epochs") mixes with the same start.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from core.storage import runs

if TYPE_CHECKING:  # importing this module does not import torch: the recipes (core.train.presets) count SHARES
    import torch

SHARES = (0.25, 0.5, 0.75)  # share of the fine-tuned weights in each mix tried (1.0 = the fine-tuned weights)
START_FILE = "start.pt"     # the learnable tensors as training began, in the run folder


def applies(config, body_learns: bool, validates: bool, has_val: bool) -> bool:
    """Whether a run mixes its weights at the end: asked for, some body layer learned, and a validation split
    to choose by."""
    return bool(config.wise_ft) and body_learns and validates and has_val


def save_start(run: runs.Run, state: dict[str, torch.Tensor]) -> None:
    import torch

    runs.atomic_save(run.path / START_FILE, lambda tmp: torch.save(state, tmp))


def load_start(run: runs.Run) -> dict[str, torch.Tensor] | None:
    """The starting state of a run, or None when it was not kept (a run begun before this existed)."""
    import torch

    path = run.path / START_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def mix(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], share: float) -> dict[str, torch.Tensor]:
    """``(1 - share) * start + share * end`` for floating-point tensors; counters (BatchNorm's
    ``num_batches_tracked``) are the fine-tuned ones."""
    return {k: v if k not in start or not v.is_floating_point()
            else start[k].to(v.device).float().lerp(v.float(), share).to(v.dtype) for k, v in end.items()}


def choose(score_of: Callable[[dict], tuple[float, dict]], start: dict, end: dict, best_score: float,
           min_delta: float = 0.0) -> tuple[float, dict | None, list[dict]]:
    """(share, metrics, tried): the mix that scores best, if it beats the fine-tuned weights' ``best_score`` by
    more than ``min_delta`` (share 1.0 and None otherwise, as an epoch must to replace the best); ``tried`` has
    every mix's share, score and metrics. ``score_of(state)`` loads a state and validates it."""
    tried = []
    for share in SHARES:
        score, metrics = score_of(mix(start, end, share))
        tried.append({"share": share, "score": score, "metrics": metrics})
    top = max(tried, key=lambda t: t["score"])  # the first of equal scores: the one closest to the start
    if top["score"] > best_score + min_delta:
        return top["share"], top["metrics"], tried
    return 1.0, None, tried
