"""Weights and model bundles, and the loader that rebuilds a model from one downloaded file.

A ``.safetensors`` export carries the model card (classes, backbone, preprocessing, config, metrics)
as JSON in the file's own metadata, so the file alone is enough to rebuild and predict. The ``.pt``
bundle is a plain dict of tensors and strings, loadable with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import io
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from core.models import backbones
from core.data.preprocess import Preprocessing
from core.models.backbones import TransferNet
from core.models.net import infer
from core.models.heads import MultiTaskNet, build_multitask
from core.data.datasets import preprocess_images
from core.data.imageio import open_image

from core.storage.cards import CARD_KEY, FORMAT, card_kind, read_card  # noqa: F401 (re-exported for load_model users)
from core.storage.cards import weights_file
from core.i18n import _


def versions() -> dict:
    """Library versions recorded with every run and export."""
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}


def make_card(config, classes: list[str], pre: Preprocessing, metrics: dict | None = None, **extra) -> dict:
    """The model card: everything needed to rebuild the model and understand where it came from."""
    card = {"format": FORMAT, "backbone": config.backbone, "classes": list(classes), "num_classes": len(classes),
            "preprocessing": pre.to_dict(), "config": config.to_dict(), "metrics": metrics or {},
            "versions": versions()}
    card.update(extra)
    return card


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def safetensors_bytes(model: torch.nn.Module, card: dict) -> bytes:
    """The .safetensors file as bytes, card in its metadata."""
    from safetensors.torch import save

    return save(_state(model), metadata={CARD_KEY: json.dumps(card)})


def save_safetensors(model: torch.nn.Module, card: dict, path: Path) -> None:
    """Write weights + card atomically."""
    from core.storage.runs import atomic_write_bytes

    atomic_write_bytes(Path(path), safetensors_bytes(model, card))


def bundle_bytes(model: torch.nn.Module, card: dict) -> bytes:
    """One .pt file: {'format', 'card' (JSON text), 'state_dict'}."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "card": json.dumps(card), "state_dict": _state(model)}, buf)
    return buf.getvalue()


def _read(path: Path) -> tuple[dict, dict]:
    path = weights_file(path)
    if not path.exists():
        raise ValueError(_("{path} does not exist; pass a run directory or a .safetensors / .pt export").format(
                             path=path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        card = read_card(path)
        return load_file(str(path)), card
    if path.suffix == ".pt":
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError(_("{name} is not a Transfer Studio bundle (expected format {format})").format(
                                 name=path.name, format=FORMAT))
        return obj["state_dict"], json.loads(obj["card"])
    raise ValueError(_("unsupported model file {name}; expected .safetensors or .pt").format(name=path.name))


def build_from_card(card: dict) -> TransferNet:
    """An untrained network with the card's architecture and number of classes."""
    return backbones.build_model(card["backbone"], card["num_classes"], pretrained=False)


def _with_weights(build, state: dict) -> torch.nn.Module:
    """``build()`` holding ``state``. Built on the meta device, so no time goes into random initial weights that
    the state replaces at once (seconds for VGG-16 or ViT-B/16)."""
    with torch.device("meta"):
        model = build()
    model.load_state_dict(state, assign=True)  # strict: a missing or unexpected key still raises
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):  # a non-persistent buffer: not in state
        model = build()
        model.load_state_dict(state)
    return model.float()  # as loading into a freshly built model did: float32 whatever the file stores


@dataclass
class LoadedModel:
    """A model rebuilt from an export, with its classes and preprocessing."""

    model: TransferNet
    classes: list[str]
    preprocessing: Preprocessing
    card: dict

    @torch.no_grad()
    def predict_proba(self, images: list, tta: bool | str = False) -> torch.Tensor:
        """Class probabilities for images (paths, file-likes or PIL images), shape (n, classes); ``tta``: "flip"
        (or True) or "multicrop" averages over the views of core.results.tta."""
        from core.results import tta as views

        side = self.preprocessing.resize_size
        pil = [im.convert("RGB") if isinstance(im, Image.Image) else open_image(im, min_side=side) for im in images]
        x = preprocess_images(pil, self.preprocessing)
        mode = views.mode_of(tta)
        return views.probs(self.model, x, mode) if mode != "none" else torch.softmax(infer(self.model, x).float(), dim=1)

    def predict(self, images: list, top_k: int = 1, tta: bool | str = False) -> list[dict]:
        """Top-k predictions per image: {'label', 'confidence', 'top_k': [(label, p), ...]}."""
        probs = self.predict_proba(images, tta)
        k = min(top_k, len(self.classes))
        out = []
        for row in probs:
            p, i = row.topk(k)
            top = [(self.classes[j], float(q)) for q, j in zip(p.tolist(), i.tolist())]
            out.append({"label": top[0][0], "confidence": top[0][1], "top_k": top})
        return out


def load_model(path: str | Path) -> "LoadedModel | LoadedMultiTask":
    """Rebuild a trained model from a run directory, a .safetensors export or a .pt bundle, whatever its kind:
    a classifier (``LoadedModel``) or a multi-task model (``LoadedMultiTask``, one prediction per task)."""
    kind = card_kind(read_card(path))
    if kind == "multitask":
        return load_multitask(path)
    if kind != "classifier":
        raise ValueError(_("{name} holds an adapted backbone body (no classifier head); fine-tune it first: pick "
                           "it on the Backbone step or pass --backbone adapted:<backbone>:<run id>").format(
                             name=Path(path).name))
    state, card = _read(Path(path))
    if card.get("modality") == "text":
        return load_text(path, state, card)
    model = _with_weights(lambda: build_from_card(card), state).eval()
    return LoadedModel(model, list(card["classes"]), Preprocessing.from_dict(card["preprocessing"]), card)


# --- text classifiers (issue 17): a sentence encoder and its tokenizer ---------------------------------------

TOKENIZER_DIR = "tokenizer"  # beside an exported text model: the encoder's tokenizer and config files


@dataclass
class LoadedTextModel(LoadedModel):
    """A text classifier rebuilt from an export; ``predict(["some text"])`` as for images."""

    tokenizer: object = None
    max_length: int = 128

    @torch.no_grad()
    def predict_proba(self, texts: list[str], tta: bool | str = False) -> torch.Tensor:
        """Class probabilities for texts, shape (n, classes); ``tta`` must be off (its views are image views)."""
        from core.models import text_backbones
        from core.results import tta as views

        if views.mode_of(tta) != "none":
            raise ValueError(_("test-time augmentation mirrors and crops images; a text classifier predicts without "
                               "it"))
        if isinstance(texts, str):
            raise TypeError(_("predict takes a list of texts; wrap the one text in a list: predict([text])"))
        ids = text_backbones.tokenize(self.tokenizer, list(texts), self.max_length)
        return torch.softmax(self.model(ids).float(), dim=1)


def load_text(path: str | Path, state: dict, card: dict) -> LoadedTextModel:
    """A text classifier from its weights and card: the encoder files beside the export (a ``tokenizer`` folder)
    when present, else the text registry's (bundled, or the Hugging Face cache)."""
    from core.models import text_backbones

    folder = weights_file(Path(path)).parent / TOKENIZER_DIR
    src = str(folder) if (folder / "config.json").is_file() else None
    build = lambda: text_backbones.build_model(card["backbone"], card["num_classes"], pretrained=False,  # noqa: E731
                                               source=src)
    model = _with_weights(build, state).eval()
    tok = text_backbones.tokenizer(card["backbone"], source=src)
    return LoadedTextModel(model, list(card["classes"]), None, card, tok, int(card["preprocessing"]["max_length"]))


# --- multi-task models: one head per task ---------------------------------------------------------

@dataclass
class LoadedMultiTask:
    """A multi-task model rebuilt from an export: every task's prediction in one forward pass. Image models
    take images; text models (``tokenizer`` set) take a list of texts."""

    model: MultiTaskNet
    tasks: dict[str, list[str]]
    preprocessing: Preprocessing | None
    card: dict
    tokenizer: object = None
    max_length: int = 128

    @torch.no_grad()
    def predict_proba(self, inputs: list) -> dict[str, torch.Tensor]:
        """{task: (n, classes) probabilities} for images (paths, file-likes or PIL images) or texts."""
        if self.tokenizer is not None:
            from core.models import text_backbones

            if isinstance(inputs, str):
                raise TypeError(_("predict takes a list of texts; wrap the one text in a list: predict([text])"))
            x = text_backbones.tokenize(self.tokenizer, list(inputs), self.max_length)
        else:
            side = self.preprocessing.resize_size
            pil = [im.convert("RGB") if isinstance(im, Image.Image) else open_image(im, min_side=side) for im in inputs]
            x = preprocess_images(pil, self.preprocessing)
        return {t: torch.softmax(v.float(), 1) for t, v in self.model(x).items()}

    def predict(self, inputs: list, top_k: int = 1) -> list[dict]:
        """Per input: {task: {'label', 'confidence', 'top_k': [(label, p), ...]}} for every task."""
        probs = self.predict_proba(inputs)
        out = [{} for _ in inputs]
        for t, p in probs.items():
            k = min(top_k, len(self.tasks[t]))
            for i, row in enumerate(p):
                q, j = row.topk(k)
                top = [(self.tasks[t][c], float(v)) for v, c in zip(q.tolist(), j.tolist())]
                out[i][t] = {"label": top[0][0], "confidence": top[0][1], "top_k": top}
        return out


def load_multitask(path: str | Path) -> LoadedMultiTask:
    """Rebuild a multi-task model from its run directory, .safetensors export or .pt bundle."""
    path = Path(path)
    state, card = _read(path)
    if card_kind(card) != "multitask":
        raise ValueError(_("{name} holds a {card_kind} model, not a multi-task one; load it with "
                           "core.results.loading.load_model").format(name=path.name, card_kind=card_kind(card)))
    tasks = {t: list(c) for t, c in card["tasks"].items()}
    if card.get("modality") == "text":  # a sentence encoder, one linear head per label column
        from core.models import text_backbones

        folder = weights_file(path).parent / TOKENIZER_DIR
        src = str(folder) if (folder / "config.json").is_file() else None
        dim = text_backbones.get(card["backbone"]).dim
        build = lambda: MultiTaskNet(  # noqa: E731
            text_backbones.build_body(card["backbone"], pretrained=False, source=src),
            torch.nn.ModuleDict({t: torch.nn.Linear(dim, len(c)) for t, c in tasks.items()}))
        return LoadedMultiTask(_with_weights(build, state).eval(), tasks, None, card,
                               text_backbones.tokenizer(card["backbone"], source=src),
                               int(card["preprocessing"]["max_length"]))
    model = _with_weights(lambda: build_multitask(card["backbone"], card["tasks"], pretrained=False)[0], state)
    model.eval()
    return LoadedMultiTask(model, tasks, Preprocessing.from_dict(card["preprocessing"]), card)
