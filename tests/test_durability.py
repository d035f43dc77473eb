"""Durability: checkpoints survive a killed writer; an interrupted run resumes to the same result."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from core.storage import runs
from core.techniques import fit
from core.train.control import Control

REPO = Path(__file__).resolve().parents[1]

# Saves checkpoints in a loop, as fast as it can: each one is a 2 MB tensor filled with its own
# generation number plus the number in a scalar, so a torn or mixed file is detectable.
_WRITER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from core.storage import runs
    target = Path(sys.argv[1])
    i = 0
    while True:
        i += 1
        state = {"i": i, "data": torch.full((512, 1024), float(i)), "tail": torch.tensor([i])}
        runs.atomic_save(target, lambda tmp: torch.save(state, tmp))
        runs.atomic_write_bytes(target.with_suffix(".bin"), bytes([i % 256]) * 300_000)
        print(i, flush=True)
""")


def test_killing_a_writer_mid_save_never_leaves_a_corrupt_checkpoint(tmp_path):
    target = tmp_path / "last.pt"
    rng = random.Random(1234)
    generations = []
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], cwd=REPO, stdout=subprocess.PIPE,
                                text=True)
        try:
            first = proc.stdout.readline()  # at least one complete checkpoint exists from here on
            assert first.strip(), "the writer did not start"
            time.sleep(rng.uniform(0.0, 0.4))  # land somewhere inside a later save
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        state = torch.load(target, map_location="cpu", weights_only=True)
        i = state["i"]
        assert int(state["tail"]) == i and state["data"].shape == (512, 1024)
        assert bool((state["data"] == float(i)).all())
        blob = target.with_suffix(".bin").read_bytes()
        assert len(blob) == 300_000 and len(set(blob)) == 1
        generations.append(i)
    # the kills really landed after several saves, not before the first one
    assert max(generations) > 1


def _epochs(run_dir) -> list[dict]:
    return [e for e in runs.Run(Path(run_dir)).events() if e["type"] == "epoch"]


def test_resumed_run_matches_an_uninterrupted_one(digits_dir, tiny_config):
    # augmentation on, so the RNG state (global and the loader's) must be restored for the match
    make = lambda: tiny_config(digits_dir, epochs=3, augment="light", num_workers=0, seed=7)
    whole = fit(make())

    control = Control()

    def stop_after_epoch_2(ev):
        if ev["type"] == "epoch" and ev["epoch"] == 2:
            control.stop()
    config = make()
    run = runs.create(config)
    first = fit(config, stop_after_epoch_2, control, run=run)
    assert first["status"] == "stopped" and run.status() == "stopped"
    assert torch.load(run.last_ckpt, map_location="cpu", weights_only=True)["epoch"] == 2

    resumed = fit(run.config(), run=run, resume=True)
    assert resumed["status"] == "finished"
    a, b = _epochs(whole["run_dir"]), _epochs(run.path)
    assert [e["epoch"] for e in b] == [1, 2, 3]  # the resumed part added epoch 3 only
    assert b[2]["train_loss"] == pytest.approx(a[2]["train_loss"], abs=1e-4)
    assert b[2]["val_loss"] == pytest.approx(a[2]["val_loss"], abs=1e-4)
    assert b[2]["val_acc"] == pytest.approx(a[2]["val_acc"], abs=1e-4)
    assert resumed["val_accuracy"] == pytest.approx(whole["val_accuracy"], abs=1e-4)
    events = runs.Run(run.path).events()
    assert any(e["type"] == "resumed" and e["epoch"] == 2 for e in events)
    starts = [e for e in events if e["type"] == "start"]
    assert starts[-1]["resumed"] and starts[-1]["dataset_hash"] == starts[0]["dataset_hash"] is not None


def test_killed_cli_run_shows_interrupted_and_resumes_from_the_cli(digits_dir, tmp_path):
    env = {**os.environ, "TRANSFER_STUDIO_HOME": str(tmp_path / "home")}
    args = [sys.executable, "-m", "core", "train", "--data", str(digits_dir), "--image-size", "64", "--epochs", "30",
            "--augment", "light", "--device", "cpu", "--batch-size", "16", "--lr", "0.01"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        last = None
        while time.time() < deadline and last is None:
            found = list((tmp_path / "home" / "runs").glob("*/last.pt")) if (tmp_path / "home" / "runs").exists() else []
            last = found[0] if found else None
            time.sleep(0.2)
        assert last is not None, "no epoch finished in time"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = runs.Run(last.parent)
    assert run.status() == "interrupted"
    done = torch.load(run.last_ckpt, map_location="cpu", weights_only=True)["epoch"]
    assert done < 30
    # shorten the rest: the resumed run continues the same config, so edit its epochs on disk first
    cfg = json.loads((run.path / "config.json").read_text())
    cfg["epochs"] = done + 1
    runs.atomic_write_text(run.path / "config.json", json.dumps(cfg))
    (run.path / ".last.pt.torn.tmp").write_bytes(b"half a checkpoint")  # what a kill mid-save leaves behind
    p = subprocess.run([sys.executable, "-m", "core", "train", "--resume", str(run.path)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished" and result["run_dir"] == str(run.path)
    assert [e["epoch"] for e in _epochs(run.path)][-1] == done + 1
    assert any(e["type"] == "resumed" and e["epoch"] == done for e in run.events())
    assert run.status() == "finished"
    assert not list(run.path.glob(".*.tmp"))


# The CLI with every best after the first held back as "pending" (what happens when epochs take
# milliseconds), so the kill surely lands while last.pt holds a better epoch than best.safetensors.
_HOLD_BEST = textwrap.dedent("""
    import sys
    from core import cli
    from core.train import checkpoints
    checkpoints.BestWriter.spacing = float("inf")
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_hard_kill_with_a_pending_best_loses_nothing(digits_dir, tmp_path):
    from core.results.loading import load_model, read_card
    from safetensors.torch import load_file

    home = tmp_path / "home"
    env = {**os.environ, "TRANSFER_STUDIO_HOME": str(home)}
    args = [sys.executable, "-c", _HOLD_BEST, "train", "--data", str(digits_dir), "--image-size", "32",
            "--epochs", "5000", "--trainable", "head", "--augment", "none", "--device", "cpu", "--batch-size", "16",
            "--lr", "0.003", "--scheduler", "constant", "--early-stopping-metric", "val_loss"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and run is None:
            for log in (home / "runs").glob("*/events.jsonl") if (home / "runs").exists() else []:
                improved = sum(1 for e in runs.Run(log.parent).events() if e["type"] == "epoch" and e["best"])
                if improved >= 3 and (log.parent / "best.safetensors").exists():  # the first best is written
                    run = runs.Run(log.parent)
            time.sleep(0.05)
        assert run is not None, "three improving epochs were not logged in time"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert run.status() == "interrupted"
    ck = torch.load(run.last_ckpt, map_location="cpu", weights_only=True)
    best_epoch, done = ck["best_epoch"], ck["epoch"]
    assert 3 <= best_epoch <= done < 5000
    # best.safetensors is a complete, loadable model (the first best) ...
    assert read_card(run.path)["metrics"]["epoch"] < best_epoch
    assert load_model(run.path).classes == [str(i) for i in range(10)]
    # ... and the best of the completed epochs is in last.pt, not lost
    pending = ck["best_pending"]
    assert pending and json.loads(ck["best_metrics"])["epoch"] == best_epoch

    seen = {}

    def on_event(ev):  # resuming writes the pending best before training anything
        if ev["type"] == "start":
            seen["card"] = read_card(run.path)
            seen["weights"] = load_file(str(run.best_weights))
    cfg = json.loads((run.path / "config.json").read_text())
    cfg["epochs"] = done + 1
    runs.atomic_write_text(run.path / "config.json", json.dumps(cfg))
    result = fit(run.config(), on_event, run=run, resume=True)
    assert seen["card"]["metrics"]["epoch"] == best_epoch
    for k, v in pending.items():
        assert torch.equal(seen["weights"][k], v), k
    assert result["status"] == "finished"
    assert read_card(run.path)["metrics"]["epoch"] == result["best_epoch"] >= best_epoch
