"""DDP under torchrun on CPU (gloo, 2 processes) and the app-side supervisor of a torchrun job."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.train import ddp
from core.jobs import supervisor

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("n", [0, 1, 5, 24, 25])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_sampler_splits_without_padding(n, world):
    shards = [list(ddp.ShardSampler(n, r, world)) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n))          # together they cover the data ...
    assert len(flat) == len(set(flat))             # ... and no index is seen twice
    assert [len(ddp.ShardSampler(n, r, world)) for r in range(world)] == [len(s) for s in shards]


def test_command_and_outside_torchrun():
    assert not ddp.launched()
    assert isinstance(ddp.context(), ddp.Single)
    cmd = supervisor.command("/x/run", 3)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=3" in cmd and cmd[-2:] == ["--run-dir", "/x/run"]
    assert supervisor.command("/x/run", 2, resume=True)[-2:] == ["--resume", "/x/run"]
    with pytest.raises(ValueError, match="nproc must be an integer >= 1"):
        supervisor.command("/x/run", 0)


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
    return env


def test_torchrun_two_ranks_matches_single_process_evaluation(digits_dir, tmp_path):
    from core.data import datasets
    from core.results import loading
    from core.results import metrics
    from core.storage import runs

    shards = tmp_path / "shards"
    out = tmp_path / "ws"
    # last-1 + light augmentation: the whole model goes through DDP and BatchNorm statistics change,
    # which is the hard case for "validation on every rank equals the saved model's".
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "core", "train",
           "--data", str(digits_dir), "--backbone", "efficientnet_lite0", "--image-size", "64", "--epochs", "1",
           "--batch-size", "16", "--trainable", "last-1", "--augment", "light", "--device", "cpu", "--lr", "0.01",
           "--preset", "custom", "--out", str(out)]  # custom: the saved model is epoch 1's (no probe "epoch 0")
    p = subprocess.run(cmd, cwd=REPO, env=_env(**{ddp.DEBUG_SHARDS_ENV: str(shards)}), capture_output=True,
                       text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-4000:]
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1, p.stdout  # only rank 0 prints its result
    result = lines[0]
    assert result["status"] == "finished"
    run = runs.open_run(result["run_dir"])
    split = datasets.Split.from_dict(json.loads((run.path / "split.json").read_text()))

    # the ranks saw disjoint shards that together cover the data
    logs = {r: [json.loads(l) for l in (shards / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}
    train = {r: next(row for row in logs[r] if row["kind"] == "train" and row["epoch"] == 0)["indices"] for r in (0, 1)}
    val = {r: next(row for row in logs[r] if row["kind"] == "val" and not row["features"])["indices"] for r in (0, 1)}
    assert len(split.train) % 2 == 0  # so DistributedSampler needs no padding and the train shards are disjoint
    assert not set(train[0]) & set(train[1]) and sorted(train[0] + train[1]) == list(range(len(split.train)))
    assert not set(val[0]) & set(val[1]) and sorted(val[0] + val[1]) == list(range(len(split.val)))

    # rank 0 alone wrote the run: one start event, a distributed event naming the world size
    events = run.events()
    assert [e["type"] for e in events].count("start") == 1
    assert next(e for e in events if e["type"] == "distributed")["world_size"] == 2
    val_acc = next(e for e in events if e["type"] == "epoch")["val_acc"]

    # the checkpoint loads with the ordinary loader ...
    model = loading.load_model(run.path)
    assert model.classes == split.classes
    assert model.predict([split.val[0][0]])[0]["label"] in split.classes
    # ... and single-process evaluation on the full validation set gives the all-reduced accuracy exactly
    rep = metrics.evaluate_run(run.path, refresh=True)
    assert len(rep["items"]) == len(split.val)
    assert rep["accuracy"] == val_acc
    correct = sum(it["pred"] == it["label"] for it in rep["items"])
    assert round(val_acc * len(split.val), 9) == correct


def test_subprocess_job_feeds_snapshot_and_stop_ends_every_process(digits_dir, tiny_config):
    from core.results import metrics
    from core.storage import runs

    config = tiny_config(digits_dir, epochs=400)  # head-only on cached features: many quick epochs
    run = runs.create(config)
    job = supervisor.SubprocessJob(config, run, nproc=2, grace_s=60).start()
    deadline = time.time() + 400
    pids: set[int] = set()
    while time.time() < deadline and job.alive:
        snap = job.snapshot()
        pids |= set(snap["pids"])
        if any(e["type"] == "epoch" for e in snap["events"]):
            break
        time.sleep(0.2)
    snap = job.snapshot()
    assert job.alive, (snap["error"], snap["traceback"])
    assert snap["status"] == "running"
    assert any(e["type"] == "epoch" for e in snap["events"])
    assert snap["last_step"] is not None and snap["run_dir"] == str(run.path)
    pids |= set(job.pids())
    assert len(pids) >= 3, pids  # the torchrun agent and two workers

    job.pause()
    assert job.status() == "paused"
    job.resume()
    assert job.status() == "running"

    job.stop()
    job.thread.join(timeout=200)
    assert not job.alive
    snap = job.snapshot()
    assert snap["status"] == "stopped", (snap["error"], snap["traceback"])
    ends = [e for e in snap["events"] if e["type"] == "end"]
    assert len(ends) == 1 and ends[0]["status"] == "stopped"
    assert sum(e["type"] == "epoch" for e in snap["events"]) < 400
    assert not [p for p in pids if supervisor.alive(p)], "processes outlived the stopped job"
    assert run.best_weights.exists()  # the best checkpoint so far is kept
    # cached features were embedded on shards and all-gathered: the saved head still matches validation
    assert next(e for e in snap["events"] if e["type"] == "start")["cached_features"]
    best = [e for e in snap["events"] if e["type"] == "epoch" and e["best"]][-1]
    assert metrics.evaluate_run(run.path, refresh=True)["accuracy"] == best["val_acc"]
    assert not (run.path / supervisor.STOP_FILE).exists()  # a later resume must not stop at once


def test_submit_queues_in_job_manager_and_stop_before_start_launches_nothing(digits_dir, tiny_config):
    from core.jobs.manager import JobManager

    manager = JobManager(max_running=0)  # nothing may start: the job waits in the queue
    job = supervisor.submit(manager, tiny_config(digits_dir), nproc=2)
    assert manager.get(job.id) is job and manager.list() == [job]
    assert manager.queue_position(job.id) == 1 and job.snapshot()["status"] == "queued"
    job.stop()
    assert job.status() == "stopped" and job.proc is None and job.pids() == []
