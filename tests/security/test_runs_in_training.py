"""A run held by a live training process cannot be deleted by anyone, its owner included; once the process
is gone (even SIGKILLed), Resume is offered at once, without a server restart."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from accounts import ROOT, key, make_dataset, make_run, tab, texts
from core.app import services
from core.storage import locks, runs

ALICE = key("alice")


def _trainer_holding(run: runs.Run) -> subprocess.Popen:
    """A real process that takes the run's training lock (as the trainer does) and keeps it until killed."""
    code = textwrap.dedent(f"""
        import time
        from core.storage import locks
        with locks.hold({str(run.path)!r}, owner="trainer"):
            print("held", flush=True)
            time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def _kill(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)  # as the kernel's OOM killer would: no clean-up runs
    child.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and child.poll() is None:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def alice_ds(shapes_dir):
    return make_dataset("alice-train", shapes_dir, ALICE)


def test_a_run_held_by_a_live_trainer_cannot_be_deleted_until_the_trainer_is_gone(shapes_dir):
    run = make_run(ALICE, shapes_dir, status=None)  # started, no end: training
    child = _trainer_holding(run)
    try:
        at = tab("alice", "7_runs")
        assert dict(zip(at.dataframe[0].value["id"], at.dataframe[0].value["status"]))[run.id] == "running"
        at.selectbox(key="runs_pick").set_value(run.id).run()
        assert at.button(key="runs_delete").disabled and at.checkbox(key="runs_delete_confirm").disabled
        assert "training right now" in texts(at)
        # the facade refuses as well, whoever asks and however (no page involved)
        with pytest.raises(ValueError, match="still training"):
            services.delete_run(run.id, ALICE)
        with pytest.raises(ValueError, match="still training"):
            runs.delete(run.id)
        assert run.path.is_dir()
    finally:
        _kill(child)
    assert locks.holder(run.path) is None  # the kernel released the lock with the process
    at = tab("alice", "7_runs")
    at.selectbox(key="runs_pick").set_value(run.id).run()
    at.checkbox(key="runs_delete_confirm").check().run()
    at.button(key="runs_delete").click().run()
    assert not at.exception and not run.path.exists()


def _last_pt(run: runs.Run) -> None:
    import torch

    torch.save({"epoch": 1, "model": {"w": torch.zeros(2)}}, run.last_ckpt)


def test_resume_is_offered_as_soon_as_a_killed_trainer_lets_go_of_the_run(alice_ds, shapes_dir):
    from core.data import edits as de

    run = make_run(ALICE, de.root() / alice_ds, status=None, weights=False)
    _last_pt(run)
    child = _trainer_holding(run)
    try:
        at = tab("alice", "4_train", ds=alice_ds, job=run.id)
        assert at.button(key="train_resume").disabled  # another process trains it
        assert "— running" in texts(at)
    finally:
        _kill(child)
    at.run()  # the same session: no server restart in between
    assert not at.exception
    assert not at.button(key="train_resume").disabled
    assert "stopped without finishing" in texts(at)


def test_a_run_that_failed_with_an_intact_checkpoint_can_be_resumed_and_a_damaged_one_cannot(alice_ds):
    from core.data import edits as de

    failed = make_run(ALICE, de.root() / alice_ds, status="failed", weights=False)  # e.g. the disk filled up
    _last_pt(failed)
    at = tab("alice", "4_train", ds=alice_ds, job=failed.id)
    assert not at.button(key="train_resume").disabled
    torn = make_run(ALICE, de.root() / alice_ds, status="failed", weights=False)
    _last_pt(torn)
    torn.last_ckpt.write_bytes(torn.last_ckpt.read_bytes()[:100])  # cut short mid-write
    at = tab("alice", "4_train", ds=alice_ds, job=torn.id)
    assert at.button(key="train_resume").disabled
