"""Training jobs: one per run, in a process-wide registry guarded by a lock.

By default each job trains in a child process (``python -m core train --run-dir RUN``, supervised by
``core.train.supervisor.SubprocessJob``); ``TRANSFER_STUDIO_JOBS=thread`` (or ``JobManager(mode="thread")``)
trains in a worker thread of this process instead (``Job``). Why a process: PyTorch's CPU thread pool
(OpenMP) runs slower when a second thread of the same process drives it (1.1-1.35x the training time in
``benchmarks/bench_engine.py`` row c3), and a page-serving server is such a process; a child process
trains as fast as the command line (rows c1, c2), and a crash in native code cannot take the server down.

Either way the UI polls ``snapshot()``; worker code never touches the UI. A job knows its owner (a
user name under ``st.login``, or None for the single-user default) and only its owner may see it.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import dataclass, field

from core import i18n
from core.i18n import _
from core.storage import runs
from core.config import RunConfig
from core import techniques
from core.train.control import Control


MODES = ("process", "thread")


@dataclass
class Job:
    """One training run in a worker thread."""

    id: str
    config: RunConfig
    run: runs.Run
    owner: str | None = None
    from_checkpoint: bool = False  # continue the run from its last.pt (a resumed run)
    control: Control = field(default_factory=Control)
    events: list = field(default_factory=list)
    state: str = "queued"        # queued | running | paused | finished | stopped | failed
    error: str | None = None
    traceback: str | None = None
    result: dict | None = None
    thread: threading.Thread | None = None
    created: float = field(default_factory=time.time)
    # the language of whoever started it: its worker thread says errors in it (issue 15)
    language: str = field(default_factory=i18n.current_language)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _on_event(self, ev: dict) -> None:
        with self._lock:
            self.events.append(ev)

    def _work(self) -> None:
        self.state = "running"
        i18n.set_language(self.language)  # this worker thread's own: exceptions raised here come out in it
        try:
            self.result = techniques.fit(self.config, self._on_event, self.control, self.run, resume=self.from_checkpoint)
            self.state = self.result.get("status", "finished")
        except Exception as e:  # shown in the UI with its traceback
            self.error = f"{type(e).__name__}: {e}"
            self.traceback = traceback.format_exc()
            self.state = "failed"

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def status(self) -> str:
        """The state, corrected so a job whose thread is gone is never shown as running."""
        if self.state in ("running", "paused") and self.thread is not None and not self.thread.is_alive():
            return "failed" if self.error else "interrupted"
        if self.state == "running" and self.control.paused:
            return "paused"
        return self.state

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def stop(self) -> None:
        self.control.stop()

    def snapshot(self) -> dict:
        """A consistent copy of what the UI shows: status, events, latest progress."""
        with self._lock:
            events = list(self.events)
        steps = [e for e in events if e["type"] == "step"]
        phases = [e for e in events if e["type"] == "phase"]
        return {"id": self.id, "status": self.status(), "events": events, "last_step": steps[-1] if steps else None,
                "last_phase": phases[-1] if phases else None, "error": self.error, "traceback": self.traceback,
                "result": self.result, "run_dir": str(self.run.path), "config": self.config.to_dict()}


class JobManager:
    """Registry of jobs; at most ``max_running`` train at once, the rest wait in a queue."""

    def __init__(self, max_running: int | None = None, mode: str | None = None):
        mode = mode or os.environ.get("TRANSFER_STUDIO_JOBS", "process")
        if mode not in MODES:
            raise ValueError(_("{name} must be one of {choices}; got {value}").format(
                name="TRANSFER_STUDIO_JOBS", choices=", ".join(MODES), value=repr(mode)))
        self.mode = mode
        if max_running is None:  # the app's limit: $TRANSFER_STUDIO_MAX_JOBS, default 2 (a CPU box has few cores)
            text = os.environ.get("TRANSFER_STUDIO_MAX_JOBS", "2")
            if not text.isdigit() or int(text) < 1:
                raise ValueError(_("{name} must be a whole number >= 1; got {value}").format(
                    name="TRANSFER_STUDIO_MAX_JOBS", value=repr(text)))
            max_running = int(text)
        self.max_running = max_running
        self._jobs: dict[str, Job] = {}
        self._queue: list[str] = []
        self._lock = threading.Lock()

    def start(self, config: RunConfig, owner: str | None = None, run: runs.Run | None = None,
              resume: bool = False) -> Job:
        """Validate, create the run directory, and run (or queue) a job; returns it at once."""
        techniques.check(config)  # fields, backbone and technique: refused before a run folder or a process exists
        run = run or runs.create(config, owner=owner)
        if self.mode == "thread":
            return self.enqueue(Job(run.id, config, run, owner=owner, from_checkpoint=resume))
        from core.jobs.supervisor import SubprocessJob

        return self.enqueue(SubprocessJob(config, run, nproc=None, owner=owner, resume=resume))

    def enqueue(self, job):
        """Register a job (a Job, or anything with its surface and ``_work()``) and run it when a slot frees."""
        with self._lock:
            self._jobs[job.id] = job
            self._queue.append(job.id)
        self._pump()
        return job

    def resume_run(self, run_id: str, owner: str | None = None) -> Job:
        """Continue an interrupted run from its last completed epoch."""
        run = runs.open_run(run_id)
        existing = self.get(run.id, owner)
        if existing is not None and existing.alive:
            raise ValueError(_("run {run} is already running").format(run=run.id))
        return self.start(run.config(), owner=owner, run=run, resume=True)

    def _pump(self, finished: Job | None = None) -> None:
        """Start queued jobs while there is room; ``finished`` is a job whose thread is about to end."""
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j.alive and j is not finished)
            while self._queue and running < self.max_running:
                job = self._jobs[self._queue.pop(0)]
                job.thread = threading.Thread(target=self._run, args=(job,), name=f"job-{job.id[:24]}", daemon=True)
                job.state = "running"
                job.thread.start()
                running += 1

    def _run(self, job: Job) -> None:
        try:
            job._work()
        finally:
            self._pump(finished=job)  # this thread is still alive here, but its slot is free

    def queue_position(self, job_id: str) -> int | None:
        """1-based place in the queue, or None when not waiting."""
        with self._lock:
            return self._queue.index(job_id) + 1 if job_id in self._queue else None

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job if it exists and belongs to ``owner``."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            return None
        return job

    def list(self, owner: str | None = None) -> list[Job]:
        """The owner's jobs, newest first."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.owner == owner]
        return sorted(jobs, key=lambda j: j.created, reverse=True)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job is queued or training (at most ``timeout`` seconds); True when idle."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                busy = self._queue or any(j.alive for j in self._jobs.values())
            if not busy:
                return True
            time.sleep(0.2)
        return False

    def stop_all(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for j in jobs:
            j.stop()
