"""One trainer per run, across processes: an exclusive ``flock`` on ``<run>/train.lock``.

The training process takes the lock with ``hold(run_path)`` and keeps it for its whole life. The
kernel drops an flock when the last descriptor of the lock file closes, so a crash, an OOM kill or
SIGKILL frees the run at once, and a lock file left behind by a dead process means nothing. Who
holds the lock is written into the file for messages; whether anyone holds it is only ever asked of
the kernel (``holder``), never read from the file.

flock is reliable on local file systems; on NFS it depends on the server (keep the workspace local).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.i18n import _

LOCK_FILE = "train.lock"
# A probe by holder() takes a shared lock for microseconds; a trainer starting at that moment
# retries for this long before it believes that another process really holds the run.
_RETRY_S = 1.0


class RunBusy(RuntimeError):
    """The run is held by another training process; ``holder`` says which (pid, host, since, owner)."""

    def __init__(self, run_path: Path, holder: dict):
        self.run_path, self.holder = Path(run_path), holder
        super().__init__(_("run {run} is being trained by {holder}; stop it first or wait for it to finish").format(
            run=self.run_path.name, holder=describe(holder)))


def describe(holder: dict) -> str:
    """'process 1234 on host box since 2026-01-02 10:00:00 (owner alice)' from a holder dict."""
    if not holder.get("pid"):
        return _("another process (it is just starting)")
    values = {"pid": holder["pid"], "host": holder.get("host", "?"), "since": holder.get("since", "?")}
    if holder.get("owner"):
        return _("process {pid} on host {host} since {since} (owner {owner})").format(owner=holder["owner"], **values)
    return _("process {pid} on host {host} since {since}").format(**values)


def _read(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode("utf-8")) if raw else {}
    except (OSError, ValueError):
        info = {}  # being written right now, or damaged: the kernel's answer is what counts
    return info if isinstance(info, dict) else {}


@contextmanager
def hold(run_path: str | Path, owner: str | None = None) -> Iterator[dict]:
    """Hold the run's training lock for the ``with`` block; RunBusy (naming the holder) if another has it."""
    path = Path(run_path) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + _RETRY_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunBusy(Path(run_path), _read(fd)) from None
                time.sleep(0.05)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "owner": owner}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield info
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves an empty file; a crash leaves a stale one (harmless)
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def holder(run_path: str | Path) -> dict | None:
    """Who trains the run now ({pid, host, since, owner}), or None when no process holds it."""
    path = Path(run_path) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # never locked (or the run is gone)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
