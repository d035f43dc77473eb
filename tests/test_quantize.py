"""int8 exports keep accuracy (issue 13): checked against fp32 on the validation split, with quantization-aware
fine-tuning as the fallback, and the numbers recorded in the export's card."""
from __future__ import annotations

from pathlib import Path

import pytest
from core.results import formats


@pytest.fixture(scope="module")
def shapes_run(shapes_dir, tiny_config):
    """EfficientNet-Lite0 at 64 px on the shapes sample, head only, 3 epochs."""
    from core.techniques import fit

    res = fit(tiny_config(shapes_dir, epochs=3))
    assert res["status"] == "finished"
    return Path(res["run_dir"])


def test_the_int8_export_is_within_one_point_of_fp32_and_smaller(shapes_run):
    out = formats.export(shapes_run, "int8")
    q = formats.int8_summary(out)
    assert q["fp32_val_accuracy"] > 0.5, q  # a model worth quantizing: 3 classes
    assert q["int8_val_accuracy"] >= q["fp32_val_accuracy"] - 0.01, q
    assert q["within_tolerance"] is True and q["calibration_images"] >= 30
    assert [t["method"] for t in q["tried"]][0] == "post-training, all layers"
    assert out.stat().st_size < 0.5 * (shapes_run / "best.safetensors").stat().st_size
    # what the file computes is what the card claims
    rep = formats.compare_int8(shapes_run, out, repeats=1)
    assert rep["int8"]["val_accuracy"] == pytest.approx(q["int8_val_accuracy"], abs=1e-6)
    assert "quantized" in str(formats.ExportedModel(out)._module.graph)


def test_calibration_images_are_spread_over_the_classes():
    items = [(f"{c}_{i}.png", c) for c in range(4) for i in range(100)]
    picked = formats._stratified(items, 40)
    assert len(picked) == 40 and {c: sum(1 for _, y in picked if y == c) for c in range(4)} == {c: 10 for c in range(4)}


def _tiny_task():
    """A small conv net and a two-class task it can learn: bright vs dark 8x8 images."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 2)).eval()
    y = torch.arange(64) % 2
    x = torch.rand(64, 3, 8, 8) * 0.5 + y.view(-1, 1, 1, 1) * 0.5

    def batches():
        return ((x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16))
    return net, x, y, batches


def test_quantization_aware_fine_tuning_stops_at_the_first_epoch_that_reaches_the_goal():
    from core.results import quantize

    net, x, y, batches = _tiny_task()
    calls = []

    def check(module):
        calls.append(module)
        return quantize.accuracy(module, x, y)
    module, scores = quantize.qat(net, batches, epochs=6, check=check, goal=float("-inf"))
    assert len(scores) == 1 and len(calls) == 1 and module is calls[0]  # first checked epoch: goal reached, stop
    module, scores = quantize.qat(net, batches, epochs=6, check=check, goal=float("inf"))
    # unreachable goal: every epoch after the observing ones is converted and scored, the best one kept
    assert len(scores) == 6 - quantize.OBSERVE_EPOCHS
    assert quantize.accuracy(module, x, y) == pytest.approx(max(scores))
    assert "quantized" in str(type(dict(module.named_modules())["0"])).lower()
