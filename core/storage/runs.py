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
    train.lock       flock held by the training process (core.storage.locks): one trainer per run
    .owner.json      who owns the run when sign-in is on (core.storage.owners)

A damaged file (a disk that filled up, a crash, a hand edit) never makes a reader raise: the readers
return what is intact and ``Run.problem()`` says what is damaged, so a page can show that one run as
damaged and keep working for the others.
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

from core.storage import locks, owners, workspace
from core.storage.cards import BEST_FILE, DamagedFile, read_card
from core.i18n import N_, _

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


# Files whose damage Run.problem() reports; MODEL_FILES are those evaluation and export read.
INTACT_FILES = ("config.json", "events.jsonl", "result.json", "split.json", BEST_FILE)
MODEL_FILES = ("config.json", "split.json", BEST_FILE)
# the words require_intact's callers use for ``action``, marked for translation
_ACTIONS = {"used": N_("used"), "evaluated": N_("evaluated"), "exported": N_("exported"), "shown": N_("shown")}


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
        return self.path / BEST_FILE  # the name core.storage.cards.weights_file resolves a run folder to

    def config(self):
        """The run's RunConfig (ValueError saying what is wrong when config.json is damaged)."""
        from core.config import RunConfig

        try:
            text = (self.path / "config.json").read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(_("run {run}: config.json is not valid UTF-8; the run is damaged — delete it or restore "
                               "the file").format(run=self.id)) from None
        try:
            return RunConfig.from_json(text)
        except (ValueError, TypeError) as e:
            raise ValueError(_("run {run}: config.json cannot be used ({error}); the run is damaged — delete it or "
                               "restore the file").format(run=self.id, error=e)) from None

    def append(self, event: dict) -> None:
        """Append one event as a JSON line (flushed, so a crash loses at most the line in flight)."""
        line = json.dumps(event, default=float) + "\n"
        with _append_lock, open(self.events_file, "a+b") as f:
            _drop_torn_tail(f)
            f.write(line.encode("utf-8"))
            f.flush()

    def _read_events(self) -> tuple[list[dict], list[str]]:
        """(intact events, reasons for damaged lines); a torn last line (crash mid-write) is not damage."""
        try:
            data = self.events_file.read_bytes()
        except OSError:
            return [], []
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline, else the line a crash cut short
        out, bad = [], []
        for n, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                ev = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                bad.append(_("events.jsonl line {n} is not valid UTF-8").format(n=n))
                continue
            except ValueError:
                bad.append(_("events.jsonl line {n} is not valid JSON").format(n=n))
                continue
            if not isinstance(ev, dict):
                bad.append(_("events.jsonl line {n} is not a JSON object").format(n=n))
                continue
            out.append(ev)
        if torn.strip():
            try:
                ev = json.loads(torn.decode("utf-8"))
                if isinstance(ev, dict):
                    out.append(ev)  # complete but unterminated: a writer from before this rule
            except ValueError:
                pass
        return out, bad

    def events(self) -> list[dict]:
        """Every intact event (JSON object) line; damaged lines are skipped and reported by problem()."""
        return self._read_events()[0]

    def result(self) -> dict | None:
        """Final metrics, or None while running / if interrupted / if result.json is damaged."""
        value = _json_file(self.path / "result.json")
        return value if isinstance(value, dict) else None

    def status(self, events: list[dict] | None = None) -> str:
        """'finished', 'stopped', 'failed', 'running' (a process holds it), 'interrupted' or 'created'."""
        events = self.events() if events is None else events
        kinds = [e.get("type") for e in events]
        last_end = max((i for i, k in enumerate(kinds) if k == "end"), default=-1)
        last_start = max((i for i, k in enumerate(kinds) if k == "start"), default=-1)
        if last_end > last_start:  # a start after the last end is a resume that has not ended yet
            return str(events[last_end].get("status", "finished"))
        if locks.holder(self.path) is not None:
            return "running"
        return "interrupted" if last_start >= 0 else "created"

    def problem(self, files: tuple[str, ...] = INTACT_FILES) -> str | None:
        """None for a healthy run, else a short reason naming the damaged file (for the run listings).

        ``files`` limits the check, e.g. to MODEL_FILES before evaluating or exporting (a damaged
        event log does not stop those).
        """
        reasons = []
        cfg = _json_file(self.path / "config.json")
        if "config.json" in files and (cfg is _DAMAGED or not isinstance(cfg, dict)):
            reasons.append(_("{file} is truncated or not valid JSON").format(file="config.json"))
        if "events.jsonl" in files:
            reasons += self._read_events()[1][:3]
        for name in ("result.json", "split.json"):
            if name in files and (self.path / name).exists() and _json_file(self.path / name) is _DAMAGED:
                reasons.append(_("{file} is truncated or not valid JSON").format(file=name))
        weights = self.path / BEST_FILE
        if BEST_FILE in files and weights.exists():
            try:
                read_card(weights)
            except DamagedFile as e:
                reasons.append(str(e))
            except (ValueError, OSError) as e:
                reasons.append(_("{file} cannot be read ({error})").format(file=BEST_FILE, error=e))
        return "; ".join(reasons) or None

    def require_intact(self, files: tuple[str, ...] = MODEL_FILES, action: str = "used") -> "Run":
        """This run, or ValueError naming the damage when one of ``files`` is damaged (``action``: used, evaluated,
        exported or shown)."""
        problem = self.problem(files)
        if problem:
            raise ValueError(_("run {run} is damaged ({problem}) and cannot be {action}; delete it on the Runs page "
                               "or restore the file").format(run=self.id, problem=problem,
                                                             action=_(_ACTIONS.get(action, action))))
        return self

    def resumable(self) -> bool:
        """True when training can continue: an intact last.pt, the run did not finish, and no process holds it."""
        if not self.last_ckpt.exists() or self.status() == "finished":
            return False
        return locks.holder(self.path) is None and _loads(self.last_ckpt)

    def summary(self) -> dict:
        """One row for run listings (``problem`` says why a run is damaged, None when healthy)."""
        ev = self.events()
        epochs = [e for e in ev if e.get("type") == "epoch"]
        best = max((e["val_acc"] for e in epochs if isinstance(e.get("val_acc"), (int, float))), default=None)
        cfg = _json_file(self.path / "config.json")
        cfg = cfg if isinstance(cfg, dict) else {}
        times = [e["time"] for e in ev if isinstance(e.get("time"), (int, float))]
        t0, t1 = (times[0], times[-1]) if times else (None, None)
        return {"id": self.id, "status": self.status(ev), "backbone": cfg.get("backbone"),
                "trainable": cfg.get("trainable"), "epochs_done": len(epochs), "best_val_acc": best,
                "duration_s": (t1 - t0) if t0 else None, "started": t0, "name": cfg.get("name", ""),
                "problem": self.problem()}


_DAMAGED = object()  # what _json_file returns for a file that exists but is not JSON


def _json_file(path: Path):
    """The parsed JSON of a file, None when it does not exist, _DAMAGED when it cannot be parsed."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _DAMAGED


def _drop_torn_tail(f) -> None:
    """Cut a line a crash left unterminated, so the next event starts on a line of its own."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return
    f.seek(end - 1)
    if f.read(1) == b"\n":
        return
    start = max(0, end - (1 << 20))
    f.seek(start)
    tail = f.read()
    cut = tail.rfind(b"\n")
    if cut < 0 and start > 0:
        f.write(b"\n")  # a torn line over 1 MiB: end it rather than read further back
        return
    f.truncate(start + cut + 1)
    f.seek(0, os.SEEK_END)


_loads_cache: dict[tuple, bool] = {}


def _loads(path: Path) -> bool:
    """Whether a checkpoint loads with torch.load(weights_only=True); remembered per (path, size, mtime)."""
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _loads_cache:
        import torch  # only resumability checks need it

        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # no full copy in the server
            _loads_cache[key] = True
        except Exception:  # truncated zip, refused pickle, unreadable file: not a usable checkpoint
            _loads_cache[key] = False
    return _loads_cache[key]


def create(config, split_dict: dict | None = None, owner: str | None = None) -> Run:
    """Make a new run directory holding the config (and the owner record when sign-in is on)."""
    run = Run(root() / new_id())
    run.path.mkdir(parents=True)
    owners.record(run.path, owner)  # before config.json: listings never see the run without its owner
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
        raise ValueError(_("{run} is not a run directory (no config.json); list runs with `python -m core runs` or "
                           "pass the path printed by `train`").format(run=run_id_or_path))
    return Run(p)


def list_runs() -> list[Run]:
    """All runs, newest first (damaged ones included: ask each its problem())."""
    found = []
    for p in sorted(root().iterdir(), reverse=True):
        try:
            if p.is_dir() and (p / "config.json").is_file():
                found.append(Run(p))
        except OSError:
            continue  # unreadable entry: not a run this process can show
    return found


def delete(run_id: str, active_ids: set[str] = frozenset()) -> None:
    """Remove a run directory for good; refuses runs that are training or paths outside the workspace."""
    if run_id in active_ids:
        raise ValueError(_("run {run} is still training; stop it first, then delete it").format(run=run_id))
    path = (root() / run_id).resolve()
    if path.parent != root().resolve() or not (path / "config.json").exists():
        raise ValueError(_("{run} is not a run of this workspace; nothing was deleted").format(run=repr(run_id)))
    held = locks.holder(path)  # a trainer in any process, not only this app's jobs
    if held is not None:
        raise ValueError(_("run {run} is still training ({holder}); stop it first, then delete it").format(
            run=run_id, holder=locks.describe(held)))
    shutil.rmtree(path)
