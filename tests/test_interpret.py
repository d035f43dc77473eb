"""Grad-CAM over every registry backbone, and ROC / PR / calibration on hand-made inputs."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import registry_entries
from core.models import backbones
from core.app import charts
from core.results import interpret
from core.data.preprocess import Preprocessing
from core.models.backbones import TransferNet


def _square_image(side: int, right: bool) -> torch.Tensor:
    """A dark (1, 3, side, side) image with a bright square in the right or left half."""
    x = torch.zeros(1, 3, side, side)
    q = side // 4
    cols = slice(side - 2 * q, side - q) if right else slice(q, 2 * q)
    x[:, :, side // 2 - q // 2: side // 2 + q // 2, cols] = 1.0
    return x


@pytest.mark.parametrize("entry", registry_entries(), indirect=True)
def test_grad_cam_works_for_every_registry_backbone_adapted_ones_included(entry):
    torch.manual_seed(0)
    spec = backbones.get(entry)
    # an adapted backbone brings its own body weights (from its run); registry entries stay offline and random
    model = backbones.build_model(entry, 3, pretrained=spec.source == "adapted").eval()
    side = spec.fixed_size or 64  # at 32 px ConvNeXt's last stage is 1x1: a map with nothing to vary over
    pre = spec.preprocessing
    x = _square_image(side, right=True)
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    x += 0.1 * torch.randn_like(x)  # texture, so even a random network's map has something to vary over
    cam = interpret.grad_cam(model, x, backbone=entry)
    assert cam.heatmap.shape == (side, side)
    assert cam.heatmap.min() >= 0.0 and cam.heatmap.max() <= 1.0
    assert cam.heatmap.max() - cam.heatmap.min() > 0.5 and cam.heatmap.std() > 1e-3  # not constant
    assert cam.target == int(np.argmax(cam.probs)) and abs(cam.probs.sum() - 1) < 1e-5
    assert cam.layer == f"body.{spec.gradcam_layer}"  # the layer is the registry entry's fact
    assert all(p.grad is None for p in model.parameters())  # the model's own gradients are left alone


def _bright_detector() -> TransferNet:
    """Channel 0 fires on bright pixels, channel 1 on dark ones; class 0 = 'bright', class 1 = 'dark'."""
    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([[1 / 3] * 3, [-1 / 3] * 3]).view(2, 3, 1, 1)
        conv.bias[:] = torch.tensor([-0.5, 0.5])
    body = nn.Sequential(OrderedDict(conv=conv, act=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten()))
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight[:] = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
        head.bias.zero_()
    return TransferNet(body, head).eval()


@pytest.mark.parametrize("right", [True, False])
def test_grad_cam_mass_falls_on_the_bright_square(right):
    model = _bright_detector()
    x = _square_image(64, right=right)
    cam = interpret.grad_cam(model, x, target=0, layer="body.act")
    left_mass, right_mass = cam.heatmap[:, :32].sum(), cam.heatmap[:, 32:].sum()
    if right:
        assert right_mass > 5 * left_mass
    else:
        assert left_mass > 5 * right_mass
    assert cam.signed
    # the heatmap peaks inside the square itself
    y, xx = np.unravel_index(cam.heatmap.argmax(), cam.heatmap.shape)
    assert x[0, 0, y, xx] == 1.0


def test_grad_cam_rejects_bad_input_with_a_useful_message():
    model = _bright_detector()
    with pytest.raises(ValueError, match=r"one image as a \(1, 3, H, W\)"):
        interpret.grad_cam(model, torch.zeros(2, 3, 8, 8), layer="body.act")
    with pytest.raises(ValueError, match="out of range; the model has 2 classes"):
        interpret.grad_cam(model, torch.zeros(1, 3, 8, 8), target=5, layer="body.act")
    with pytest.raises(ValueError, match="out of range|pass layer="):
        interpret.grad_cam(model, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="choose an earlier layer"):
        interpret.grad_cam(model, torch.zeros(1, 3, 8, 8), layer="body.flat")


def test_explain_returns_the_crop_overlay_and_top_k():
    from core.results.loading import LoadedModel

    torch.manual_seed(0)
    model = backbones.build_model("resnet18", 3, pretrained=False).eval()
    lm = LoadedModel(model, ["a", "b", "c"], Preprocessing(resize_size=73, crop_size=64), {"backbone": "resnet18"})
    img = Image.new("RGB", (120, 90), (30, 30, 30))
    img.paste((250, 250, 250), (70, 30, 100, 60))
    ex = interpret.explain(lm, img, top_k=2)
    assert ex.image.size == (64, 64) and ex.overlay.size == (64, 64)
    assert ex.heatmap.shape == (64, 64)
    probs = lm.predict_proba([img])[0]
    assert ex.label == lm.classes[int(probs.argmax())]
    assert abs(ex.confidence - float(probs.max())) < 1e-5
    assert [p for _, p in ex.top_k] == sorted((p for _, p in ex.top_k), reverse=True) and len(ex.top_k) == 2
    assert interpret.explain(lm, img, target="c").target == "c"
    with pytest.raises(ValueError, match="unknown class 'zebra'; the model knows a, b, c"):
        interpret.explain(lm, img, target="zebra")


def test_explain_reads_a_photo_file_as_predictions_do(tmp_path):
    """A phone-sized JPEG decodes reduced for predictions (core.data.imageio, min_side): the explanation is of
    the same pixels, so its confidence is the prediction's."""
    from core.results.loading import LoadedModel

    torch.manual_seed(0)
    model = backbones.build_model("resnet18", 3, pretrained=False).eval()
    lm = LoadedModel(model, ["a", "b", "c"], Preprocessing(resize_size=73, crop_size=64), {"backbone": "resnet18"})
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(path)
    probs = lm.predict_proba([str(path)])[0]
    ex = interpret.explain(lm, str(path), top_k=3)
    assert sorted(p for _, p in ex.top_k) == pytest.approx(sorted(probs.tolist()), abs=1e-6)


def test_roc_and_pr_match_hand_computed_values():
    labels = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])  # the textbook example: AUC 0.75, AP 0.8333
    probs = np.stack([1 - s, s], 1)
    r = interpret.roc(labels, probs, ["neg", "pos"])
    assert r[1]["auc"] == pytest.approx(0.75) and r[0]["auc"] == pytest.approx(0.75)
    p = interpret.pr(labels, probs, ["neg", "pos"])
    assert p[1]["ap"] == pytest.approx(0.8333, abs=1e-4) and p[1]["prevalence"] == 0.5
    fig = charts.roc_curves(r)
    assert [t.name for t in fig.data] == ["neg (AUC 0.750)", "pos (AUC 0.750)", "chance"]
    assert list(charts.pr_curves(p).data[1].x) == p[1]["recall"]


def test_roc_skips_a_class_without_positives():
    labels = np.array([0, 0, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    r = interpret.roc(labels, probs, ["a", "b", "c"])
    assert r[0]["auc"] == 1.0 and r[2]["auc"] is None and "needs both" in r[2]["note"]
    assert len(charts.roc_curves(r).data) == 3  # two classes + chance


def test_ece_is_near_zero_for_calibrated_and_large_for_overconfident_predictions():
    rng = np.random.default_rng(0)
    n = 20000
    conf = rng.uniform(0.5, 1.0, n)
    labels = np.zeros(n, dtype=int)
    correct = rng.uniform(size=n) < conf  # right exactly as often as claimed
    probs = np.where(correct[:, None], np.stack([conf, 1 - conf], 1), np.stack([1 - conf, conf], 1))
    cal = interpret.calibration(labels, probs, bins=10)
    assert cal["ece"] < 0.02
    assert sum(b["count"] for b in cal["bins"]) == n and len(cal["bins"]) == 10

    # 10 answers at 95 % confidence, 5 of them right: every bin's gap is 0.45
    probs = np.tile([0.95, 0.05], (10, 1))
    labels = np.array([0] * 5 + [1] * 5)
    cal = interpret.calibration(labels, probs)
    assert cal["ece"] == pytest.approx(0.45) and cal["mce"] == pytest.approx(0.45)
    full = [b for b in cal["bins"] if b["count"]]
    assert len(full) == 1 and full[0]["lo"] == pytest.approx(0.9) and full[0]["accuracy"] == 0.5
    fig = charts.reliability(cal)
    assert list(fig.data[0].y) == [0.5] and "ECE 0.450" in fig.layout.title.text


def test_confidence_of_exactly_one_lands_in_the_last_bin():
    cal = interpret.calibration(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert cal["bins"][-1]["count"] == 2 and cal["ece"] == 0.0


def test_curves_for_reads_an_evaluation_report():
    rep = {"classes": ["x", "y"], "probs": [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]],
           "items": [{"label": 0}, {"label": 1}, {"label": 1}]}
    out = interpret.curves_for(rep)
    assert out["roc"][1]["auc"] == 1.0
    assert out["calibration"]["accuracy"] == pytest.approx(2 / 3)
