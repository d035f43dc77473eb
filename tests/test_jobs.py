"""The job registry: a configurable limit queues further jobs; owners only see their own jobs."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.jobs.manager import JobManager

REPO = Path(__file__).resolve().parent.parent


def _wait(job, timeout=300):
    deadline = time.time() + timeout
    while job.alive or job.status() == "queued":
        assert time.time() < deadline, "job did not finish"
        time.sleep(0.2)


def test_limit_from_the_environment_queues_the_second_job(monkeypatch, digits_dir, tiny_config):
    monkeypatch.setenv("TRANSFER_STUDIO_MAX_JOBS", "1")
    mgr = JobManager()
    first = mgr.start(tiny_config(digits_dir, epochs=2), owner="ana")
    second = mgr.start(tiny_config(digits_dir), owner="ana")
    assert mgr.queue_position(second.id) == 1 and second.status() == "queued"
    _wait(first)
    _wait(second)
    assert first.status() == second.status() == "finished"
    assert mgr.queue_position(second.id) is None
    # ids are unguessable and jobs are private to their owner
    assert len(first.id.rsplit("-", 1)[-1]) == 32
    assert mgr.get(first.id, owner="bob") is None and mgr.list(owner="bob") == []
    assert {j.id for j in mgr.list(owner="ana")} == {first.id, second.id}


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_limit_says_what_is_expected(monkeypatch, value):
    monkeypatch.setenv("TRANSFER_STUDIO_MAX_JOBS", value)
    with pytest.raises(ValueError, match="TRANSFER_STUDIO_MAX_JOBS must be a whole number >= 1"):
        JobManager()


def _epochs(run) -> list[dict]:
    return [e for e in run.events() if e.get("type") == "epoch"]


def test_app_jobs_train_in_a_child_process_with_the_same_result_as_a_thread(digits_dir, tiny_config):
    config = tiny_config(digits_dir, epochs=2, seed=3)
    in_process = JobManager(mode="process").start(config)
    pids = set()
    while in_process.alive or in_process.status() == "queued":
        pids |= set(in_process.snapshot().get("pids", []))
        time.sleep(0.1)
    assert in_process.status() == "finished", in_process.error
    assert pids and os.getpid() not in pids  # it trained somewhere else ...
    in_thread = JobManager(mode="thread").start(config)
    _wait(in_thread)
    # ... and learned exactly what the same config learns in this process
    a, b = _epochs(in_process.run), _epochs(in_thread.run)
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert abs(x["val_loss"] - y["val_loss"]) < 1e-4 and x["val_acc"] == y["val_acc"]
    assert [e["type"] for e in in_process.snapshot()["events"]].count("epoch") == 2  # the UI saw them live


def test_pause_resume_and_stop_reach_the_child_process(digits_dir, tiny_config):
    job = JobManager(mode="process").start(tiny_config(digits_dir, epochs=30, batch_size=4, trainable="all"))
    deadline = time.time() + 120
    while not job.snapshot()["last_step"]:
        assert time.time() < deadline and job.alive, job.error
        time.sleep(0.1)
    job.pause()
    assert job.status() == "paused"
    time.sleep(2.0)  # the step under way may finish; after that nothing moves
    held = len(job.snapshot()["events"])
    time.sleep(2.0)
    assert len(job.snapshot()["events"]) == held and job.alive
    job.resume()
    while len(job.snapshot()["events"]) == held:
        assert time.time() < deadline, "the job did not continue after resume"
        time.sleep(0.1)
    job.stop()
    _wait(job)
    assert job.status() == "stopped" and job.run.status() == "stopped"
    assert job.snapshot()["pids"] == []


_APP = """
import sys, time
from core.config import RunConfig
from core.jobs.manager import JobManager
job = JobManager(mode="process").start(RunConfig.from_json(sys.argv[1]))
print(job.run.path, flush=True)
while not job.snapshot()["pids"]:
    time.sleep(0.05)
print(" ".join(map(str, job.snapshot()["pids"])), flush=True)
time.sleep(600)
"""


def test_a_killed_app_leaves_its_job_interrupted_and_resumable(digits_dir, tiny_config, tmp_path, monkeypatch):
    """Kill the app's process mid-training: the training process ends too, the run shows as interrupted,
    and resuming continues from the last completed epoch to the end."""
    from core.storage import runs

    config = tiny_config(digits_dir, epochs=4, batch_size=16, image_size=32, seed=1, trainable="all")
    env = {**os.environ, "TRANSFER_STUDIO_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    app = subprocess.Popen([sys.executable, "-c", _APP, config.to_json()], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, text=True)
    try:
        run = runs.Run(Path(app.stdout.readline().strip()))
        workers = [int(p) for p in app.stdout.readline().split()]
        deadline = time.time() + 180
        while len(_epochs(run)) < 2:
            assert time.time() < deadline and app.poll() is None, "no epoch was logged"
            time.sleep(0.1)
        app.kill()
        app.wait(timeout=30)
        deadline = time.time() + 30
        while any(_alive(p) for p in workers):
            assert time.time() < deadline, "the training process outlived the app"
            time.sleep(0.1)
    finally:
        app.kill()
    done = len(_epochs(run))
    deadline = time.time() + 10  # the kernel lets go of the dead trainer's run lock a moment after its exit
    while run.status() == "running" and time.time() < deadline:
        time.sleep(0.1)
    assert run.status() == "interrupted" and 2 <= done < 4
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path))  # the restarted app's workspace
    job = JobManager(mode="process").resume_run(str(run.path))
    _wait(job)
    assert job.status() == "finished", job.error
    epochs = [e["epoch"] for e in _epochs(run)]
    assert epochs == list(range(1, 5))  # each epoch once: resumed after the last completed one


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_wait_idle_returns_once_queued_and_running_jobs_are_done(digits_dir, tiny_config):
    mgr = JobManager(max_running=1, mode="thread")
    first = mgr.start(tiny_config(digits_dir, epochs=2))
    second = mgr.start(tiny_config(digits_dir))
    assert mgr.wait_idle(timeout=0.1) is False  # both still busy
    assert mgr.wait_idle(timeout=300) is True
    assert first.status() == second.status() == "finished"
