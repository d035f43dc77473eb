"""The app's side of a training job: a child process (``python -m core train``, or torchrun for several
GPUs) started for a run folder and supervised from a thread, with the snapshot / pause / resume / stop
surface of ``core.jobs.manager.Job``. Pause and stop are request files the process reads between steps.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from core import i18n, techniques
from core.i18n import _
from core.storage import runs
from core.train import events as event_kinds
from core.train.control import PAUSE_FILE, STOP_FILE, SUPERVISOR_ENV

LOG_FILE = "torchrun.log"     # stdout and stderr of the torchrun agent and its workers
WORKER_LOG = "worker.log"     # stdout and stderr of a plain (single-process) job


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def command(run_dir: str | Path, nproc: int | None, resume: bool = False) -> list[str]:
    """The command line that trains ``run_dir`` (its config.json): torchrun on ``nproc`` local processes,
    or one plain ``python -m core`` process when ``nproc`` is None (the app's single-device jobs)."""
    flag = "--resume" if resume else "--run-dir"
    if nproc is None:
        return [sys.executable, "-m", "core", "train", flag, str(run_dir)]
    if not (isinstance(nproc, int) and nproc >= 1):
        raise ValueError(_("nproc must be an integer >= 1 (or None for one plain process); got {value}").format(
            value=repr(nproc)))
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "core", "train", flag, str(run_dir)]


def log_name(nproc: int | None) -> str:
    """The run-folder file that collects a job's stdout and stderr."""
    return WORKER_LOG if nproc is None else LOG_FILE


def launch(config, nproc: int | None, run: runs.Run, resume: bool = False,
           language: str | None = None) -> subprocess.Popen:
    """Start ``command()`` for ``run`` in its own session (so one signal reaches the group); output goes to
    the run's ``log_name(nproc)``; ``language`` (default: the environment's) is the one its messages use."""
    if not resume:
        runs.atomic_write_text(run.path / "config.json", techniques.check(config).to_json())
    for name in (STOP_FILE, PAUSE_FILE):
        (run.path / name).unlink(missing_ok=True)
    from core.storage import workspace

    env = dict(os.environ)
    env["TRANSFER_STUDIO_HOME"] = str(workspace.home())
    env[SUPERVISOR_ENV] = str(os.getpid())
    if language:
        env["LANGUAGE"] = language  # the CLI reads it when no --lang is given
    env["PYTHONPATH"] = os.pathsep.join([str(_repo_root())] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if nproc is not None:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        if config.device == "auto" or config.device == "cpu":
            env["TRANSFER_STUDIO_DDP_DEVICE"] = config.device
    log = open(run.path / log_name(nproc), "ab")
    try:
        return subprocess.Popen(command(run.path, nproc, resume), cwd=_repo_root(), env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        log.close()  # the child holds its own copy of the descriptor


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(d.name))
    return out


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (Linux /proc; just ``[pid]`` elsewhere)."""
    if not Path("/proc").is_dir():
        return [pid]
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        if Path("/proc").is_dir():
            return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class SubprocessJob:
    """A training run in a child process (torchrun on ``nproc`` processes, or one plain ``python -m core``
    process when ``nproc`` is None), supervised by a thread; same surface as ``core.jobs.manager.Job``.

    The UI reads ``snapshot()``; events come from tailing the run's events.jsonl. ``pause`` / ``stop``
    write request files that the trainer (rank 0) reads between steps; if the processes do not end
    within ``grace_s`` of a stop, the whole tree gets SIGTERM, then SIGKILL.
    """

    def __init__(self, config, run: runs.Run, nproc: int | None, owner: str | None = None, resume: bool = False,
                 grace_s: float = 30.0):
        self.id, self.config, self.run, self.nproc = run.id, config, run, nproc
        self.owner, self.from_checkpoint, self.grace_s = owner, resume, grace_s
        self.events: list[dict] = []
        self.state = "queued"
        self.error: str | None = None
        self.traceback: str | None = None
        self.result: dict | None = None
        self.thread: threading.Thread | None = None
        self.proc: subprocess.Popen | None = None
        self.created = time.time()
        self.language = i18n.current_language()  # of whoever started it: the process and its errors use it
        self._lock = threading.Lock()
        self._tail_lock = threading.Lock()
        self._stop_at: float | None = None
        self._pids: set[int] = set()
        self._offset = 0
        self._partial = b""

    # the Job surface
    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def status(self) -> str:
        """The state, corrected so a job whose supervisor thread is gone is never shown as running, and a run
        that has logged its end counts as ended while its process is still shutting down."""
        if self.state in ("running", "paused") and self.thread is not None and not self.thread.is_alive():
            return "failed" if self.error else "interrupted"
        if self.state == "running":
            if self.proc is not None:
                self._tail()  # what the UI shows is never older than the run's log on disk
            with self._lock:
                end = self.events[-1] if self.events else {}  # 'end' is always a run's last event
            if end.get("type") == "end":
                return end.get("status", "finished")
        if self.state == "running" and (self.run.path / PAUSE_FILE).exists():
            return "paused"
        return self.state

    def pause(self) -> None:
        runs.atomic_write_text(self.run.path / PAUSE_FILE, "")

    def resume(self) -> None:
        (self.run.path / PAUSE_FILE).unlink(missing_ok=True)

    def stop(self) -> None:
        """Ask every rank to stop at the next step; the supervisor escalates to signals after ``grace_s``."""
        runs.atomic_write_text(self.run.path / STOP_FILE, "")
        (self.run.path / PAUSE_FILE).unlink(missing_ok=True)
        with self._lock:
            if self._stop_at is None:
                self._stop_at = time.time()
        if self.proc is None and self.state == "queued":
            self.state = "stopped"

    def pids(self) -> list[int]:
        """Live processes of this job: the torchrun agent and its workers."""
        if self.proc is None:
            return []
        with self._lock:
            known = set(self._pids)
        return sorted(p for p in known | set(descendants(self.proc.pid)) if alive(p))

    def snapshot(self) -> dict:
        """A consistent copy of what the UI shows: status, events, latest progress."""
        with self._lock:
            events = list(self.events)
        steps = [e for e in events if e.get("type") == "step"]
        phases = [e for e in events if e.get("type") == "phase"]
        return {"id": self.id, "status": self.status(), "events": events, "last_step": steps[-1] if steps else None,
                "last_phase": phases[-1] if phases else None, "error": self.error, "traceback": self.traceback,
                "result": self.result, "run_dir": str(self.run.path), "config": self.config.to_dict(),
                "nproc": self.nproc, "pids": self.pids() if self.alive else []}

    def start(self) -> "SubprocessJob":
        """Start the supervisor thread (JobManager-free use; ``submit`` queues it in a JobManager instead)."""
        self.thread = threading.Thread(target=self._work, name=f"proc-job-{self.id[:24]}", daemon=True)
        self.state = "running"
        self.thread.start()
        return self

    # supervision
    def _tail(self) -> None:
        """Read the events appended since the last call (the supervisor and status() both call it)."""
        with self._tail_lock:
            self._tail_locked()

    def _tail_locked(self) -> None:
        f = self.run.events_file
        if not f.exists():
            return
        with open(f, "rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        if not chunk:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        new = []
        for line in lines:
            try:
                new.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        with self._lock:
            self.events.extend(new)
        for ev in new:  # the UI can show the outcome at once, while the process is still shutting down
            if ev.get("type") == "end":
                self.result = self.run.result()
                if ev.get("status") == "failed" and self.error is None:
                    self.error, self.traceback = event_kinds.text(ev) or None, ev.get("traceback")

    def _signal_all(self, sig) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def _work(self) -> None:
        self.state = "running"
        i18n.set_language(self.language)  # this supervisor thread's own: the errors it composes come out in it
        try:
            if self._stop_at is not None:
                self.state = "stopped"
                return
            if self.from_checkpoint and self.run.events_file.exists():  # like a thread Job: only this session's events
                self._offset = self.run.events_file.stat().st_size
            self.proc = launch(self.config, self.nproc, self.run, self.from_checkpoint, self.language)
            _register(self)
            if self._stop_at is not None:  # stop() raced with the launch, which clears stale request files
                runs.atomic_write_text(self.run.path / STOP_FILE, "")
            term_sent = kill_sent = False
            last_scan = 0.0
            while self.proc.poll() is None:
                self._tail()
                now = time.time()
                if now - last_scan > 1.0:  # remember workers: if the agent dies first they would be hidden
                    last_scan = now
                    found = set(descendants(self.proc.pid))
                    with self._lock:
                        self._pids |= found
                with self._lock:
                    stop_at = self._stop_at
                if stop_at is not None and not term_sent and now - stop_at > self.grace_s:
                    self._signal_all(signal.SIGTERM)
                    term_sent = True
                elif stop_at is not None and not kill_sent and now - stop_at > self.grace_s + 10:
                    self._signal_all(signal.SIGKILL)
                    kill_sent = True
                time.sleep(0.2)
            self._tail()
            self._finish(self.proc.returncode)
        except Exception as e:  # shown in the UI with its traceback
            self.error = f"{type(e).__name__}: {e}"
            self.traceback = traceback.format_exc()
            self.state = "failed"
        finally:
            self._reap()
            _unregister(self)
            for name in (STOP_FILE, PAUSE_FILE):  # a later `--resume` must not obey an old request
                (self.run.path / name).unlink(missing_ok=True)

    def _finish(self, rc: int) -> None:
        with self._lock:
            ends = [e for e in self.events if e.get("type") == "end"]
        self.result = self.run.result()
        if ends:
            end = ends[-1]
            self.state = end.get("status", "finished")
            if self.state == "failed":
                self.error = event_kinds.text(end) or _("{what} exited with code {rc}").format(what=self._what, rc=rc)
                self.traceback = end.get("traceback") or self._log_tail()
        elif self._stop_at is not None:
            self.state = "stopped"
        else:
            self.state = "failed"
            self.error = _("{what} exited with code {rc} before the run ended; the last lines of {log} in the run "
                           "folder say why").format(what=self._what, rc=rc, log=log_name(self.nproc))
            self.traceback = self._log_tail()

    @property
    def _what(self) -> str:
        return _("the training process") if self.nproc is None else "torchrun"

    def _log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join((self.run.path / log_name(self.nproc)).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _reap(self) -> None:
        """No process of this job outlives it."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal_all(signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for pid in list(self._pids):
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


_live: set = set()
_live_lock = threading.Lock()


def _register(job: SubprocessJob) -> None:
    import atexit

    with _live_lock:
        if not _live:
            atexit.register(_kill_live)
        _live.add(job)


def _unregister(job: SubprocessJob) -> None:
    with _live_lock:
        _live.discard(job)


def _kill_live() -> None:
    """At interpreter exit: the app is going away, so its torchrun jobs must not run on unsupervised."""
    with _live_lock:
        jobs = list(_live)
    for job in jobs:
        job._signal_all(signal.SIGKILL)


def submit(manager, config, nproc: int, owner: str | None = None, run: runs.Run | None = None,
           resume: bool = False) -> SubprocessJob:
    """Queue a torchrun job in a ``core.jobs.manager.JobManager``, next to its thread jobs (same limit, same listing)."""
    techniques.check(config)
    run = run or runs.create(config, owner=owner)
    job = SubprocessJob(config, run, nproc, owner=owner, resume=resume)
    return manager.enqueue(job)  # the manager runs job._work() in a worker thread, like its own jobs
