"""The job registry: a configurable limit queues further jobs; owners only see their own jobs."""
from __future__ import annotations

import time

import pytest

from core.jobs import JobManager


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
