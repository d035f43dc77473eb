"""SimCLR domain adaptation: the NT-Xent value, the objective going down, adapted backbones fine-tuning."""
from __future__ import annotations

import math
import shutil

import pytest
import torch

from core.models import backbones
from core.data import datasets
from core.results import loading
from core.models import freezing
from core.techniques import simclr
from core.config import RunConfig


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_identical_pairs_orthogonal_negatives(temperature):
    n = 4
    z = torch.eye(2 * n)[:n] * 3.0  # scale must not matter: embeddings are L2-normalised
    # Each view: positive similarity 1/T, the other 2n-2 candidates are orthogonal (similarity 0).
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 2 * n - 2))
    got = simclr.nt_xent(z, z.clone(), temperature).item()
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_nt_xent_prefers_matching_pairs():
    torch.manual_seed(0)
    z1 = torch.randn(6, 16)
    matched = simclr.nt_xent(z1, z1 + 0.01 * torch.randn(6, 16)).item()
    shuffled = simclr.nt_xent(z1, z1[[1, 2, 3, 4, 5, 0]]).item()
    assert matched < shuffled
    with pytest.raises(ValueError, match="at least 2 images"):
        simclr.nt_xent(z1[:1], z1[:1])


def test_objective_decreases_and_weights_change(shapes_dir):
    torch.manual_seed(0)
    pre = backbones.Preprocessing(resize_size=36, crop_size=32)
    paths = sorted(str(p) for p in shapes_dir.rglob("*.png"))[::5][:6]
    cache = datasets.ImageCache(paths, pre)
    views = simclr.view_transform(pre)
    # One fixed batch of views: the same objective each step, so it must go down.
    v1 = torch.stack([views(cache.get(p)) for p in paths])
    v2 = torch.stack([views(cache.get(p)) for p in paths])
    x = datasets.normalize(torch.cat([v1, v2]), pre)
    model = backbones.build_model("efficientnet_lite0", 1, pretrained=True)
    # Only the last two groups learn: backpropagating through the whole body is slow on 2 CPU cores.
    freezing.apply(model, "efficientnet_lite0", freezing.plan("efficientnet_lite0", "last-2"))
    proj = simclr.ProjectionHead(backbones.feature_dim(model), 32)
    before = {k: v.clone() for k, v in model.body.state_dict().items() if v.dtype.is_floating_point}
    trainable = [p for p in model.body.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable + list(proj.parameters()), lr=1e-3)
    model.train()
    losses = []
    for _ in range(5):
        z1, z2 = proj(model.body(x)).chunk(2)
        loss = simclr.nt_xent(z1, z2, 0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    after = model.body.state_dict()
    names = {n for n, p in model.body.named_parameters() if p.requires_grad}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert names <= changed  # every trainable weight moved ...
    assert not any(k.startswith("_conv_stem") for k in changed)  # ... and frozen ones did not


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, shapes_dir):
    """A tiny pretraining run on 8 unlabelled images (no class folders)."""
    folder = tmp_path_factory.mktemp("unlabelled") / "my-photos"
    folder.mkdir()
    for i, p in enumerate(sorted(shapes_dir.rglob("*.png"))[::4][:8]):
        shutil.copy(p, folder / f"img{i}.png")
    events = []
    run = simclr.pretrain("efficientnet_lite0", [str(folder)], epochs=1, batch_size=4, image_size=32, lr=1e-3,
                       on_event=events.append)
    return run, events


def test_pretrain_writes_an_adapted_backbone(adapted):
    run, events = adapted
    kinds = [e["type"] for e in events]
    assert kinds.count("step") == 2 and kinds.count("epoch") == 1
    assert events[-1]["type"] == "end" and events[-1]["status"] == "finished"
    assert [e["type"] for e in run.events()] == kinds  # the log on disk is what the callback saw
    card = loading.read_card(run.path / simclr.ADAPTED_FILE)
    assert card["kind"] == "adapted" and card["backbone"] == "efficientnet_lite0" and card["dataset"] == "my-photos"

    name = backbones.adapted_name("efficientnet_lite0", run.id)
    rows = {r["name"]: r for r in backbones.list_adapted()}
    assert rows[name]["title"] == "EfficientNet-Lite0 (bundled), adapted on my-photos"

    adapted_model = backbones.build_model(name, 3)
    imagenet = backbones.build_model("efficientnet_lite0", 3)
    a, b = adapted_model.body.state_dict(), imagenet.body.state_dict()
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].dtype.is_floating_point)
    assert backbones.group_names(name) == backbones.group_names("efficientnet_lite0")


def test_adapted_backbone_fine_tunes_like_any_other(adapted, shapes_dir, tiny_config):
    from core.techniques import fit

    run, _ = adapted
    name = backbones.adapted_name("efficientnet_lite0", run.id)
    config = tiny_config(shapes_dir, backbone=name, image_size=32)
    assert config.validate() is config
    result = fit(config)
    assert result["status"] == "finished"
    loaded = loading.load_model(result["run_dir"])
    assert loaded.card["backbone"] == name
    preds = loaded.predict([next(shapes_dir.rglob("*.png"))])
    assert preds[0]["label"] in ("circle", "square", "triangle")


def test_pretrain_refuses_settings_that_adapt_nothing():
    with pytest.raises(ValueError, match="adapt nothing"):
        simclr.pretrain("efficientnet_lite0", "sample:shapes", trainable="head")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 2"):
        simclr.pretrain("efficientnet_lite0", "sample:shapes", batch_size=1)


def test_bad_adapted_names_are_explained():
    assert not backbones.known("adapted:efficientnet_lite0:20990101-000000-" + "0" * 32)
    with pytest.raises(ValueError, match="adapted:<backbone>:<run id>"):
        backbones.get("adapted:../../etc")
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.get("adapted:nosuchnet:20990101-000000-" + "0" * 32)
    with pytest.raises(ValueError, match="backbone"):
        backbones.check(RunConfig(data="x", backbone="adapted:efficientnet_lite0:20990101-000000-" + "0" * 32).validate())
    with pytest.raises(ValueError, match="no adapted weights"):
        backbones.build_model("adapted:efficientnet_lite0:20990101-000000-" + "0" * 32, 3)


def test_contrastive_chart_follows_the_log(adapted):
    from core.app import charts

    _, events = adapted
    fig = charts.contrastive_curves(events)
    assert list(fig.data[0].y) == [e["loss"] for e in events if e["type"] == "step"]
    assert all(0 <= v <= 1 for v in fig.data[1].y)
