"""Continued self-supervised pretraining of a text encoder on the user's unlabelled text (masked language model).

BERT's objective: 15 % of the tokens of each text are picked (transformers' ``DataCollatorForLanguageModeling``:
80 % of those become [MASK], 10 % a random token, 10 % stay) and the model learns to predict the originals from
the context. The masks are drawn afresh every time a text is seen (dynamic masking, as RoBERTa does); a held-out
share of the texts is masked once, with the run's seed, so the validation MLM loss of every epoch is measured
on the same masked tokens and shows whether the encoder learns the user's language.

The bundled sentence encoders ship without BERT's MLM head, so a fresh one is trained beside the encoder (dense
-> GELU -> LayerNorm, then the output layer tied to the word embeddings, as in BERT) and thrown away afterwards.
The adapted encoder is saved in the run folder as ``adapted.safetensors`` (``"kind": "adapted"``,
``"modality": "text"``) and becomes the text backbone ``adapted-text:<base>:<run id>`` of
``core.models.text_backbones``, which a text classification (or distillation, multi-task) run starts from.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.config import RunConfig
from core.data import text_tasks
from core.i18n import N_, _
from core.models import text_backbones
from core.models.net import TransferNet
from core.models.text_backbones import TextEncoder
from core.results import loading
from core.storage import runs
from core.techniques.text_classifier import TextClassifier
from core.train.technique import Data, Technique

IGNORE = -100  # the label of a token that was not masked (the collator's convention, cross_entropy's default)


class TokenEncoder(TextEncoder):
    """The encoder's hidden state of every token (N, L, d): what the MLM head reads. Same weights (``model.*``)
    as the pooled TextEncoder, so the adapted body loads into it unchanged."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            used = (ids != self.pad_id).any(0).nonzero()  # columns that are padding in every row carry nothing
            ids = ids[:, :int(used.max()) + 1] if len(used) else ids[:, :1]
        return self.model(input_ids=ids, attention_mask=(ids != self.pad_id).long()).last_hidden_state


class MLMHead(nn.Module):
    """BERT's prediction head: transform each token's state; ``decode`` scores it against every word embedding."""

    def __init__(self, embeddings: nn.Embedding, eps: float = 1e-12):
        super().__init__()
        dim = embeddings.weight.shape[1]
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.bias = nn.Parameter(torch.zeros(embeddings.weight.shape[0]))
        # tied, not owned: the word embeddings stay the body's (their layer group, their state-dict key)
        object.__setattr__(self, "_embeddings", embeddings)
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(nn.functional.gelu(self.dense(hidden)))

    def decode(self, states: torch.Tensor) -> torch.Tensor:
        """(M, d) transformed states -> (M, vocabulary) logits."""
        return states.float() @ self._embeddings.weight.float().T + self.bias.float()


class MaskedRows(torch.utils.data.Dataset):
    """(masked token ids, {"labels": original ids where masked, IGNORE elsewhere}) per text.

    ``fixed``: every text masked once, with its own generator (validation); else masked anew at every access."""

    def __init__(self, ids: torch.Tensor, tokenizer, probability: float, fixed_seed: int | None = None):
        from transformers import DataCollatorForLanguageModeling

        self.ids = ids
        self.special = torch.isin(ids, torch.tensor(sorted(set(tokenizer.all_special_ids))))
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=probability,
                                                        seed=fixed_seed)
        self.fixed = None
        if fixed_seed is not None:
            self.fixed = self.collator.torch_mask_tokens(ids.clone(), special_tokens_mask=self.special.clone())

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        if self.fixed is not None:
            return self.fixed[0][i], {"labels": self.fixed[1][i]}
        x, y = self.collator.torch_mask_tokens(self.ids[i:i + 1].clone(), special_tokens_mask=self.special[i:i + 1])
        return x[0], {"labels": y[0]}


def pretrain(base_backbone: str, sources: list[str] | str, epochs: int = 3, batch_size: int = 32, lr: float = 1e-4,
             trainable: str = "all", max_length: int = 128, mlm_probability: float = 0.15, val_fraction: float = 0.1,
             seed: int = 0, device: str = "auto", name: str = "", time_budget_s: float = 0.0, on_event=None,
             control=None, run: runs.Run | None = None) -> runs.Run:
    """Adapt the text encoder ``base_backbone`` to the texts of ``sources`` by MLM; returns the run (module doc)."""
    from core import techniques

    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not sources:
        raise ValueError(_("pretrain needs at least one text source (a .txt file, a table with a text column, or a "
                           "folder or .zip of .txt files)"))
    sources = [str(s) for s in sources]
    dataset = " + ".join(Path(s).stem for s in sources)
    config = RunConfig(data=sources[0], backbone=base_backbone, image_size=0, trainable=trainable, epochs=epochs,
                       batch_size=batch_size, lr=lr, scheduler="cosine", augment="none", seed=seed, device=device,
                       name=name or f"MLM on {dataset}", technique="text_pretrain", sources=sources, dataset=dataset,
                       max_length=max_length, mlm_probability=mlm_probability, val_fraction=val_fraction,
                       cache_features=False, early_stopping_metric="val_loss", time_budget_s=time_budget_s)
    techniques.check(config)
    run = run or runs.create(config)
    techniques.fit(config, on_event, control, run)
    return run


class TextPretrain(Technique):
    """Masked-language-model adaptation of a text encoder; the MLM head is thrown away afterwards."""

    name = "text_pretrain"
    kind = "adapted"
    modality = "text"
    best_file = text_backbones.ADAPTED_FILE
    stopped_message = N_("stopped by the user; the encoder from the best finished epoch is kept (if any)")

    preprocessing = TextClassifier.preprocessing
    prepare = TextClassifier.prepare

    def check(self, config: RunConfig) -> None:
        if not text_backbones.is_text(config.backbone) or config.backbone.startswith(text_backbones.ADAPTED_PREFIX):
            raise ValueError(_("start from a text backbone of the registry ({names}); got {backbone!r}").format(
                names=", ".join(text_backbones.names()), backbone=config.backbone))
        if config.trainable == "head" and not config.trainable_groups:
            raise ValueError(_("trainable='head' would adapt nothing (the MLM head is thrown away after "
                               "pretraining); use 'all' or 'last-N'"))
        if config.augment != "none":
            raise ValueError(_("augment transforms images; pretraining on text takes augment none, got {augment!r}")
                             .format(augment=config.augment))
        if config.unfreeze_after and config.cache_features:
            raise ValueError(_("unfreeze_after with cache_features would mask each text once only; set "
                               "cache_features to false"))
        if config.probe_init:
            raise ValueError(_("probe_init fits a classifier head; pretraining has none — turn it off"))

    def data(self, config: RunConfig, run, resume: bool, emit) -> Data:
        self.run_id, self.base = run.path.name, config.backbone
        sources = config.sources or [config.data]
        self.dataset = config.dataset or " + ".join(Path(s).stem for s in sources)
        split_file = run.path / "split.json"
        if resume and split_file.exists():
            d = json.loads(split_file.read_text())
            train, val = d["train"], d["val"]
        else:
            texts = [t for s in sources for t in text_tasks.read_unlabelled(s)]
            if len(texts) < 4:
                raise ValueError(_too_few(len(texts)))
            order = np.random.RandomState(config.seed).permutation(len(texts)).tolist()
            n_val = max(1, int(round(len(texts) * min(config.val_fraction, 0.5))))
            train, val = [texts[i] for i in order[n_val:]], [texts[i] for i in order[:n_val]]
            runs.atomic_write_text(split_file, json.dumps({"sources": sources, "train": train, "val": val}))
        return Data(train, {}, val, {}, info={"n_texts": len(train) + len(val), "sources": sources,
                                              "dataset": self.dataset, "modality": "text",
                                              "mlm_probability": config.mlm_probability})

    def samples(self, config: RunConfig, data: Data, pre, emit):
        n = len(data.train) + len(data.val)
        emit("phase", phase=N_("tokenizing texts"), done=0, total=n)
        tok = text_backbones.tokenizer(config.backbone)
        train = MaskedRows(text_backbones.tokenize(tok, data.train, config.max_length), tok, config.mlm_probability)
        val = MaskedRows(text_backbones.tokenize(tok, data.val, config.max_length), tok, config.mlm_probability,
                         fixed_seed=config.seed)
        emit("phase", phase=N_("tokenizing texts"), done=n, total=n)
        return train, val, train

    def build(self, config: RunConfig, data: Data) -> nn.Module:
        pooled = text_backbones.build_body(config.backbone, pretrained=config.pretrained)
        body = TokenEncoder(pooled.model, pooled.pad_id)
        self.head = MLMHead(body.model.get_input_embeddings(), getattr(body.model.config, "layer_norm_eps", 1e-12))
        return TransferNet(body, self.head)

    def _scores(self, out, y):
        """(per-token NLL, per-token correctness, row of each masked token) over the masked tokens of a batch."""
        labels = y["labels"][:, :out.shape[1]]  # the body cut trailing padding columns: never masked
        mask = labels != IGNORE
        logits = self.head.decode(out[mask])
        target = labels[mask]
        nll = nn.functional.cross_entropy(logits, target, reduction="none")
        return nll, (logits.argmax(1) == target).float(), mask.nonzero()[:, 0]

    def loss(self, out, y):
        nll, correct, _rows = self._scores(out, y)
        if not len(nll):  # no token of this batch was picked (very short texts): nothing to learn, not a zero loss
            return out.sum() * 0.0, {"masked": 0.0, "correct": 0.0}
        return nll.mean(), {"masked": float(len(nll)), "correct": float(correct.sum())}

    def step_metrics(self, nums: dict) -> dict:
        return self.train_metrics(nums)

    def train_metrics(self, sums: dict) -> dict:
        return {"train_masked_acc": sums.get("correct", 0.0) / max(sums.get("masked", 0.0), 1.0)}

    def collect(self, out, y):
        nll, correct, rows = self._scores(out, y)
        n = len(out)
        zeros = torch.zeros(n, device=out.device)
        return {"nll": zeros.index_add(0, rows, nll), "correct": zeros.index_add(0, rows, correct),
                "masked": zeros.index_add(0, rows, torch.ones_like(nll))}

    def metrics(self, rows: dict) -> dict:
        masked = float(rows["masked"].sum()) if "masked" in rows else 0.0
        if not masked:
            return {"val_loss": 0.0, "val_acc": 0.0, "val_masked": 0}
        return {"val_loss": float(rows["nll"].sum()) / masked, "val_acc": float(rows["correct"].sum()) / masked,
                "val_masked": int(masked)}

    def score(self, config: RunConfig, metrics: dict) -> float:
        return -metrics["val_loss"]  # the MLM loss on the held-out texts; its accuracy is too coarse to pick by

    def card(self, config: RunConfig, pre, metrics: dict) -> dict:
        spec = text_backbones.get(config.backbone)
        return {"format": loading.FORMAT, "kind": "adapted", "modality": "text", "backbone": config.backbone,
                "name": text_backbones.adapted_name(config.backbone, self.run_id), "dataset": self.dataset,
                "sources": config.sources or [config.data], "objective": "masked language model",
                "preprocessing": {"tokenizer": spec.hub_id, "max_length": config.max_length},
                "config": config.to_dict(), "versions": loading.versions(),
                "metrics": {"mlm_loss": metrics.get("val_loss"), "masked_acc": metrics.get("val_accuracy"),
                            "epochs": metrics.get("epoch")}}

    def export_state(self, state: dict) -> dict:
        return {k[len("body."):]: v for k, v in state.items() if k.startswith("body.")}

    def result(self, best_metrics: dict) -> dict:
        return {"backbone_name": text_backbones.adapted_name(self.base, self.run_id),
                "mlm_loss": best_metrics.get("val_loss"), "masked_acc": best_metrics.get("val_accuracy")}


def _too_few(n: int) -> str:
    from core.i18n import ngettext

    return ngettext("found {n} text; masked-language-model pretraining needs at least 4",
                    "found {n} texts; masked-language-model pretraining needs at least 4", n).format(n=n)


TECHNIQUE = TextPretrain
