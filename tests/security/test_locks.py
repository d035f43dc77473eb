"""One trainer per run: the lock is held by a real process, refused to a second, freed by SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.storage import locks, runs
from core.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]


def _child_holding(run_path: Path, owner: str = "alice") -> subprocess.Popen:
    """A python process that takes the run's lock, says so on stdout, then sleeps until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from core.storage import locks
        with locks.hold({str(run_path)!r}, owner={owner!r}):
            print("held", flush=True)
            time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held", "the child process never took the lock"
    return child


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run-1"
    d.mkdir()
    return d


def test_a_second_hold_is_refused_naming_the_process_that_trains(run_dir):
    child = _child_holding(run_dir)
    try:
        with pytest.raises(locks.RunBusy) as err:
            with locks.hold(run_dir):
                pytest.fail("two holders of one run")
        msg = str(err.value)
        assert f"process {child.pid} on host" in msg and "owner alice" in msg, msg
        assert "stop it first or wait" in msg
        who = locks.holder(run_dir)
        assert who["pid"] == child.pid and who["owner"] == "alice"
    finally:
        child.kill()
        child.wait()


def test_sigkill_frees_the_run_and_a_stale_lock_file_means_nothing(run_dir):
    child = _child_holding(run_dir)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (run_dir / locks.LOCK_FILE).read_text(), "the dead holder's note should still be in the file"
    assert locks.holder(run_dir) is None
    with locks.hold(run_dir, owner="bob") as info:
        assert info["pid"] == os.getpid()
        assert locks.holder(run_dir)["owner"] == "bob"
    assert locks.holder(run_dir) is None


def test_holder_is_none_for_a_run_never_trained_and_probing_creates_nothing(run_dir):
    assert locks.holder(run_dir) is None
    assert not (run_dir / locks.LOCK_FILE).exists()
    assert locks.holder(run_dir / "no-such-run") is None


def test_a_probe_never_makes_a_starting_trainer_fail(run_dir):
    # holder() takes a shared lock for an instant; hold() must not mistake it for a trainer.
    import threading

    stop = threading.Event()

    def probe():
        while not stop.is_set():
            locks.holder(run_dir)

    t = threading.Thread(target=probe)
    t.start()
    try:
        for _ in range(50):
            with locks.hold(run_dir):
                pass
    finally:
        stop.set()
        t.join()


def test_a_held_run_reads_as_running_cannot_be_resumed_or_deleted_until_its_process_dies():
    run = runs.create(RunConfig(data="sample:shapes"))
    run.append({"type": "start", "time": time.time()})
    run.last_ckpt.write_bytes(b"")  # presence only; resumable() also checks that it loads
    import torch

    torch.save({"epoch": 1}, run.last_ckpt)
    child = _child_holding(run.path)
    try:
        assert run.status() == "running"
        assert not run.resumable()
        with pytest.raises(ValueError, match=f"still training \\(process {child.pid}"):
            runs.delete(run.id)
        assert run.path.exists()
    finally:
        child.kill()
        child.wait()
    assert run.status() == "interrupted"
    assert run.resumable()
    runs.delete(run.id)
    assert not run.path.exists()
