"""The kinds of event a run logs to ``events.jsonl`` (one JSON object per line, ``{"type": kind, "time": ...}``).

Readers (the app's charts, the CLI's progress bar, tracking) dispatch on ``type``; writing a kind that
is not listed here is a programming error and fails at once, so a reader never meets a kind it was
not written for.
"""
from __future__ import annotations

from typing import Literal

EventKind = Literal["phase", "distributed", "resumed", "start", "step", "unfreeze", "warning", "epoch",
                    "early_stop", "restored_best", "probe", "budget", "end"]
KINDS: tuple[str, ...] = EventKind.__args__
MEANING = {
    "phase": "preparation progress: extracting, decoding, embedding, teacher logits (done / total)",
    "distributed": "under torchrun: world size, backend and the per-process and global batch",
    "resumed": "training continues from last.pt at this epoch and step",
    "start": "the loop is ready: technique, device, sample counts, groups, parameters, steps per epoch",
    "step": "one optimizer step: loss, learning rate, images/s, ETA (and a technique's own step numbers)",
    "unfreeze": "gradual unfreezing opened more layer groups",
    "warning": "something the user should know; training goes on",
    "epoch": "an epoch's training and validation metrics, and whether it is the best so far",
    "early_stop": "early stopping ended training before the last epoch",
    "restored_best": "the model in memory went back to the best epoch's weights",
    "probe": "the linear-probe warm start set the head: its train and validation accuracy before any step",
    "budget": "the time budget ended training (the next epoch would not fit, or it ran out mid-epoch)",
    "end": "the last event: finished (with the result), stopped, or failed (with the reason)",
}
assert set(MEANING) == set(KINDS)


def event(kind: EventKind, time: float, **fields) -> dict:
    """One log line's object; ValueError for a kind not listed in KINDS."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}; the kinds are {', '.join(KINDS)} (core.train.events)")
    return {"type": kind, "time": time, **fields}
