"""The registry: every entry builds, its layer groups cover every parameter once, weights are honest."""
from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from conftest import registry_entries
from core.models import backbones
from core.models import freezing

NAMES = backbones.names()


@pytest.mark.parametrize("name", NAMES)
def test_groups_partition_parameters_and_head_is_replaced(name):
    model = backbones.build_model(name, num_classes=3, pretrained=False)
    groups = backbones.param_groups_of(name, model)  # raises if a parameter is in 0 or 2+ groups
    assert list(groups) == backbones.group_names(name)
    assert all(groups[g] for g in groups), "every group owns at least one parameter"
    n_grouped = sum(p.numel() for ps in groups.values() for _, p in ps)
    assert n_grouped == sum(p.numel() for p in model.parameters())
    assert model.head.out_features == 3
    spec = backbones.get(name)
    size = 224 if name.startswith("vit") else 64
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 3)
    # the registry's published parameter count matches the built ImageNet-headed network (within 2%)
    full = backbones.build_model(name, num_classes=None, pretrained=False)
    assert abs(sum(p.numel() for p in full.parameters()) / 1e6 - spec.params_m) / spec.params_m < 0.02


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "vit_b_16"])
def test_head_only_plan_freezes_body_and_keeps_bn_in_eval(name):
    model = backbones.build_model(name, 4, pretrained=False)
    plan = freezing.plan(name, "head")
    counts = freezing.apply(model, name, plan)
    assert counts["trainable"] == sum(p.numel() for p in model.head.parameters())
    freezing.set_train_mode(model, name, plan)
    assert model.head.training and not model.body.training


def test_last_n_plan_and_partial_bn_modes():
    name = "resnet18"
    assert freezing.plan(name, "last-2") == ["layer3", "layer4", "head"]  # N body groups + the head
    plan = freezing.plan(name, "last-1")
    assert plan == ["layer4", "head"]
    model = backbones.build_model(name, 2, pretrained=False)
    freezing.apply(model, name, plan)
    freezing.set_train_mode(model, name, plan)
    assert not model.body.layer3[0].bn1.training  # frozen group: BN stays in eval
    assert model.body.layer4[0].bn1.training       # trainable group: BN trains
    assert all(p.requires_grad for p in model.body.layer4.parameters())
    assert not any(p.requires_grad for p in model.body.layer3.parameters())


def test_unknown_group_and_backbone_errors_name_the_choices():
    with pytest.raises(ValueError, match="its groups are stem, layer1"):
        freezing.plan("resnet18", groups=["layer9"])
    with pytest.raises(ValueError, match="choose one of efficientnet_lite0"):
        backbones.get("resnet1000")


def test_discriminative_learning_rates_shrink_toward_the_stem():
    model = backbones.build_model("resnet18", 2, pretrained=False)
    plan = freezing.plan("resnet18", "last-1")
    groups = freezing.param_groups(model, "resnet18", plan, lr=1e-2, decay=0.5)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 1e-2), ("layer4", 5e-3)]


def test_missing_weights_offline_fail_fast_with_alternatives(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached
    monkeypatch.setattr(backbones, "_reachable", lambda url, timeout=3.0: False)
    assert backbones.weights_status("resnet18") == "download"
    t0 = time.monotonic()
    with pytest.raises(backbones.WeightsUnavailable) as e:
        backbones.build_model("resnet18", 2, pretrained=True)
    assert time.monotonic() - t0 < 10  # no hang
    msg = str(e.value)
    assert "resnet18" in msg and "efficientnet_lite0" in msg and "random initialisation" in msg


def test_reachability_probe_times_out_quickly():
    t0 = time.monotonic()
    # a non-routable documentation address: the probe must give up within its timeout
    assert backbones._reachable("https://192.0.2.1/x", timeout=0.5) is False
    assert time.monotonic() - t0 < 5


def test_bundled_weights_are_imagenet_weights():
    """scikit-learn's sample photos come out as 'palace' (china.jpg) and 'daisy' (flower.jpg)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from torchvision.models import get_model_weights

    from core.data.datasets import preprocess_images

    categories = get_model_weights("resnet18").DEFAULT.meta["categories"]  # ImageNet-1k class names
    assert backbones.weights_status("efficientnet_lite0") == "bundled"
    model = backbones.build_model("efficientnet_lite0", num_classes=None, pretrained=True).eval()
    sample = load_sample_images()
    names = [f.rsplit("/", 1)[-1] for f in sample.filenames]
    x = preprocess_images([Image.fromarray(a) for a in sample.images], backbones.get("efficientnet_lite0").preprocessing)
    with torch.no_grad():
        top1 = model(x).argmax(1).tolist()
    got = {n: categories[i] for n, i in zip(names, top1)}
    assert got == {"china.jpg": "palace", "flower.jpg": "daisy"}


# --- the spec is the single source of per-backbone facts ------------------------------------------

@pytest.mark.parametrize("entry", registry_entries(), indirect=True)
def test_every_entry_declares_the_facts_gradcam_and_the_bundle_read(entry):
    import importlib.metadata

    spec = backbones.get(entry)
    with torch.device("meta"):  # shapes and names only: no memory, no random initialisation
        model = backbones.build_model(entry, 3, pretrained=False)
        # the architecture fact alone (what a bundle's predict.py runs) rebuilds the same network, head included
        bare = backbones.build_architecture(spec.architecture)
    model.body.get_submodule(spec.gradcam_layer)  # raises when the declared layer is not in the network
    assert isinstance(bare.get_submodule(spec.head), torch.nn.Linear)
    rebuilt = {k for k in bare.state_dict() if not (k == spec.head or k.startswith(spec.head + "."))}
    assert rebuilt == {k.removeprefix("body.") for k in model.state_dict() if k.startswith("body.")}
    for requirement in spec.packages:  # pinned as installed here, so a bundle's requirements.txt resolves
        dist, _, version = requirement.partition("==")
        assert importlib.metadata.version(dist) == version


def test_an_adapted_backbone_inherits_its_base_facts_and_keeps_its_own_weights(adapted_backbone):
    spec, base = backbones.get(adapted_backbone), backbones.get("resnet18")
    assert spec.source == "adapted" and spec.weights_file.endswith(backbones.ADAPTED_FILE)
    for fact in ("head", "groups", "gradcam_layer", "architecture", "packages", "fixed_size", "preprocessing"):
        assert getattr(spec, fact) == getattr(base, fact), fact
    assert backbones.base_of(adapted_backbone) == "resnet18"
    adapted = backbones.build_model(adapted_backbone, 2, pretrained=True)
    fresh = backbones.build_model(adapted_backbone, 2, pretrained=False)
    assert not torch.equal(adapted.body.conv1.weight, fresh.body.conv1.weight)  # the run's body was loaded


def test_a_spec_missing_a_fact_is_refused_when_registered():
    spec = dataclasses.replace(backbones.get("resnet18"), name="resnet18_bare", gradcam_layer="")
    with pytest.raises(ValueError, match="'resnet18_bare' must declare gradcam_layer"):
        backbones._register(spec)
    assert "resnet18_bare" not in backbones.names()


def test_no_backbone_is_named_where_the_facts_are_read():
    """Adding a backbone stays one entry: loading, Grad-CAM, exports and predict.py know none by name (a module
    that merely picks a default backbone, like core.config, may name it)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    names = set(backbones.names())
    found = []
    readers = [root / "core" / "results" / f"{m}.py" for m in ("loading", "interpret", "formats", "metrics")]
    for f in [*readers, root / "assets" / "predict_template.py"]:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{f.name}:{node.lineno} {node.value!r}")
    assert not found, found
