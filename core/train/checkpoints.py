"""What a run keeps on disk while it trains: the resume state (last.pt) and the best weights.

``last.pt`` holds, after every completed epoch, the learnable tensors, the optimizer, the scheduler and
every random state, so a resumed run draws the same batches and ends where an uninterrupted one ends.
The best weights are written by ``BestWriter`` on a background thread; until a best has reached its file
it also travels inside last.pt, so a hard kill loses nothing.
"""
from __future__ import annotations

import random
import threading
import time

import numpy as np
import torch
from torch import nn

from core.models import backbones
from core.results import loading
from core.storage import runs
from core.train.technique import Technique
from core.i18n import _


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": repr(random.getstate()),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])]}


def set_rng_state(s: dict) -> None:
    import ast

    torch.set_rng_state(s["torch"])
    random.setstate(ast.literal_eval(s["python"]))
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))


def group_keys(model: nn.Module, backbone: str, groups: list[str]) -> set[str]:
    """State-dict keys (parameters and buffers) inside the given layer groups."""
    paths = [p for g, ps in backbones.group_modules(backbone).items() if g in groups for p in ps]
    return {k for k in model.state_dict() if any(k == p or k.startswith(p + ".") for p in paths)}


class LearnedState:
    """The state-dict entries training can change (all but the fixed groups), read without a walk over
    the whole model: in a head-only run on cached features one epoch costs less than ``state_dict()``."""

    def __init__(self, model: nn.Module, backbone: str, target: list[str], fixed: set[str]):
        self.model = model
        full = model.state_dict()
        self.fixed = {k: v for k, v in full.items() if k in fixed}  # never change during the run
        paths = [p for g, ps in backbones.group_modules(backbone).items() if g in target for p in ps]
        found = {k for p in paths for k in model.get_submodule(p).state_dict(prefix=p + ".")}
        # the per-group reading is used only when it finds exactly the learnable entries
        self.paths = paths if found == set(full) - fixed else None

    def state(self) -> dict[str, torch.Tensor]:
        """Learnable entries (detached, live tensors)."""
        if self.paths is None:
            return {k: v for k, v in self.model.state_dict().items() if k not in self.fixed}
        out: dict[str, torch.Tensor] = {}
        for p in self.paths:
            out.update(self.model.get_submodule(p).state_dict(prefix=p + "."))
        return out

    def full(self, learned: dict) -> dict[str, torch.Tensor]:
        """A whole state dict: the fixed entries plus ``learned``."""
        return {**self.fixed, **learned}

    def load(self, learned: dict) -> None:
        """Put saved learnable entries back into the model."""
        missing, unexpected = self.model.load_state_dict(learned, strict=False)
        if unexpected or set(missing) - set(self.fixed):
            raise RuntimeError(_("saved weights do not match the model (missing {missing}, unexpected "
                                 "{unexpected})").format(
                                   missing=sorted(missing)[:3], unexpected=sorted(unexpected)[:3]))


class BestWriter:
    """Writes best.safetensors on a background thread: at once the first time, then whenever ``spacing``
    times the last write's duration has passed since it, so writing costs at most ~1/``spacing`` of the
    training time and training does not wait for the disk.

    Epochs of a few seconds or more get every improvement written at once. Head-only epochs on cached
    features take milliseconds and improve nearly every time: writing the whole model after each would
    cost more than the training, so the newest best waits (under a second) as "pending". Until its write
    has finished, a best travels inside last.pt as well (only the learnable tensors), so a hard kill loses
    nothing: resuming writes it first thing, and a finishing, stopped or failing run writes it before its
    end event (``flush``).
    """

    spacing = 10.0

    def __init__(self, run: runs.Run, learned: LearnedState, technique: Technique, card):
        self.run, self.learned, self.technique, self.card = run, learned, technique, card
        self.pending: tuple[dict, dict] | None = None  # the newest best, until it is in best.safetensors
        self.kept: dict | None = None  # the best learnable tensors, to restore them without reading the file
        self.written_at: float | None = None
        self.write_s = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def update(self, metrics: dict) -> None:
        """A new best after an epoch: keep a copy, write it now or later."""
        self._raise()
        self.kept = {k: v.to("cpu", copy=True) for k, v in self.learned.state().items()}
        item = (self.kept, dict(metrics))
        with self._lock:
            self.pending = item
        busy = self._thread is not None and self._thread.is_alive()
        if not busy and (self.written_at is None or time.time() - self.written_at >= self.spacing * self.write_s):
            self._thread = threading.Thread(target=self._write_in_background, args=(item,), daemon=True,
                                            name=f"best-writer-{self.run.id}")
            self._thread.start()

    def unwritten(self) -> dict:
        """Learnable tensors of a best that is not yet safely in best.safetensors ({} when none is)."""
        with self._lock:
            return self.pending[0] if self.pending else {}

    def flush(self) -> None:
        """Return once the newest best is in best.safetensors."""
        if self._thread is not None:
            self._thread.join()
        self._raise()
        if self.pending is not None:
            if self.kept is None:
                self.kept = self.pending[0]
            self._write(self.pending)

    def _write(self, item: tuple[dict, dict]) -> None:
        learned, metrics = item
        t0 = time.time()
        state = self.technique.export_state(self.learned.full(learned))
        loading.save_safetensors(StateOnly(state), self.card(metrics), self.run.path / self.technique.best_file)
        with self._lock:
            if self.pending is item:  # a newer best may have arrived meanwhile; it stays pending
                self.pending = None
            self.written_at = time.time()
            self.write_s = self.written_at - t0

    def _write_in_background(self, item: tuple[dict, dict]) -> None:
        try:
            self._write(item)
        except BaseException as e:  # reported on the training thread at the next update or flush
            self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err


class StateOnly:
    """Stands in for a module where only ``state_dict()`` is needed (export of a saved state)."""

    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return self._state


def save_last(run: runs.Run, learned: "LearnedState", opt, sched, gen: torch.Generator, **counters) -> None:
    """The resume state after a completed epoch, written atomically (torch.load(weights_only=True) reads it)."""
    state = {"model": {k: v.cpu() for k, v in learned.state().items()},
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(),
             "loader_rng": gen.get_state(), **counters}
    runs.atomic_save(run.last_ckpt, lambda tmp: torch.save(state, tmp))
