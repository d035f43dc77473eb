"""Test-time augmentation (issue 13): evaluation averages the image's and its mirror's probabilities, and
TorchScript / ONNX exports can carry the same averaging inside the graph."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.results import formats, metrics
from core.results.loading import load_model


@pytest.fixture(scope="module")
def run_dir(shapes_dir, tiny_config):
    """EfficientNet-Lite0 at 64 px, head only, 1 epoch, shared by this file."""
    from core.techniques import fit

    res = fit(tiny_config(shapes_dir, epochs=1))
    assert res["status"] == "finished"
    return Path(res["run_dir"])


def _val_batch(run_dir: Path) -> tuple[list[str], torch.Tensor]:
    """Validation paths and their [0, 1] batch as exports take it."""
    lm = load_model(run_dir)
    paths = [p for p, _ in json.loads((run_dir / "split.json").read_text())["val"]]
    return paths, formats.unit_batch(lm, paths)


def test_tta_evaluation_is_the_mean_of_the_plain_and_the_mirrored_probabilities(run_dir):
    lm = load_model(run_dir)
    _, x = _val_batch(run_dir)
    norm = (x - torch.tensor(lm.preprocessing.mean).view(1, 3, 1, 1)) / torch.tensor(lm.preprocessing.std).view(1, 3, 1, 1)
    with torch.no_grad():
        plain = torch.softmax(lm.model(norm), 1)
        mirrored = torch.softmax(lm.model(norm.flip(-1)), 1)
    rep = metrics.evaluate_run(run_dir, tta=True)
    assert rep["tta"] is True and (run_dir / "evaluation_tta.json").exists()
    assert np.allclose(rep["probs"], ((plain + mirrored) / 2).numpy(), atol=1e-5)
    assert not np.allclose(rep["probs"], plain.numpy(), atol=1e-5)  # the mirror really changed something
    assert metrics.evaluate_run(run_dir)["tta"] is False  # the plain evaluation is cached apart


def test_a_tta_onnx_export_gives_the_averaged_probabilities_in_onnxruntime(run_dir, tmp_path):
    out = formats.export(run_dir, "onnx", tmp_path / "tta.onnx", tta=True)
    ex = formats.ExportedModel(out)
    assert ex._session is not None and "flip" in ex.card["tta"]
    rep = metrics.evaluate_run(run_dir, tta=True)
    _, x = _val_batch(run_dir)
    got = torch.softmax(ex.logits(x), 1).numpy()
    assert np.abs(got - np.array(rep["probs"])).max() <= 1e-4


def test_tta_torchscript_matches_and_tta_is_refused_where_it_cannot_live(run_dir, tmp_path):
    out = formats.export(run_dir, "torchscript", tta=True)
    assert out.name.endswith("-tta.torchscript.pt") and out != formats.default_path(run_dir, "torchscript")
    _, x = _val_batch(run_dir)
    got = torch.softmax(formats.ExportedModel(out).logits(x), 1).numpy()
    assert np.abs(got - np.array(metrics.evaluate_run(run_dir, tta=True)["probs"])).max() <= 1e-4
    with pytest.raises(ValueError, match="test-time augmentation is built into torchscript and onnx exports"):
        formats.export(run_dir, "int8", tmp_path / "q.pt", tta=True)
