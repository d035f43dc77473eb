"""JobManager dispatches on config.technique: a multi-task job trains one head per task."""
from __future__ import annotations

import csv
import shutil
import time

import pytest

from core.results import loading
from core.jobs.manager import JobManager


def wait(job, timeout: float = 120) -> str:
    """Block until the job's thread ends; return its status."""
    deadline = time.time() + timeout
    while job.alive and time.time() < deadline:
        time.sleep(0.1)
    assert not job.alive, f"job {job.id} still running after {timeout} s"
    return job.status()


@pytest.fixture(scope="module")
def parity_csv(tmp_path_factory, digits_dir):
    """Digits with a parity column next to the digit: two tasks, every image labelled for both."""
    folder = tmp_path_factory.mktemp("jobs-mt")
    shutil.copytree(digits_dir, folder / "images")  # rows name images inside the CSV's folder (outside is refused)
    rows = []
    for p in sorted((folder / "images").rglob("*.png")):
        d = int(p.parent.name)
        rows.append([str(p.relative_to(folder)), str(d), "even" if d % 2 == 0 else "odd"])
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["filename", "digit", "parity"], *rows])
    return folder / "labels.csv"


def test_multitask_job_finishes_with_a_multitask_export(parity_csv, tiny_config):
    manager = JobManager()
    config = tiny_config(parity_csv, technique="multitask", tasks=["digit", "parity"], task_weights=[1.0, 0.5])
    job = manager.start(config)
    assert wait(job) == "finished", job.error
    assert job.result["technique"] == "multitask"
    assert loading.read_card(job.run.path)["kind"] == "multitask"
    loaded = loading.load_model(job.run.path)
    assert loaded.tasks == {"digit": [str(d) for d in range(10)], "parity": ["even", "odd"]}
    epochs = [e for e in job.snapshot()["events"] if e["type"] == "epoch"]
    assert len(epochs) == 1 and set(epochs[0]["tasks"]) == {"digit", "parity"}


def test_unknown_technique_is_refused_before_any_run_starts(digits_dir, tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path))
    manager = JobManager()
    with pytest.raises(ValueError, match=r"technique must be one of classifier, distill, .*text_pretrain; got 'mixup'"):
        manager.start(tiny_config(digits_dir, technique="mixup"))
    assert manager.list() == [] and not list(tmp_path.glob("runs/*"))


def test_a_simclr_job_runs_in_its_own_process_and_logs_its_own_metrics(digits_dir, tiny_config):
    """A technique whose epochs log other metrics (pair accuracy, no validation) trains in a job process too."""
    job = JobManager(mode="process").start(tiny_config(digits_dir, batch_size=32, image_size=32, trainable="all",
                                                       technique="simclr", sources=[str(digits_dir)]))
    assert wait(job, timeout=300) == "finished", job.error
    (epoch,) = [e for e in job.snapshot()["events"] if e["type"] == "epoch"]
    assert "pair_acc" in epoch and "val_acc" not in epoch
    assert "pair_acc" in (job.run.path / "worker.log").read_text()  # the child's progress line shows them
