"""The kinds of event a run logs to ``events.jsonl`` (one JSON object per line, ``{"type": kind, "time": ...}``).

Readers (the app's charts, the CLI's progress bar, tracking) dispatch on ``type``; writing a kind that
is not listed here is a programming error and fails at once, so a reader never meets a kind it was
not written for.
"""
from __future__ import annotations

from typing import Any, Literal

from core.data.message import Message, shown, stored
from core.i18n import _

EventKind = Literal["phase", "distributed", "resumed", "start", "step", "unfreeze", "warning", "epoch",
                    "early_stop", "restored_best", "probe", "budget", "weight_average", "end"]
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
    "weight_average": "WiSE-FT: mixes of the starting and fine-tuned weights were validated; the share kept",
    "end": "the last event: finished (with the result), stopped, or failed (with the reason)",
}
assert set(MEANING) == set(KINDS)


def event(kind: EventKind, time: float, **fields) -> dict:
    """One log line's object; ValueError for a kind not listed in KINDS."""
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}; the kinds are {', '.join(KINDS)} (core.train.events)")
    return {"type": kind, "time": time, **fields}


def said(msgid: str, **params: Any) -> dict:
    """An event's fields for a message to people: ``message`` in English (what the log stores and old readers
    show), with its msgid and values beside it so that a reader shows it in its own language (``text``).
    Write ``said(N_("... {n} ..."), n=n)`` so that extraction finds the msgid."""
    return carried(Message(msgid, **params))


def carried(message: str) -> dict:
    """``said``'s fields for a message made elsewhere: a Message keeps its msgid, plain text is stored as it is."""
    if isinstance(message, Message):
        return {"message": str(message), **message.to_dict()}
    return {"message": str(message)}


def text(ev: dict) -> str:
    """An event's message in the current language; an event of an older run (no msgid) shows its English text."""
    if isinstance(ev.get("msgid"), str):
        params = ev.get("params") or {}
        try:  # values keep their type, so a msgid's format specs ({budget:g}) apply in every language
            return _(ev["msgid"]).format(**{k: shown(stored("", v)) if isinstance(v, dict) else v
                                            for k, v in params.items()})
        except (KeyError, IndexError, ValueError, TypeError):
            pass  # a record from another version of the code: its English text still reads
    return str(ev.get("message", ""))
