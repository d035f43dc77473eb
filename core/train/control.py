"""Pause, resume and stop: flags read by the training loop between steps.

``Control`` serves a loop driven from a thread of the same process; ``DistControl`` serves a training
process the app supervises (and each torchrun rank), reading the request files the app writes into
the run folder.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from core.train.ddp import Single, launched

STOP_FILE = "stop.request"    # written by the app: the trainer stops between steps
PAUSE_FILE = "pause.request"  # present while the app wants the run paused
SUPERVISOR_ENV = "TRANSFER_STUDIO_SUPERVISOR_PID"  # the app's pid: rank 0 stops if that process is gone
ORPHAN_EXIT = 75  # exit status of a plain job process whose app went away


class Stopped(Exception):
    """Raised inside the loop when the user asked to stop."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Control:
    """Pause / resume / stop flags shared between the UI thread and the worker."""

    def __init__(self):
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def checkpoint(self) -> None:
        """Called between steps: blocks while paused, raises Stopped when asked to stop."""
        self._running.wait()
        if self._stop.is_set():
            raise Stopped()


class DistControl:
    """The trainer's Control in a process the app supervises: reads the app's request files between steps.

    Under torchrun, rank 0 reads the files and each step all ranks all-reduce one small flag (0 run,
    1 pause, 2 stop), so they stop at the same step; a SIGTERM, a vanished torchrun agent (parent) or
    a vanished app (``SUPERVISOR_ENV``) stop too. In one plain process (``ctx`` is ``Single``, the app's
    own jobs) a vanished app ends the process at once, as if it had died with the app: the run is left
    "interrupted" and resumes from its last completed epoch (``last.pt``), like a run in a killed server.
    """

    def __init__(self, ctx: Single, run_path: Path | None):
        self.ctx, self.run_path = ctx, Path(run_path) if run_path else None
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._ppid = os.getppid()
        sup = os.environ.get(SUPERVISOR_ENV)
        self._supervisor = int(sup) if sup and sup.isdigit() else None

    def pause(self) -> None:
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()

    def stop(self) -> None:
        self._stop.set()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _gone(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True
        except PermissionError:
            return False

    def _orphaned(self) -> bool:
        return os.getppid() != self._ppid or bool(self._supervisor and self._gone(self._supervisor))

    def _local(self) -> int:
        if self.ctx.world == 1 and not launched() and self._orphaned():
            os._exit(ORPHAN_EXIT)  # no end event: the run stays resumable, as after a crash of the app
        if self._stop.is_set() or os.getppid() != self._ppid:
            return 2
        if self.run_path is not None:
            if (self.run_path / STOP_FILE).exists() or (self._supervisor and self._gone(self._supervisor)):
                return 2
            if (self.run_path / PAUSE_FILE).exists():
                return 1
        return 1 if self._pause.is_set() else 0

    def checkpoint(self) -> None:
        """Called between steps on every rank: waits while paused, raises Stopped on stop."""
        flag = self.ctx.max_int(self._local())
        while flag == 1:
            time.sleep(0.5)
            flag = self.ctx.max_int(self._local())
        if flag == 2:
            raise Stopped()
