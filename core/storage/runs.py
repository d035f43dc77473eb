"""The run directory on disk: config, append-only event log, checkpoints, written atomically.

Layout of ``runs/<id>/``::

    config.json      the RunConfig
    split.json       classes and the exact train/val file lists
    events.jsonl     one JSON event per line, appended as training goes
    last.pt          resume state (model, optimizer, scheduler, RNG, epoch); torch.load(weights_only=True)
    best.safetensors best weights so far, with the model card in the safetensors metadata
    result.json      final metrics, written once at the end
    worker.log       stdout/stderr of the app's job process (torchrun.log for a torchrun job)
    stop.request     present while the app asks its job process to stop (pause.request: to pause)
    exports/         files built on the Export step (TorchScript, ONNX, int8, the .pt bundle, the zip)
    tensorboard/     TensorBoard event files, when the run's config turns them on
    tracking.json    the MLflow run id, so a resumed run continues its MLflow run
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

from core.storage import workspace

_append_lock = threading.Lock()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what a plain open() would give; mkstemp's 0600 would hide exports


def atomic_save(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync, then os.replace ``path``: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """atomic_save of bytes."""
    atomic_save(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    """atomic_save of UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def root() -> Path:
    """Folder holding every run."""
    return workspace.sub("runs")


def new_id() -> str:
    """Sortable by time, unguessable by anyone else (128 random bits)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(16)


class Run:
    """Handle on one run directory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.id = self.path.name

    # files
    @property
    def events_file(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def last_ckpt(self) -> Path:
        return self.path / "last.pt"

    @property
    def best_weights(self) -> Path:
        return self.path / "best.safetensors"

    def config(self):
        """The run's RunConfig."""
        from core.config import RunConfig

        return RunConfig.load(self.path / "config.json")

    def append(self, event: dict) -> None:
        """Append one event as a JSON line (flushed, so a crash loses at most the line in flight)."""
        line = json.dumps(event, default=float) + "\n"
        with _append_lock, open(self.events_file, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()

    def events(self) -> list[dict]:
        """Every complete event line; a torn last line (crash mid-write) is ignored."""
        if not self.events_file.exists():
            return []
        out = []
        for line in self.events_file.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def result(self) -> dict | None:
        """Final metrics, or None while running / if interrupted."""
        p = self.path / "result.json"
        return json.loads(p.read_text()) if p.exists() else None

    def status(self) -> str:
        """'finished', 'stopped', 'failed', 'interrupted' (no end event), or 'created'."""
        ends = [e for e in self.events() if e.get("type") == "end"]
        if ends:
            return ends[-1].get("status", "finished")
        starts = [e for e in self.events() if e.get("type") == "start"]
        return "interrupted" if starts else "created"

    def summary(self) -> dict:
        """One row for run listings."""
        ev = self.events()
        epochs = [e for e in ev if e.get("type") == "epoch"]
        best = max((e.get("val_acc", 0.0) for e in epochs), default=None)
        try:
            cfg = json.loads((self.path / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            cfg = {}
        t0 = ev[0]["time"] if ev else None
        t1 = ev[-1]["time"] if ev else None
        return {"id": self.id, "status": self.status(), "backbone": cfg.get("backbone"),
                "trainable": cfg.get("trainable"), "epochs_done": len(epochs), "best_val_acc": best,
                "duration_s": (t1 - t0) if t0 else None, "started": t0, "name": cfg.get("name", "")}


def create(config, split_dict: dict | None = None) -> Run:
    """Make a new run directory holding the config."""
    run = Run(root() / new_id())
    run.path.mkdir(parents=True)
    atomic_write_text(run.path / "config.json", config.to_json())
    if split_dict is not None:
        atomic_write_text(run.path / "split.json", json.dumps(split_dict))
    return run


def open_run(run_id_or_path: str | Path) -> Run:
    """A Run from an id under the workspace or a path; ValueError if it is not a run directory."""
    p = Path(run_id_or_path)
    if not (p / "config.json").exists():
        p = root() / str(run_id_or_path)
    if not (p / "config.json").exists() or ".." in Path(str(run_id_or_path)).parts and not p.is_absolute():
        raise ValueError(f"{run_id_or_path!s} is not a run directory (no config.json); list runs with "
                         f"`python -m core runs` or pass the path printed by `train`")
    return Run(p)


def list_runs() -> list[Run]:
    """All runs, newest first."""
    return [Run(p) for p in sorted(root().iterdir(), reverse=True) if (p / "config.json").exists()]


def delete(run_id: str, active_ids: set[str] = frozenset()) -> None:
    """Remove a run directory for good; refuses runs that are training or paths outside the workspace."""
    if run_id in active_ids:
        raise ValueError(f"run {run_id} is still training; stop it first, then delete it")
    path = (root() / run_id).resolve()
    if path.parent != root().resolve() or not (path / "config.json").exists():
        raise ValueError(f"{run_id!r} is not a run of this workspace; nothing was deleted")
    shutil.rmtree(path)
