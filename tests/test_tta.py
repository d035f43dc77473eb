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


def _tiny_net() -> torch.nn.Module:
    """A position-sensitive classifier (a linear map of every pixel): different crops give different outputs."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 5)).eval()


def test_multicrop_averages_the_softmax_of_the_centre_and_four_corner_crops_of_the_enlarged_image():
    from core.results import tta

    net, x = _tiny_net(), torch.rand(4, 3, 32, 32)
    big = torch.nn.functional.interpolate(x, size=(37, 37), mode="bilinear", align_corners=False)  # 32 * 1.15
    crops = [big[..., 2:34, 2:34], big[..., :32, :32], big[..., :32, 5:], big[..., 5:, :32], big[..., 5:, 5:]]
    with torch.no_grad():
        expected = torch.stack([torch.softmax(net(c), 1) for c in crops]).mean(0)
        got = metrics.tta_probs(net, x, "multicrop")
        plain = torch.softmax(net(x), 1)
    assert len(tta.multicrop_views(x)) == 5
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-3)  # the views really differ from the image


def test_multicrop_is_the_identity_when_every_crop_is_the_same_image():
    net = _tiny_net()
    x = torch.rand(3, 3, 1, 1).expand(3, 3, 32, 32).contiguous()  # one colour per image: every crop equals it
    with torch.no_grad():
        assert torch.allclose(metrics.tta_probs(net, x, "multicrop"), torch.softmax(net(x), 1), atol=1e-6)


def test_multicrop_evaluation_and_exports_agree_and_bad_modes_are_refused(run_dir):
    rep = metrics.evaluate_run(run_dir, tta="multicrop")
    assert rep["tta_mode"] == "multicrop" and (run_dir / "evaluation_multicrop.json").exists()
    flip = metrics.evaluate_run(run_dir, tta="flip")
    assert flip["tta_mode"] == "flip" and not np.allclose(rep["probs"], flip["probs"], atol=1e-5)
    _, x = _val_batch(run_dir)
    for fmt in ("torchscript", "onnx"):
        out = formats.export(run_dir, fmt, tta="multicrop")
        assert "-multicrop" in out.name and out != formats.default_path(run_dir, fmt, tta="flip")
        ex = formats.ExportedModel(out)
        assert "multi-crop" in ex.card["tta"]
        got = torch.softmax(ex.logits(x), 1).numpy()
        assert np.abs(got - np.array(rep["probs"])).max() <= 1e-4, fmt
    with pytest.raises(ValueError, match="must be one of none, flip, multicrop; got 'tencrop'"):
        metrics.evaluate_run(run_dir, tta="tencrop")


def test_the_cli_evaluates_and_exports_with_a_tta_mode_and_a_bare_tta_means_flip(run_dir, capsys):
    from core import cli
    from core.results import tta

    assert cli.TTA_MODES == tta.MODES  # the CLI's copy (kept torch-free for --help) follows the engine
    assert cli.main(["evaluate", "--model", str(run_dir), "--tta", "multicrop"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["tta"] == "multicrop"
    assert printed["accuracy"] == metrics.evaluate_run(run_dir, tta="multicrop")["accuracy"]
    assert cli.parser().parse_args(["export", "--model", "m", "--format", "onnx", "--tta"]).tta == "flip"
    assert cli.parser().parse_args(["export", "--model", "m", "--format", "onnx"]).tta == "none"
    assert cli.main(["export", "--model", str(run_dir), "--format", "torchscript", "--tta", "multicrop"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["path"].endswith("-multicrop.torchscript.pt")
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["evaluate", "--model", "m", "--tta", "tencrop"])


def test_a_test_set_and_new_images_are_scored_with_the_chosen_tta(tmp_path, tiny_config):
    from core.data.datasets import make_sample
    from core.techniques import fit

    digits = make_sample("digits", tmp_path / "digits", per_class=6)
    test = make_sample("digits", tmp_path / "test", per_class=4, skip=6)  # other images of the same classes
    run = fit(tiny_config(digits, epochs=1))["run_dir"]
    flip, plain = metrics.evaluate_on(run, test, tta="flip"), metrics.evaluate_on(run, test)
    assert (flip["tta_mode"], plain["tta_mode"]) == ("flip", "none")
    assert np.abs(np.array(flip["probs"]) - np.array(plain["probs"])).max() > 1e-3  # mirrored digits differ
    model = load_model(run)
    paths = [it["path"] for it in flip["items"]]
    # "Try it on new images" (LoadedModel.predict) averages the same views as the test-set evaluation
    assert np.allclose(model.predict_proba(paths, tta="flip").numpy(), flip["probs"], atol=1e-4)
    assert np.allclose(model.predict_proba(paths).numpy(), plain["probs"], atol=1e-4)
    top = model.predict(paths[:3], top_k=2, tta="flip")
    assert [t["confidence"] for t in top] == pytest.approx([max(p) for p in flip["probs"][:3]], abs=1e-4)
