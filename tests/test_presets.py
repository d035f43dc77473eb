"""Presets (core.train.presets): choices with reasons, the budget, overrides, and the stronger bundled bodies."""
from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_ship_imagenet_weights_that_name_the_sample_photos(name):
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from torchvision.models import get_model_weights

    from core.data.datasets import preprocess_images
    from core.models import backbones

    categories = get_model_weights("resnet18").DEFAULT.meta["categories"]
    assert backbones.weights_status(name) == "bundled"
    model = backbones.build_model(name, num_classes=None, pretrained=True).eval()
    sample = load_sample_images()
    x = preprocess_images([Image.fromarray(a) for a in sample.images], backbones.get(name).preprocessing)
    with torch.no_grad():
        top1 = [categories[i] for i in model(x).argmax(1).tolist()]
    assert top1[0] == "palace"  # china.jpg (flower.jpg is a hard close-up: even Lite0 gives daisy only 0.11-0.33)
    random = backbones.build_model(name, num_classes=None, pretrained=False).eval()
    with torch.no_grad():
        assert categories[random(x).argmax(1).tolist()[0]] != "palace"


def test_small_images_are_not_upsampled_to_224_and_large_ones_are_capped():
    from core.train import presets

    assert presets.suggest_image_size([8, 8, 8])[0] == 64
    assert presets.suggest_image_size([100, 90, 120])[0] == 128
    assert presets.suggest_image_size([480, 640, 500])[0] == 224
    assert presets.suggest_image_size([480, 640], native=260)[0] == 260


def test_suggestions_keep_the_layer_thresholds_and_give_a_reason_for_each_choice():
    from core.train import presets

    few, some, many = ({"a": 5, "b": 400}, {"a": 100, "b": 400}, {"a": 1000, "b": 4000})
    assert [presets.suggest(c)["trainable"] for c in (few, some, many)] == ["head", "last-2", "all"]
    s = presets.suggest(some, [64] * 10)
    assert s["image_size"] == 64 and s["epochs"] >= 1
    assert all(s[k] for k in ("reason", "image_size_reason", "epochs_reason", "augment_reason"))


def test_every_preset_plans_a_valid_config_with_a_reason_per_choice(digits_dir):
    from core.config import RunConfig
    from core.models import backbones
    from core.train import presets

    for name in presets.PRESETS:
        p = presets.plan(digits_dir, name, device="cpu")
        config = backbones.check(RunConfig(data=str(digits_dir), **p.fields).validate())
        assert config.preset == name and config.probe_init
        # the digits are 64-px images: upsampled to the native size when this machine fits that in the budget
        native = backbones.get(config.backbone).preprocessing.crop_size
        assert config.image_size in (64, native)
        assert p.reasons["image_size"].startswith("upsampled to") == (config.image_size == native)
        assert set(p.fields) - {"preset", "cache_features", "optimizer", "unfreeze_mode"} <= set(p.reasons)
        assert p.expected_s > 0 and p.budget_s == presets.DEFAULT_BUDGET_S[name]
    assert presets.plan(digits_dir, "quick", device="cpu").fields["trainable"] == "head"
    assert presets.plan(digits_dir, "best", device="cpu").fields["backbone"] == "efficientnet_lite2"


def test_overrides_win_and_are_marked_as_set_by_you(digits_dir):
    from core.train import presets

    p = presets.plan(digits_dir, "balanced", device="cpu", overrides={"epochs": 2, "image_size": 96})
    assert p.fields["epochs"] == 2 and p.fields["image_size"] == 96
    assert p.reasons["epochs"] == "set by you"
    assert p.fields["time_budget_s"] == 0  # chosen epochs are not cut by a budget nobody asked for


@pytest.fixture(scope="module")
def digits40(tmp_path_factory):
    """Digits with 40 images per class: enough for the balanced preset to fine-tune layers."""
    from core.data.datasets import make_sample

    return make_sample("digits", tmp_path_factory.mktemp("d40") / "digits", per_class=40)


def test_a_budget_too_short_to_fine_tune_falls_back_to_the_head_on_cached_features(digits40):
    from core.train import presets

    # a budget no machine misses (and the recipe's own rate: no LR sweep) fine-tunes; 1 s fine-tunes nothing
    roomy = presets.plan(digits40, "balanced", time_budget_s=1e6, device="cpu", overrides={"lr": 3e-4})
    assert roomy.fields["trainable"] == "last-2"
    p = presets.plan(digits40, "balanced", time_budget_s=1, device="cpu")
    assert p.fields["trainable"] == "head" and p.fields["augment"] == "none"
    assert p.fields["time_budget_s"] == 1 and "budget" in p.reasons["trainable"]
    assert p.reasons["augment"] == presets.suggest_augment(1, False)[1]  # reasons follow the fall-back's choices
    assert p.fields["body_eval"] is False and "only the head" in p.reasons["lr_decay"]
    # progressive resizing belongs to fine-tuning: on in the roomy plan, off (with its reason) in the fall-back
    assert roomy.fields["progressive_resize"] == presets.PROGRESSIVE < 1
    assert p.fields["progressive_resize"] == 1.0 and p.reasons["progressive_resize"].startswith("off")
    # so does WiSE-FT's weight averaging, and mixing its 3 shares costs 3 validation passes in the estimate
    assert roomy.fields["wise_ft"] is True and "WiSE-FT" in roomy.reasons["wise_ft"]
    assert p.fields["wise_ft"] is False and p.reasons["wise_ft"].startswith("off")
    no_mix = presets.expected_seconds({**roomy.fields, "wise_ft": False}, roomy.stats, roomy.stats["rates"])
    assert roomy.expected_s - no_mix == pytest.approx(3 * roomy.stats["n_val"] / roomy.stats["rates"][0], abs=0.1)


def test_the_time_estimate_counts_each_progressive_epochs_pixels():
    from core.train import presets

    stats = {"n": 1100, "n_train": 1000, "n_val": 100}
    rates = (100.0, 25.0)  # images/s forward, images/s training step at full size
    tuned = {"trainable": "last-2", "augment": "light", "epochs": 4, "image_size": 224}
    full = presets.expected_seconds(tuned, stats, rates)
    small = presets.expected_seconds({**tuned, "progressive_resize": 0.5}, stats, rates)
    # sides 112, 152, 184 (steps of 8 px), full: training passes cost (112/224)^2 ... of a full one; validation full
    area = sum(((s or 224) / 224) ** 2 for s in (112, 152, 184, None))
    assert full - small == pytest.approx((4 - area) * 1000 / 25.0)


def test_the_time_estimate_counts_the_decoding_timed_on_the_datasets_own_images(tmp_path, monkeypatch):
    """Phone photos cost far more to decode than small PNGs: the plan times a few of the dataset's own images
    (decoded as the cache decodes them) and counts that per image, not a fixed small-image figure."""
    import os
    import time

    import numpy as np
    from PIL import Image

    from core.data import datasets, imageio, layouts
    from core.train import measure, presets

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(4):
            Image.fromarray(np.full((1200, 1600, 3), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.jpg")
    asked, opened = [], imageio.open_image

    def slow_open(path, max_pixels=None, min_side=None):
        if min_side != layouts.VERIFY_SIDE:  # not the check every image gets when the folder is indexed
            asked.append(min_side)
            time.sleep(0.2)  # what a big photo costs on a slow machine
        return opened(path, max_pixels, min_side)
    monkeypatch.setattr(datasets, "open_image", slow_open)  # the decode the cache runs
    monkeypatch.setattr(layouts, "open_image", slow_open)
    stats = presets.dataset_stats(str(tmp_path))
    assert 1 <= len(asked) <= measure.DECODE_TIMED and set(asked) == {256}  # a few, reduced as the cache does
    threads = min(4, os.cpu_count() or 1)
    assert stats["decode_s"] >= 0.2 / threads
    fields, rates = {"trainable": "head", "augment": "none", "epochs": 3}, (100.0, 100.0)
    timed = presets.expected_seconds(fields, stats, rates)
    fixed = presets.expected_seconds(fields, {**stats, "decode_s": measure.DECODE_S}, rates)
    assert timed - fixed == pytest.approx(8 * (stats["decode_s"] - measure.DECODE_S))
    monkeypatch.setattr(datasets, "open_image", opened)
    assert measure.decode_seconds([str(tmp_path / "missing.jpg")]) == measure.DECODE_S  # nothing timed


def test_more_budget_buys_at_least_as_many_epochs(digits_dir):
    from core.train import presets

    short = presets.plan(digits_dir, "best", time_budget_s=120, device="cpu")
    long = presets.plan(digits_dir, "best", time_budget_s=100000, device="cpu")
    assert long.fields["epochs"] == presets.MAX_EPOCHS["best"] >= short.fields["epochs"]
    assert long.expected_s >= short.expected_s


def test_the_quick_preset_trains_and_records_its_choices(digits_dir):
    import json
    from pathlib import Path

    from core.config import RunConfig
    from core.techniques import fit
    from core.train import presets

    p = presets.plan(digits_dir, "quick", device="cpu")
    result = fit(RunConfig(data=str(digits_dir), device="cpu", **p.fields))
    saved = json.loads((Path(result["run_dir"]) / "config.json").read_text())
    assert saved["preset"] == "quick" and saved["probe_init"] is True and saved["label_smoothing"] == 0.1
    assert result["val_accuracy"] > 0.5  # digits, 10 classes: chance is 0.1


def _fake_data_and_machine(monkeypatch, n: int, side: int = 32):
    """``n`` images of ``side`` px in 10 classes, and a CPU-like speed that falls with the pixel count."""
    from core.train import presets

    per = n // 10
    stats = {"counts": {str(c): per for c in range(10)}, "sides": [side] * 64, "n": per * 10,
             "n_train": per * 8, "n_val": per * 2}
    monkeypatch.setattr(presets, "dataset_stats", lambda data, sample=64: dict(stats))

    def throughput(backbone, size, device="auto", trainable="head", batch=8):
        scale = (64 / size) ** 2  # 224 px costs 12x what 64 px costs
        return 400.0 * scale, (400.0 if trainable == "head" else 120.0) * scale
    monkeypatch.setattr(presets, "throughput", throughput)
    monkeypatch.setattr(presets, "_with_found_lr", lambda data, fields, reasons, *a: (fields, reasons))


def test_a_few_hundred_small_images_within_a_generous_budget_are_upsampled_to_the_native_size(monkeypatch):
    from core.train import presets

    _fake_data_and_machine(monkeypatch, 300)
    for name in ("quick", "balanced"):
        p = presets.plan("unused", name, time_budget_s=300, device="cpu")
        assert p.fields["image_size"] == 224
        assert p.reasons["image_size"] == ("upsampled to 224 px: 300 images fit the budget at 224 px; pretrained "
                                           "features are stronger at their native size")
        assert p.expected_s <= 300
    assert presets.plan("unused", "balanced", time_budget_s=300, device="cpu").fields["trainable"] == "last-2"


def test_many_small_images_under_a_tight_budget_keep_their_small_size(monkeypatch):
    from core.train import presets

    _fake_data_and_machine(monkeypatch, 20000)
    p = presets.plan("unused", "quick", time_budget_s=120, device="cpu")
    assert p.fields["image_size"] == 64
    assert "224 px would not fit the budget of 120 s" in p.reasons["image_size"]
    # a size the user chose is theirs, even when the native size would fit
    _fake_data_and_machine(monkeypatch, 300)
    p = presets.plan("unused", "quick", time_budget_s=300, device="cpu", overrides={"image_size": 96})
    assert p.fields["image_size"] == 96 and p.reasons["image_size"] == "set by you"


def test_the_lr_finder_is_skipped_when_its_sweep_would_cost_more_than_half_the_run(monkeypatch):
    from core.train import lr_finder, presets

    real = presets._with_found_lr
    _fake_data_and_machine(monkeypatch, 300, side=224)
    monkeypatch.setattr(presets, "_with_found_lr", real)
    monkeypatch.setattr(lr_finder, "lr_find", lambda *a, **kw: pytest.fail("the sweep ran"))
    p = presets.plan("unused", "balanced", time_budget_s=1e5, device="cpu")  # the budget is no constraint
    assert p.fields["trainable"] != "head" and p.fields["lr"] == 3e-4
    assert "more than half of the" in p.reasons["lr"]
    sweep = float(p.reasons["lr"].split("about ")[1].split(" s")[0])
    assert sweep > presets.LR_FIND_RUN_SHARE * (p.expected_s - 1)  # the reason's figures are the rule's


def test_a_fine_tuning_plan_runs_the_lr_finder_once_and_its_rate_lands_in_the_run_config(digits40, monkeypatch):
    from core.config import RunConfig
    from core.train import lr_finder, presets

    calls = []
    real = lr_finder.lr_find

    def counted(config, *a, **kw):
        calls.append(config)
        out = real(config, *a, **kw)
        out["suggestion"] = 2.5e-4  # within the limits, so the plan must take it as it is
        return out
    monkeypatch.setattr(lr_finder, "lr_find", counted)
    monkeypatch.setattr(presets, "_FOUND", {})
    monkeypatch.setattr(presets, "LR_FIND_RUN_SHARE", 1e9)  # a tiny set's run is short: the sweep is the subject here
    p = presets.plan(digits40, "balanced", time_budget_s=100000, device="cpu", overrides={"image_size": 64})
    assert p.fields["trainable"] == "last-2" and len(calls) == 1
    assert calls[0].trainable == "last-2" and calls[0].probe_init and calls[0].image_size == 64
    config = RunConfig(data=str(digits40), **p.fields).validate()
    assert config.lr == 2.5e-4
    assert "LR finder" in p.reasons["lr"] and "suggested 0.00025" in p.reasons["lr"]
    presets.plan(digits40, "balanced", time_budget_s=100000, device="cpu", overrides={"image_size": 64})
    assert len(calls) == 1  # the same data and recipe: the sweep is not run again
    quick = presets.plan(digits40, "quick", device="cpu", overrides={"image_size": 64})
    assert len(calls) == 1 and "skips the LR finder" in quick.reasons["lr"]


def test_the_finders_suggestion_is_kept_within_the_rates_a_probe_fitted_head_tolerates(monkeypatch):
    from core.train import lr_finder, presets

    stats = {"n": 100, "n_train": 80, "n_val": 20}
    fields = {"backbone": "efficientnet_lite0", "image_size": 64, "trainable": "last-2", "lr": 3e-4}
    for suggestion, expected, word in ((0.05, presets.LR_LIMITS[1], "capped"), (1e-7, presets.LR_LIMITS[0], "raised"),
                                       (4e-4, 4e-4, "suggested")):
        monkeypatch.setattr(presets, "_FOUND", {})
        monkeypatch.setattr(lr_finder, "lr_find", lambda config, **kw: {"suggestion": suggestion})
        got, why = presets._with_found_lr("d", fields, {"lr": "x"}, stats, (1000.0, 1000.0), 300.0, "cpu")
        assert got["lr"] == pytest.approx(expected) and word in why["lr"]
    # too slow a machine for the budget: no sweep, the recipe's rate, and the reason says so
    got, why = presets._with_found_lr("d", fields, {"lr": "x"}, stats, (10.0, 1.0), 300.0, "cpu")
    assert got["lr"] == 3e-4 and "skipped" in why["lr"]


def _cli_config(argv: list[str]):
    from core import cli

    a = cli.parser().parse_args(["train", *argv])
    return cli._with_preset(a, cli._config_from_flags(a, text_aware=True))


def test_the_cli_uses_the_balanced_preset_when_no_training_flag_is_given(digits_dir, capsys):
    config = _cli_config(["--data", str(digits_dir), "--device", "cpu"])
    assert config.preset == "balanced" and config.probe_init and config.label_smoothing == 0.1
    assert config.image_size == 224  # 120 small digits fit the budget at Lite0's native size
    printed = capsys.readouterr().err
    assert "preset balanced: expected about" in printed and "image_size" in printed


def test_an_explicit_cli_flag_wins_over_the_preset_choice(digits_dir):
    config = _cli_config(["--data", str(digits_dir), "--device", "cpu", "--preset", "quick", "--epochs", "2",
                          "--label-smoothing", "0", "--time-budget", "30"])
    assert config.preset == "quick" and config.trainable == "head"
    assert config.epochs == 2 and config.label_smoothing == 0.0 and config.time_budget_s == 30.0


def test_preset_custom_keeps_the_plain_defaults(digits_dir):
    from core.config import RunConfig

    config = _cli_config(["--data", str(digits_dir), "--preset", "custom"])
    assert config.preset == "custom" and config.probe_init is False and config.epochs == RunConfig().epochs


def test_a_cli_training_run_records_the_presets_choices_in_config_json(digits_dir, capsys):
    import json
    from pathlib import Path

    from core import cli

    assert cli.main(["train", "--data", str(digits_dir), "--preset", "quick", "--device", "cpu", "--epochs", "1",
                     "--image-size", "64"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((Path(result["run_dir"]) / "config.json").read_text())
    assert saved["preset"] == "quick" and saved["probe_init"] is True and saved["epochs"] == 1
    assert saved["image_size"] == 64 and saved["trainable"] == "head"
    assert result["status"] == "finished"


def test_the_train_page_offers_the_recipe_first_with_reasons_and_applies_the_choice(shapes_dir):
    import shutil

    from core.app.engine import edits as de
    from pagekit import app

    name = de.unique_name("presets-shapes")
    shutil.copytree(shapes_dir, de.root() / name)
    at = app("4_train", ds=name)
    assert at.radio(key="train_preset").value == "balanced"
    assert any("Expected time: about" in m.value for m in at.markdown)
    table = next(t.value for t in at.table if "why" in t.value.columns)  # a static table: it wraps the reasons
    assert {"image_size", "epochs", "trainable", "probe_init"} <= set(table["choice"])
    assert at.session_state["draft"]["preset"] == "balanced" and at.session_state["draft"]["probe_init"]
    at.radio(key="train_preset").set_value("quick").run()
    assert not at.exception
    assert at.session_state["draft"]["preset"] == "quick" and at.session_state["draft"]["trainable"] == "head"
    assert at.selectbox(key="train_augment").value == "none"
    at.number_input(key="train_epochs").set_value(2).run()  # an expert control overrides the recipe's choice
    at.radio(key="train_preset").set_value("custom").run()
    assert at.session_state["draft"]["preset"] == "custom" and at.session_state["draft"]["epochs"] == 2


def _epoch(i, acc, loss=1.0):
    return {"type": "epoch", "epoch": i, "val_acc": acc, "train_loss": loss}


def test_a_run_whose_accuracy_still_rose_at_the_end_is_called_unfinished():
    from core.train import presets

    start, end = {"type": "start", "trainable_groups": ["stage5", "head"]}, {"type": "end", "status": "finished"}
    rising = presets.unfinished([start, _epoch(1, 0.6), _epoch(2, 0.7), _epoch(3, 0.8), _epoch(4, 0.9), end])
    assert "still rising" in rising["message"] and rising["more_epochs"] == 2
    assert presets.unfinished([start, _epoch(1, 0.6), _epoch(2, 0.9), _epoch(3, 0.9), end]) is None
    assert presets.unfinished([start, _epoch(1, 0.6), _epoch(2, 0.9), {"type": "end", "status": "stopped"}]) is None


def test_a_head_whose_training_loss_still_fell_is_called_unconverged():
    from core.train import presets

    start, end = {"type": "start", "trainable_groups": ["head"]}, {"type": "end", "status": "finished"}
    verdict = presets.unfinished([start, _epoch(1, 0.9, 1.0), _epoch(2, 0.9, 0.8), end])
    assert "had not converged" in verdict["message"]
    assert presets.unfinished([start, _epoch(1, 0.9, 1.0), _epoch(2, 0.9, 0.99), end]) is None
    budget = presets.unfinished([start, _epoch(1, 0.9), {"type": "end", "status": "finished",
                                                         "stopped_by": "time_budget"}])
    assert "time budget" in budget["message"]


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_training_more_epochs_resumes_with_a_restarted_schedule(digits_dir, tiny_config, scheduler):
    from core.storage import runs
    from core.techniques import fit

    first = fit(tiny_config(digits_dir, epochs=2, scheduler=scheduler, lr=0.01))
    run = runs.open_run(first["run_dir"])
    config = run.config()
    config.epochs = 4
    runs.atomic_write_text(run.path / "config.json", config.to_json())
    result = fit(config, run=run, resume=True)
    assert result["epochs_run"] == 4 and result["status"] == "finished"
    steps = [e for e in run.events() if e["type"] == "step"]
    old = [e["lr"] for e in steps if e["epoch"] <= 2]
    new = [e["lr"] for e in steps if e["epoch"] > 2]
    assert new and max(new) > old[-1]                   # the rate came back up from the annealed end ...
    assert max(new) <= 0.5 * max(old) * 1.01            # ... to half the first peak, not more
    assert new[-1] < max(new)                           # ... and anneals again over the new epochs
    assert any("schedule restarts" in e.get("message", "") for e in run.events() if e["type"] == "warning")


def test_the_train_page_offers_more_epochs_for_an_unfinished_run_and_resumes_it(digits_dir, tiny_config, monkeypatch):
    from conftest import wait_for_run
    from core.app import services
    from core.app.engine import edits as de
    from core.storage import runs
    from core.techniques import fit
    from pagekit import app

    import shutil

    name = de.unique_name("presets-more")
    shutil.copytree(digits_dir, de.root() / name)
    first = fit(tiny_config(de.dataset_dir(name), epochs=2, scheduler="cosine"))
    run_id = runs.open_run(first["run_dir"]).id
    # whether two tiny epochs still improve is up to chance: the verdict itself is tested above
    monkeypatch.setattr(services, "unfinished", lambda *a, **k: {"message": "validation accuracy was still rising",
                                                                 "more_epochs": 3})
    at = app("4_train", ds=name, job=run_id)
    assert any("looks unfinished" in w.value for w in at.warning)
    at.number_input(key="train_more_n").set_value(1)
    at.button(key="train_more").click().run()
    assert not at.exception
    from pages import common

    assert common.job_manager().wait_idle(timeout=300)  # the resumed job, not the old end event
    assert wait_for_run(run_id) == "finished"
    run = runs.open_run(run_id)
    assert run.config().epochs == 3 and run.result()["epochs_run"] == 3


def test_the_train_page_says_which_weights_the_weight_averaging_kept(digits_dir, tiny_config):
    import shutil

    from core.app.engine import edits as de
    from core.storage import runs
    from core.techniques import fit
    from pagekit import app
    from pages import common

    name = de.unique_name("presets-wise")
    shutil.copytree(digits_dir, de.root() / name)
    # probe_init off: epoch 1 beats the untrained start head, so the mixes are validated
    res = fit(tiny_config(de.dataset_dir(name), trainable="last-2", body_eval=True, cache_features=False, lr=1e-3,
                          wise_ft=True))
    run = runs.open_run(res["run_dir"])
    said = [e for e in run.events() if e["type"] == "weight_average"]
    assert len(said) == 1
    at = app("4_train", ds=name, job=run.id)
    assert not at.exception
    assert common.md(said[0]["message"]) in [i.value for i in at.info]
    best = [m for m in at.metric if m.label == "Best validation accuracy"]
    assert best and best[0].value == f"{res['val_accuracy']:.1%}"  # the mix's when it was kept
    from pages import train_live

    tried = [{"share": 0.25, "val_acc": 0.9}, {"share": 0.5, "val_acc": 0.85}, {"share": 0.75, "val_acc": 0.7}]
    kept = {"type": "weight_average", "share": 0.5, "tried": tried}  # the row of the share kept is read
    assert train_live._best_accuracy([{"val_acc": 0.8}], [kept]) == 0.85
    assert train_live._best_accuracy([{"val_acc": 0.8}], [{**kept, "share": 1.0}]) == 0.8


def _fake_features(monkeypatch, informative: str):
    """Training features per body: the ``informative`` body's separate the 10 classes, the other's are noise."""
    from core.train import presets

    calls = []

    def features(data, backbone, overrides, device):
        calls.append(backbone)
        g = torch.Generator().manual_seed(0)
        labels = torch.arange(80) % 10
        x = torch.randn(80, 16, generator=g)
        if backbone == informative:
            x[:, :10] += 6 * torch.nn.functional.one_hot(labels, 10)
        return x, labels, 10
    monkeypatch.setattr(presets, "_train_features", features)
    monkeypatch.setattr(presets, "_BODIES", {})
    return calls


@pytest.mark.parametrize("informative", ["efficientnet_lite0", "efficientnet_lite2"])
def test_best_keeps_the_body_whose_cross_validated_probe_scores_higher(monkeypatch, informative):
    from core.train import presets

    _fake_data_and_machine(monkeypatch, 100, side=224)
    calls = _fake_features(monkeypatch, informative)
    p = presets.plan("unused", "best", time_budget_s=1e5, device="cpu")
    assert sorted(calls) == ["efficientnet_lite0", "efficientnet_lite2"]
    assert p.fields["backbone"] == informative
    assert p.fields["image_size"] == (224 if informative == "efficientnet_lite0" else 260)  # each body's native size
    assert "cross-validated on your training images (5 folds) scored 100.0% with its features" in p.reasons["backbone"]
    # an explicit body is the user's: nothing is compared
    calls.clear()
    p = presets.plan("unused", "best", time_budget_s=1e5, device="cpu", overrides={"backbone": "efficientnet_lite1"})
    assert not calls and p.fields["backbone"] == "efficientnet_lite1"


def test_best_skips_the_body_comparison_when_embedding_twice_would_eat_the_budget(monkeypatch):
    from core.train import presets

    _fake_data_and_machine(monkeypatch, 100, side=224)
    calls = _fake_features(monkeypatch, "efficientnet_lite0")
    p = presets.plan("unused", "best", time_budget_s=1.0, device="cpu")
    assert not calls and p.fields["backbone"] == "efficientnet_lite2"
    assert "not compared with Lite0: embedding the training images with both bodies would take" in p.reasons["backbone"]
