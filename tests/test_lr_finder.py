"""LR finder: an exponential sweep that suggests a rate below divergence and leaves the model untouched."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.models import backbones
from core.app import charts
from core.storage import runs
from core.train.lr_finder import _suggest, lr_find

REPO = Path(__file__).resolve().parents[1]


def test_sweep_on_digits_suggests_a_rate_below_divergence_and_restores_weights(digits_dir, tiny_config):
    config = tiny_config(digits_dir)
    model = backbones.build_model("efficientnet_lite0", 10, pretrained=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    runs_before = sorted(p.name for p in runs.root().iterdir())
    ticks = []
    result = lr_find(config, on_progress=lambda d, t: ticks.append((d, t)), start_lr=1e-6, end_lr=10.0,
                     num_iter=60, model=model)
    lrs, losses = result["lrs"], result["losses"]
    assert len(lrs) == len(losses) == len(ticks) >= 10 and ticks[-1][0] == len(lrs)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] == pytest.approx((1e7) ** (1 / 59))
    assert lrs[0] == pytest.approx(1e-6)
    # ten-fold above ImageNet-pretrained rates, the head's loss must blow up before the sweep ends
    assert result["diverged"] and lrs[-1] < 10.0 and losses[-1] > 4 * min(losses) * 0.999
    s = result["suggestion"]
    assert 1e-6 <= s <= 10.0 and s < result["stopped_at"] and s <= result["min_loss_lr"]
    assert all(math.isfinite(v) for v in losses)
    # the model is exactly as it was, and no run was created
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert sorted(p.name for p in runs.root().iterdir()) == runs_before

    fig = charts.lr_finder(result)
    assert fig.layout.xaxis.type == "log"
    marks = [t for t in fig.data if t.mode == "markers"]
    assert len(marks) == 1 and marks[0].x[0] == pytest.approx(s)


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = [10 ** (-6 + i * 0.25) for i in range(25)]
    # flat, then a steep drop around index 10, minimum at 16, then a rise
    losses = [2.0] * 8 + [1.9, 1.7, 1.0, 0.5, 0.45, 0.43, 0.42, 0.41, 0.40, 0.6, 1.0, 2.0, 4.0, 8.0, 9, 10, 11]
    assert _suggest(lrs, losses) == pytest.approx(lrs[10])
    # no descent at all: one tenth of the minimum's rate
    rising = [1.0 + i for i in range(25)]
    assert _suggest(lrs, rising) == pytest.approx(lrs[0] / 10)


def test_bad_sweep_bounds_are_rejected(tiny_config, digits_dir):
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        lr_find(tiny_config(digits_dir), start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="num_iter must be an integer >= 5"):
        lr_find(tiny_config(digits_dir), num_iter=2)


def test_cli_lr_find_prints_json(digits_dir):
    p = subprocess.run([sys.executable, "-m", "core", "lr-find", "--data", str(digits_dir), "--image-size", "64",
                        "--augment", "none", "--device", "cpu", "--batch-size", "16", "--num-iter", "30"],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(out["lrs"]) == len(out["losses"]) > 5
    assert out["lrs"][0] <= out["suggestion"] <= out["lrs"][-1]
