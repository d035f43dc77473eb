"""The training engine: events and checkpoints, freezing, cached features, faults, controls, unfreezing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from core.models import backbones
from core.models import freezing
from core.storage import runs
from core.train import feed, loop
from core.techniques import fit
from core.train.control import Control, TrainingDiverged

REPO = Path(__file__).resolve().parents[1]


def _events(run_dir) -> list[dict]:
    return runs.Run(Path(run_dir)).events()


@pytest.fixture
def captured_models(monkeypatch):
    """Every model fit() builds, with a copy of its initial state (to compare after training)."""
    built = []
    real = backbones.build_model

    def spy(*a, **kw):
        m = real(*a, **kw)
        built.append((m, {k: v.clone() for k, v in m.state_dict().items()}))
        return m
    monkeypatch.setattr(backbones, "build_model", spy)
    return built


def test_head_only_run_writes_events_and_checkpoints(digits_dir, tiny_config):
    result = fit(tiny_config(digits_dir))
    run = runs.Run(Path(result["run_dir"]))
    types = [e["type"] for e in run.events()]
    for kind in ("start", "step", "epoch", "end"):
        assert kind in types, f"no {kind} event in {types}"
    assert types[-1] == "end" and run.status() == "finished"
    start = next(e for e in run.events() if e["type"] == "start")
    assert start["cached_features"] is True and start["trainable_groups"] == ["head"]
    steps = [e for e in run.events() if e["type"] == "step"]
    assert len(steps) == start["steps_per_epoch"] == -(-start["n_train"] // 16)
    # reproducibility: versions, device and the dataset's content hash are on record
    assert start["versions"]["torch"] == torch.__version__ and start["environment"]["numpy"]
    assert start["device"] == "cpu" and len(start["dataset_hash"]) >= 8
    assert json.loads((run.path / "split.json").read_text())["content_hash"] == start["dataset_hash"]
    ck = torch.load(run.last_ckpt, map_location="cpu", weights_only=True)
    assert ck["epoch"] == 1 and ck["step"] == len(steps)
    # the frozen body is rebuilt from its weights on resume, so the resume state holds the head only
    assert ck["model"] and all(k.startswith("head.") for k in ck["model"])
    from core.results.loading import load_model

    loaded = load_model(run.path)
    assert loaded.card["metrics"]["val_accuracy"] == pytest.approx(result["val_accuracy"])
    assert loaded.classes == [str(i) for i in range(10)]


def test_frozen_groups_keep_eval_batchnorm_and_identical_weights(digits_dir, tiny_config, captured_models):
    modes = {}

    def on_event(ev):
        if ev["type"] == "step" and not modes:
            model = captured_models[0][0]
            for g in ("stage1", "neck"):
                bns = [m for m in backbones.modules_in("efficientnet_lite0", model, g)
                       if isinstance(m, torch.nn.BatchNorm2d)]
                assert bns, f"group {g} has no BatchNorm to check"
                modes[g] = {m.training for m in bns}
    fit(tiny_config(digits_dir, trainable="last-1", cache_features=False), on_event)
    assert modes == {"stage1": {False}, "neck": {True}}
    model, before = captured_models[0]
    after = model.state_dict()
    by_group = backbones.param_groups_of("efficientnet_lite0", model)
    frozen = [n for g, ps in by_group.items() if g not in ("neck", "head") for n, _ in ps]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    # running statistics of frozen BatchNorm layers must not move either
    paths = [path for g, ps in backbones.group_modules("efficientnet_lite0").items() if g not in ("neck", "head")
             for path in ps]
    stats = [k for k in before if "running_mean" in k and any(k.startswith(path + ".") for path in paths)]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert not torch.equal(before["head.weight"], after["head.weight"])
    neck = [n for n, _ in by_group["neck"]]
    assert any(not torch.equal(before[n], after[n]) for n in neck)


def test_cached_features_match_recomputing_the_backbone(digits_dir, tiny_config):
    fast = fit(tiny_config(digits_dir, epochs=2))
    slow = fit(tiny_config(digits_dir, epochs=2, cache_features=False))
    ev_fast = [e for e in _events(fast["run_dir"]) if e["type"] == "epoch"]
    ev_slow = [e for e in _events(slow["run_dir"]) if e["type"] == "epoch"]
    assert next(e for e in _events(fast["run_dir"]) if e["type"] == "start")["cached_features"] is True
    assert next(e for e in _events(slow["run_dir"]) if e["type"] == "start")["cached_features"] is False
    for a, b in zip(ev_fast, ev_slow, strict=True):
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)


def test_nan_loss_stops_naming_the_step_and_keeps_best(digits_dir, tiny_config, monkeypatch):
    real = torch.nn.CrossEntropyLoss.forward
    calls = {"n": 0}

    def poisoned(self, logits, y):
        calls["n"] += 1
        loss = real(self, logits, y)
        return loss * float("nan") if calls["n"] == 9 else loss
    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", poisoned)
    events = []
    config = tiny_config(digits_dir, epochs=2)
    run = runs.create(config)
    with pytest.raises(TrainingDiverged) as info:
        fit(config, events.append, run=run)
    msg = str(info.value)
    assert "step 9" in msg and "epoch 2" in msg and "lower the learning rate" in msg
    end = events[-1]
    assert end["type"] == "end" and end["status"] == "failed" and end["reason"] == "diverged"
    assert "step 9" in end["message"] and "traceback" not in end
    assert run.status() == "failed"
    from core.results.loading import read_card

    assert read_card(run.path)["metrics"]["epoch"] == 1  # epoch 1's best checkpoint survives


def test_pause_blocks_steps_and_stop_ends_the_run(digits_dir, tiny_config):
    control = Control()
    seen_while_paused = []
    steps = []

    def resume_later():
        # runs in another thread: the worker must not make progress while paused
        threading.Event().wait(0.6)
        seen_while_paused.append(len(steps))
        control.resume()

    def on_event(ev):
        if ev["type"] != "step":
            return
        steps.append(ev["step"])
        if ev["step"] == 2:
            control.pause()
            threading.Thread(target=resume_later).start()
        if ev["step"] == 4:
            threading.Thread(target=control.stop).start()
            threading.Event().wait(0.3)
    result = fit(tiny_config(digits_dir, epochs=3, cache_features=False), on_event, control)
    assert seen_while_paused == [2]
    assert result["status"] == "stopped"
    assert steps[:4] == [1, 2, 3, 4] and len(steps) <= 5
    run = runs.Run(Path(result["run_dir"]))
    assert run.status() == "stopped" and run.events()[-1]["status"] == "stopped"


def test_early_stopping_restores_the_best_epoch(digits_dir, tiny_config):
    # val_loss must fall by 10 to count: only epoch 1 (first score) improves, so patience 1 stops after epoch 2
    result = fit(tiny_config(digits_dir, epochs=4, early_stopping_metric="val_loss", early_stopping_patience=1,
                             early_stopping_min_delta=10.0))
    ev = _events(result["run_dir"])
    epochs = [e for e in ev if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert any(e["type"] == "early_stop" and e["best_epoch"] == 1 for e in ev)
    assert any(e["type"] == "restored_best" and e["epoch"] == 1 for e in ev)
    assert result["best_epoch"] == 1 and result["epochs_run"] == 2
    assert epochs[0]["val_loss"] != pytest.approx(epochs[1]["val_loss"], abs=1e-6)
    assert result["val_loss"] == pytest.approx(epochs[0]["val_loss"])
    # the exported model is epoch 1's: evaluating it reproduces epoch 1's validation loss, not epoch 2's
    from core.data.datasets import CachedDataset, ImageCache, Split, eval_transform
    from core.results.loading import load_model

    loaded = load_model(result["run_dir"])
    split = Split.from_dict(json.loads((Path(result["run_dir"]) / "split.json").read_text()))
    pre = loaded.preprocessing
    ds = CachedDataset(split.val, ImageCache([p for p, _ in split.train + split.val], pre), eval_transform(pre))
    fwd = loop._Forward(loaded.model, pre, torch.device("cpu"), None, False, False)
    got = feed.evaluate(fwd, torch.utils.data.DataLoader(ds, batch_size=64), criterion=torch.nn.CrossEntropyLoss())
    assert got["loss"] == pytest.approx(epochs[0]["val_loss"], abs=1e-4)
    assert got["acc"] == pytest.approx(epochs[0]["val_acc"], abs=1e-6)


def test_out_of_memory_halves_the_chunk_and_continues(digits_dir, tiny_config, monkeypatch):
    monkeypatch.setattr(loop, "TRAIN_PIXELS", 10 ** 9)  # whole batches on this CPU, as on a GPU
    plain = fit(tiny_config(digits_dir, cache_features=False))
    real = backbones.TransferNet.forward
    raised = []

    def flaky(self, x):
        if self.training and len(x) > 8 and not raised:
            raised.append(len(x))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, x)
    monkeypatch.setattr(backbones.TransferNet, "forward", flaky)
    events = []
    result = fit(tiny_config(digits_dir, cache_features=False), events.append)
    assert raised == [16] and result["status"] == "finished"
    warnings = [e for e in events if e["type"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["batch_size"] == 8 and "out of GPU memory" in warnings[0]["message"]
    steps = [e for e in events if e["type"] == "step"]
    assert len(steps) == len([e for e in _events(plain["run_dir"]) if e["type"] == "step"])
    # gradients are accumulated over the halves, so training follows the same path as without the fault
    assert result["val_loss"] == pytest.approx(plain["val_loss"], abs=1e-4)


def _training_batch_sizes(monkeypatch) -> list[int]:
    real, sizes = backbones.TransferNet.forward, []

    def spy(self, x):
        if torch.is_grad_enabled():
            sizes.append(len(x))
        return real(self, x)
    monkeypatch.setattr(backbones.TransferNet, "forward", spy)
    return sizes


def test_cpu_steps_go_through_in_chunks_when_no_batchnorm_learns(digits_dir, tiny_config, monkeypatch):
    # last-2 with body_eval: BatchNorm keeps its pretrained statistics, so a chunk's loss does not depend on the
    # rest of the batch and accumulating the chunks' gradients is the same step
    config = tiny_config(digits_dir, trainable="last-2", body_eval=True, cache_features=False, lr=1e-3, seed=3)
    whole_sizes = _training_batch_sizes(monkeypatch)
    whole = fit(config)  # 64 px: a whole batch of 16 is within the chunk's pixel budget
    monkeypatch.undo()
    monkeypatch.setattr(loop, "TRAIN_PIXELS", 6 * 64 * 64)
    chunk_sizes = _training_batch_sizes(monkeypatch)
    chunked = fit(config)
    assert set(whole_sizes) == {16}  # the short last batch is dropped
    assert set(chunk_sizes) == {6, 4}  # 16 = 6 + 6 + 4
    assert sum(chunk_sizes) == sum(whole_sizes)
    assert chunked["val_loss"] == pytest.approx(whole["val_loss"], abs=1e-4)


def test_cpu_steps_keep_whole_batches_when_batchnorm_learns(digits_dir, tiny_config, monkeypatch):
    # without body_eval the learning layers' BatchNorm normalises with the batch's statistics: chunks would change them
    monkeypatch.setattr(loop, "TRAIN_PIXELS", 6 * 64 * 64)
    sizes = _training_batch_sizes(monkeypatch)
    fit(tiny_config(digits_dir, trainable="last-2", body_eval=False, cache_features=False, lr=1e-3))
    assert max(sizes) == 16


def test_weight_mixes_replace_the_fine_tuned_weights_only_when_they_score_higher():
    from core.train import wise

    start = {"w": torch.zeros(3), "n": torch.tensor(0)}
    end = {"w": torch.ones(3), "n": torch.tensor(7)}
    half = wise.mix(start, end, 0.5)
    assert torch.allclose(half["w"], torch.full((3,), 0.5)) and half["n"].item() == 7  # counters are not averaged

    def scorer(scores):
        return lambda state: (scores[round(state["w"][0].item(), 2)], {"val_acc": scores[round(state["w"][0].item(), 2)]})
    share, won, tried = wise.choose(scorer({0.25: 0.7, 0.5: 0.9, 0.75: 0.8}), start, end, best_score=0.85)
    assert share == 0.5 and won == {"val_acc": 0.9} and [t["share"] for t in tried] == [0.25, 0.5, 0.75]
    share, won, _ = wise.choose(scorer({0.25: 0.7, 0.5: 0.85, 0.75: 0.8}), start, end, best_score=0.85)
    assert share == 1.0 and won is None  # a tie keeps the fine-tuned weights, as a tied epoch keeps the best
    share, _, _ = wise.choose(scorer({0.25: 0.9, 0.5: 0.9, 0.75: 0.8}), start, end, best_score=0.85)
    assert share == 0.25  # of equal mixes, the one closest to the start


@pytest.mark.parametrize("mix_wins", [False, True])
def test_a_wise_ft_run_keeps_the_mix_it_reports_or_its_fine_tuned_weights(digits_dir, tiny_config, monkeypatch,
                                                                          mix_wins):
    from core.results import loading
    from core.train import wise

    if mix_wins:  # a tiny run's mixes rarely beat its epoch: let any mix win, so the kept-mix path is exercised
        real = wise.choose
        monkeypatch.setattr(wise, "choose", lambda score_of, start, end, best_score, min_delta=0.0:
                            real(score_of, start, end, float("-inf"), min_delta))
    # probe_init off: epoch 1 beats the untrained start head, so the mixes are validated
    config = tiny_config(digits_dir, trainable="last-2", body_eval=True, cache_features=False, lr=1e-3,
                         wise_ft=True)
    events: list[dict] = []
    res = fit(config, events.append)
    mixed = [e for e in events if e["type"] == "weight_average"]
    assert len(mixed) == 1 and [t["share"] for t in mixed[0]["tried"]] == list(wise.SHARES)
    share, epoch_acc = mixed[0]["share"], [e for e in events if e["type"] == "epoch"][0]["val_acc"]
    run = runs.open_run(res["run_dir"])
    start, tuned = wise.load_start(run), torch.load(run.last_ckpt, weights_only=True)["model"]
    assert set(start) == set(tuned) and not all(torch.equal(start[k], tuned[k]) for k in start)
    kept = loading.load_model(res["run_dir"]).model.state_dict()
    expected = wise.mix(start, tuned, share)
    assert all(torch.allclose(kept[k], expected[k], atol=1e-6) for k in expected)
    scores = {t["share"]: t["val_acc"] for t in mixed[0]["tried"]}
    assert res["val_accuracy"] == pytest.approx(scores[share] if share < 1 else epoch_acc)
    assert mix_wins or (share < 1) == (max(scores.values()) > epoch_acc)
    assert not mix_wins or (share < 1 and scores[share] == max(scores.values()))


def test_discriminative_learning_rates_per_group():
    model = backbones.build_model("efficientnet_lite0", 3, pretrained=False)
    target = freezing.plan("efficientnet_lite0", "last-2")
    groups = freezing.param_groups(model, "efficientnet_lite0", target, lr=0.01, decay=0.5)
    from core.config import RunConfig

    opt = loop.make_optimizer(RunConfig(lr=0.01), groups)
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [
        ("head", 0.01), ("neck", pytest.approx(0.005)), ("stage5", pytest.approx(0.0025))]


def test_gradual_unfreezing_marks_events_and_keeps_frozen_groups_still(digits_dir, tiny_config, captured_models):
    snapshots = {}

    def on_event(ev):
        if ev["type"] == "unfreeze":
            model = captured_models[0][0]
            snapshots[ev["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(tiny_config(digits_dir, epochs=3, trainable="last-2", unfreeze_after=1, unfreeze_mode="gradual",
                             lr_decay=0.5, scheduler="constant"), on_event)
    ev = _events(result["run_dir"])
    start = next(e for e in ev if e["type"] == "start")
    assert start["cached_features"] is True and start["active_groups"] == ["head"]
    unf = [e for e in ev if e["type"] == "unfreeze"]
    spe = start["steps_per_epoch"]
    assert [(e["epoch"], e["step"], e["groups"]) for e in unf] == [(2, spe, ["neck"]), (3, 2 * spe, ["stage5"])]
    epochs = [e for e in ev if e["type"] == "epoch"]
    assert epochs[0]["lrs"] == {"head": 0.01}
    assert epochs[2]["lrs"] == {"head": 0.01, "neck": pytest.approx(0.0005), "stage5": pytest.approx(0.00025)}
    _, initial = captured_models[0]
    by_group = backbones.param_groups_of("efficientnet_lite0", captured_models[0][0])
    neck = [n for n, _ in by_group["neck"]]
    stage5 = [n for n, _ in by_group["stage5"]]
    assert all(torch.equal(initial[n], snapshots[2][n]) for n in neck + stage5)  # head-only epoch 1
    assert any(not torch.equal(initial[n], snapshots[3][n]) for n in neck)      # neck learned in epoch 2
    assert all(torch.equal(initial[n], snapshots[3][n]) for n in stage5)        # stage5 not yet


def test_unfreeze_settings_are_validated(tiny_config):
    with pytest.raises(ValueError, match="trainable is 'head'"):
        tiny_config("x", epochs=3, unfreeze_after=1).validate()
    with pytest.raises(ValueError, match="unfreeze_mode must be one of all, gradual"):
        tiny_config("x", epochs=3, trainable="all", unfreeze_after=1, unfreeze_mode="sometimes").validate()
    with pytest.raises(ValueError, match="0..epochs-1"):
        tiny_config("x", epochs=2, trainable="all", unfreeze_after=2).validate()
    with pytest.raises(ValueError, match="early_stopping_metric must be one of val_acc, val_loss"):
        tiny_config("x", early_stopping_metric="f1").validate()


def _cli(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})


def test_cli_train_prints_json_last_and_rejects_bad_input(digits_dir):
    p = _cli("train", "--data", str(digits_dir), "--image-size", "64", "--epochs", "1", "--augment", "none",
             "--device", "cpu", "--batch-size", "16")
    assert p.returncode == 0, p.stderr
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert 0 <= last["val_accuracy"] <= 1 and (Path(last["run_dir"]) / "best.safetensors").exists()
    bad = _cli("train", "--data", str(digits_dir), "--backbone", "nope_net")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: backbone must be one of") and "nope_net" in lines[0]
    missing = _cli("train", "--data", str(digits_dir / "no-such-folder"), "--device", "cpu")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset") and "does not exist" in lines[0]


def test_step_and_epoch_events_report_the_rate_each_step_ran_with(digits_dir, tiny_config):
    """One-cycle from max_lr/25 up to max_lr and down to ~0: the first step runs at the start rate, the last at
    the end of the cycle; reading the rate after the scheduler moved it would report the next step's rate (and,
    after the last step, a rate past the cycle's end that no step used)."""
    result = fit(tiny_config(digits_dir, epochs=3, scheduler="onecycle", lr=0.01))
    ev = _events(result["run_dir"])
    steps = [e["lr"] for e in ev if e["type"] == "step"]
    assert steps[0] == pytest.approx(0.01 / 25)
    peak = steps.index(max(steps))
    assert all(a >= b for a, b in zip(steps[peak:], steps[peak + 1:]))  # down to the end, never back up
    assert steps[-1] == min(steps) < 1e-6
    epochs = [e for e in ev if e["type"] == "epoch"]
    assert epochs[-1]["lr"] == steps[-1] and epochs[-1]["lrs"]["head"] == steps[-1]
