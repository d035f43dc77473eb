"""The linear-probe warm start (core.train.probe) and the time budget of the loop."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def digits30(tmp_path_factory):
    """Digits with 30 images per class: a validation split of 60 makes "within one point" meaningful."""
    from core.data.datasets import make_sample

    return make_sample("digits", tmp_path_factory.mktemp("d30") / "digits", per_class=30)


def _events(run_dir) -> list[dict]:
    from core.storage import runs

    return list(runs.open_run(run_dir).events())


@torch.no_grad()
def _features(items, pre):
    """Body features of (path, label) items computed here, outside the loop, with the eval transform."""
    from core.data import datasets
    from core.models import backbones

    body = backbones.build_model("efficientnet_lite0", None).body.eval()
    cache = datasets.ImageCache([p for p, _ in items], pre)
    crop = datasets.eval_transform(pre)
    x = torch.stack([crop(cache.get(p)) for p, _ in items])
    return body(datasets.normalize(x, pre)).numpy(), [y for _, y in items]


def test_probe_init_gives_the_model_the_accuracy_of_a_scikit_learn_logistic_regression(digits30, tiny_config):
    from sklearn.linear_model import LogisticRegression

    from core.models import backbones
    from core.techniques import fit

    # lr 1e-9: the one epoch's steps move nothing, so its validation accuracy is the warm-started model's
    config = tiny_config(digits30, probe_init=True, epochs=1, lr=1e-9)
    result = fit(config)
    probe = [e for e in _events(result["run_dir"]) if e["type"] == "probe"]
    assert len(probe) == 1
    split = json.loads((Path(result["run_dir"]) / "split.json").read_text())
    pre = backbones.preprocessing_for(config)
    xtr, ytr = _features(split["train"], pre)
    xva, yva = _features(split["val"], pre)
    sk = LogisticRegression(C=1.0, max_iter=2000).fit(xtr, ytr).score(xva, yva)
    assert abs(result["val_accuracy"] - sk) <= 0.01 + 1e-9
    assert abs(probe[0]["probe_val_acc"] - result["val_accuracy"]) <= 1e-9
    assert result["val_accuracy"] > 0.6  # chance is 0.1


def test_probe_init_also_warm_starts_runs_with_augmentation_and_fine_tuning(digits_dir, tiny_config):
    from core.techniques import fit

    result = fit(tiny_config(digits_dir, probe_init=True, augment="light", trainable="last-1", epochs=1))
    kinds = [e["type"] for e in _events(result["run_dir"])]
    assert kinds.index("probe") < kinds.index("step")
    probe = next(e for e in _events(result["run_dir"]) if e["type"] == "probe")
    assert probe["probe_train_acc"] > 0.5


def test_resuming_a_probe_run_does_not_fit_the_probe_again(digits_dir, tiny_config):
    from core.storage import runs
    from core.techniques import fit

    first = fit(tiny_config(digits_dir, probe_init=True, epochs=1))
    run = runs.open_run(first["run_dir"])
    cfg = run.config()
    cfg.epochs = 2
    runs.atomic_write_text(run.path / "config.json", cfg.to_json())
    fit(cfg, run=run, resume=True)
    assert sum(e["type"] == "probe" for e in _events(run.path)) == 1


def test_a_time_budget_much_shorter_than_the_epochs_stops_early_and_keeps_the_best_weights(digits_dir, tiny_config):
    from core.storage import cards
    from core.techniques import fit

    # image epochs at 64 px take seconds here; 40 of them cannot fit in 4 s
    result = fit(tiny_config(digits_dir, trainable="all", epochs=40, time_budget_s=4.0))
    assert result["epochs_run"] < 40
    assert result["stopped_by"] == "time_budget"
    stops = [e for e in _events(result["run_dir"]) if e["type"] == "budget"]
    assert len(stops) == 1 and stops[0]["epoch"] == result["epochs_run"]
    assert (Path(result["run_dir"]) / cards.BEST_FILE).is_file()
    on_disk = json.loads((Path(result["run_dir"]) / "result.json").read_text())
    assert on_disk["stopped_by"] == "time_budget"


def test_fine_tuning_that_does_worse_than_the_probe_hands_over_the_probe(digits_dir, tiny_config):
    from core.results import metrics

    # a learning rate of 1.0 on the last layers wrecks the features: no epoch can beat the probe
    from core.techniques import fit

    result = fit(tiny_config(digits_dir, probe_init=True, trainable="last-2", lr=1.0, epochs=1))
    probe = next(e for e in _events(result["run_dir"]) if e["type"] == "probe")
    epoch = next(e for e in _events(result["run_dir"]) if e["type"] == "epoch")
    assert epoch["val_acc"] < probe["probe_val_acc"]
    assert result["best_epoch"] == 0 and result["val_accuracy"] == probe["probe_val_acc"]
    assert metrics.evaluate_run(result["run_dir"], refresh=True)["accuracy"] == probe["probe_val_acc"]


def test_under_torchrun_the_probe_fits_on_gathered_rows_and_every_rank_gets_the_same_head(digits_dir, tmp_path):
    import os
    import subprocess
    import sys

    from core.results import metrics

    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    # lr 1e-9: the epoch leaves the weights as the probe set them, so the all-reduced validation accuracy
    # of the epoch is the DDP model's, and the saved model evaluated in one process must agree with both
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "core", "train",
           "--data", str(digits_dir), "--preset", "quick", "--image-size", "64", "--epochs", "1", "--lr", "1e-9",
           "--device", "cpu", "--out", str(tmp_path / "ws")]
    p = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-4000:]
    result = json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])
    events = _events(result["run_dir"])
    probe = [e for e in events if e["type"] == "probe"]
    assert len(probe) == 1 and probe[0]["n_train"] == len(json.loads(
        (Path(result["run_dir"]) / "split.json").read_text())["train"])  # all rows, gathered from both ranks
    epoch = next(e for e in events if e["type"] == "epoch")
    assert abs(epoch["val_acc"] - probe[0]["probe_val_acc"]) < 1e-9  # rank 1's head equals rank 0's
    assert metrics.evaluate_run(result["run_dir"], refresh=True)["accuracy"] == probe[0]["probe_val_acc"]


def test_the_cross_validated_probe_scores_what_scikit_learn_scores_on_the_same_folds():
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from core.train import probe

    x, y = make_classification(n_samples=120, n_features=20, n_informative=6, n_classes=4, class_sep=0.8,
                               random_state=3)
    ours = probe.cross_validated(torch.tensor(x, dtype=torch.float32), torch.tensor(y), 4, folds=4, seed=1)
    theirs = cross_val_score(LogisticRegression(C=probe.PROBE_C, max_iter=5000), x, y,
                             cv=StratifiedKFold(4, shuffle=True, random_state=1)).mean()
    assert 0.4 < theirs < 0.95  # overlapping classes: the score says something
    assert abs(ours - theirs) <= 0.02


def test_cpu_embeddings_run_the_body_in_small_chunks_with_the_same_features(monkeypatch):
    from core.models import backbones, net
    from core.train import feed

    monkeypatch.setattr(net, "INFER_PIXELS", 8 * 64 * 64 + 100)  # 8 images of 64 x 64 per chunk

    body = backbones.build_model("efficientnet_lite0", None).body.eval()
    sizes = []
    body.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    x = torch.randn(20, 3, 64, 64)
    with torch.no_grad():
        chunked = feed.body_features(body, x)
        whole = body(x)
    assert sizes == [8, 8, 4, 20]
    assert torch.allclose(chunked, whole, atol=1e-5)


def test_inference_chunks_keep_dict_outputs_and_leave_training_whole(monkeypatch):
    from core.models import net

    monkeypatch.setattr(net, "INFER_PIXELS", 8 * 12 * 12)

    class Two(torch.nn.Module):  # a multi-task-like module: one output per task
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.bn = torch.nn.BatchNorm2d(4)

        def forward(self, x):
            f = self.bn(self.conv(x)).mean((2, 3))
            return {"a": f[:, :2], "b": f[:, 2:]}

    torch.manual_seed(0)
    m, x = Two(), torch.randn(19, 3, 12, 12)
    m.bn.running_mean.fill_(0.3)
    sizes = []
    m.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    with torch.no_grad():
        m.eval()
        out, ref = net.infer(m, x), m(x)
        assert sizes == [8, 8, 3, 19] and set(out) == {"a", "b"}
        assert all(torch.allclose(out[k], ref[k], atol=1e-6) for k in out)
        m.train()  # batch statistics: a chunk's rows would depend on which images share it
        sizes.clear()
        net.infer(m, x)
        assert sizes == [19]
    m.eval()
    net.infer(m, x).get("a").sum().backward()  # autograd on: whole batch, gradients flow
    assert sizes == [19, 19] and m.conv.weight.grad is not None
