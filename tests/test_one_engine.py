"""One loop under every technique: each resumes after SIGKILL to the uninterrupted result, each runs under
torchrun, and DDP learns what one process learns (global batch and schedule kept)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import techniques
from core.config import RunConfig
from core.storage import runs

REPO = Path(__file__).resolve().parent.parent
TECHNIQUES = ("classifier", "distill", "multitask", "simclr")


def _env() -> dict:
    # one thread everywhere: the killed, resumed and uninterrupted runs reduce floats in the same order
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


@pytest.fixture(scope="module")
def parity_csv(tmp_path_factory, digits_dir) -> Path:
    """Digits with a second label column (parity); rows name images inside the CSV's folder."""
    folder = tmp_path_factory.mktemp("engine-mt")
    shutil.copytree(digits_dir, folder / "images")
    rows = [[str(p.relative_to(folder)), p.parent.name, "even" if int(p.parent.name) % 2 == 0 else "odd"]
            for p in sorted((folder / "images").rglob("*.png"))]
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["filename", "digit", "parity"], *rows])
    return folder / "labels.csv"


@pytest.fixture(scope="module")
def teacher(digits_dir) -> str:
    """A finished classifier run on digits, to teach the distillation student."""
    config = RunConfig(data=str(digits_dir), image_size=32, epochs=2, batch_size=32, augment="none", device="cpu",
                       lr=0.01, name="teacher")
    return techniques.fit(config)["run_dir"]


@pytest.fixture
def config_of(digits_dir, parity_csv, teacher):
    """A small config per technique, training more than the head so the body's state must survive too."""
    def make(technique: str, epochs: int = 4) -> RunConfig:
        base = dict(data=str(digits_dir), image_size=32, epochs=epochs, batch_size=32, device="cpu", lr=0.01,
                    trainable="last-1", augment="light", technique=technique, seed=3)
        extra = {"distill": dict(teacher=teacher, augment="none", distill_alpha=0.5),
                 "multitask": dict(data=str(parity_csv)),
                 "simclr": dict(augment="none", sources=[str(digits_dir)], lr=1e-3)}.get(technique, {})
        return RunConfig(**{**base, **extra})
    return make


def _train(run: runs.Run, resume: bool = False, kill_after_epoch: int | None = None) -> subprocess.Popen:
    flag = "--resume" if resume else "--run-dir"
    proc = subprocess.Popen([sys.executable, "-m", "core", "train", flag, str(run.path)], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if kill_after_epoch is None:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        return proc
    deadline = time.time() + 600
    while sum(e["type"] == "epoch" for e in run.events()) < kill_after_epoch:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the run did not reach the epoch to kill it at"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc


def _epochs(run: runs.Run) -> dict[int, dict]:
    seen = [e for e in run.events() if e["type"] == "epoch"]
    numbers = [e["epoch"] for e in seen]
    assert len(numbers) == len(set(numbers)), f"an epoch was trained twice: {numbers}"
    return {e["epoch"]: e for e in seen}


@pytest.mark.slow
@pytest.mark.parametrize("technique", TECHNIQUES)
def test_every_technique_resumes_after_sigkill_to_the_uninterrupted_result(technique, config_of):
    whole, killed = runs.create(config_of(technique)), runs.create(config_of(technique))
    _train(whole)
    _train(killed, kill_after_epoch=2)
    assert killed.status() != "finished" and (killed.path / "last.pt").exists()
    _train(killed, resume=True)
    assert killed.status() == "finished"
    a, b = _epochs(whole), _epochs(killed)
    assert sorted(b) == [1, 2, 3, 4] or (sorted(b)[-1] == 4 and len(b) >= 3)
    for epoch, ev in b.items():
        for key in ("train_loss", "val_loss", "val_acc", "pair_acc", "agreement"):
            if key in ev:
                assert abs(ev[key] - a[epoch][key]) < 1e-4, (technique, epoch, key, ev[key], a[epoch][key])
    ra, rb = whole.result(), killed.result()
    assert ra["best_epoch"] == rb["best_epoch"] and ra["technique"] == technique
    from safetensors.torch import load_file

    best = techniques.get(technique).best_file
    wa, wb = load_file(str(whole.path / best)), load_file(str(killed.path / best))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa) < 1e-4


def _torchrun(args: list[str], timeout: int = 500) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "core",
           "train", *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("technique", ("distill", "multitask", "simclr"))
def test_every_technique_trains_under_torchrun_with_two_gloo_processes(technique, config_of):
    run = runs.create(config_of(technique, epochs=2))
    p = _torchrun(["--run-dir", str(run.path)])
    assert p.returncode == 0, p.stderr[-4000:]
    events = run.events()
    assert next(e for e in events if e["type"] == "distributed")["world_size"] == 2
    assert [e["type"] for e in events].count("start") == 1  # rank 0 alone writes the run
    assert sorted(_epochs(run)) == [1, 2]
    assert run.result()["technique"] == technique
    best = run.path / techniques.get(technique).best_file
    from core.storage import cards

    assert cards.card_kind(cards.read_card(best)) == techniques.get(technique).kind
    if technique != "simclr":
        from core.results import loading

        data = Path(run.config().data)
        image = next((data if data.is_dir() else data.parent).rglob("*.png"))
        assert len(loading.load_model(run.path).predict([str(image)])) == 1


@pytest.mark.slow
def test_two_processes_learn_what_one_learns_head_only_on_digits(tmp_path):
    """The global batch (and so the steps per epoch and the schedule) is kept under DDP: two head-only epochs on
    two processes land within 2 points of one process (the per-process batch once cost 5 points here)."""
    from core.data.datasets import make_sample

    digits = make_sample("digits", tmp_path / "digits", per_class=80)  # 160 validation images: 1 is 0.6 points
    args = ["--data", str(digits), "--image-size", "32", "--epochs", "2", "--batch-size", "32",
            "--trainable", "head", "--augment", "none", "--device", "cpu", "--lr", "0.01", "--out", str(tmp_path)]
    single = subprocess.run([sys.executable, "-m", "core", "train", *args], cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=500)
    assert single.returncode == 0, single.stderr[-3000:]
    double = _torchrun(args)
    assert double.returncode == 0, double.stderr[-3000:]
    one = json.loads(single.stdout.strip().splitlines()[-1])
    two = json.loads([l for l in double.stdout.splitlines() if l.startswith("{")][-1])
    steps = [next(e for e in runs.open_run(r["run_dir"]).events() if e["type"] == "start")["steps_per_epoch"]
             for r in (one, two)]
    assert steps[0] == steps[1]  # the same number of optimizer steps, each on the same global batch size
    assert abs(one["val_accuracy"] - two["val_accuracy"]) <= 0.02, (one["val_accuracy"], two["val_accuracy"])


def test_every_event_a_run_logs_has_a_listed_kind_and_unknown_kinds_are_refused(digits_dir, tiny_config):
    from core.train import events

    run = runs.Run(Path(techniques.fit(tiny_config(digits_dir, epochs=2, trainable="last-1", unfreeze_after=1,
                                                   early_stopping_patience=5))["run_dir"]))
    kinds = [e["type"] for e in run.events()]
    assert set(kinds) <= set(events.KINDS) and {"start", "step", "unfreeze", "epoch", "end"} <= set(kinds)
    with pytest.raises(ValueError, match="unknown event kind 'epoch_end'"):
        events.event("epoch_end", 0.0)


def test_a_second_trainer_on_a_run_is_refused_naming_the_process_that_holds_it(digits_dir, tiny_config):
    from core.storage import locks

    # every layer trains at 32 px: ~1 s an epoch, so the holder is still training when the others try
    run = runs.create(tiny_config(digits_dir, epochs=300, trainable="all", image_size=32))
    _train(run, kill_after_epoch=1)  # a first trainer is killed after one epoch; a resumed one then holds the run
    proc = subprocess.Popen([sys.executable, "-m", "core", "train", "--resume", str(run.path)], cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while locks.holder(run.path) is None:
            assert proc.poll() is None and time.time() < deadline, "the training process did not take the lock"
            time.sleep(0.05)
        with pytest.raises(locks.RunBusy, match=f"process {proc.pid} on host"):
            techniques.fit(run.config(), run=run, resume=True)
        second = subprocess.run([sys.executable, "-m", "core", "train", "--resume", str(run.path)], cwd=REPO,
                                env=_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f"is being trained by process {proc.pid}" in second.stderr
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert locks.holder(run.path) is None  # the kernel let go of a killed trainer's lock
