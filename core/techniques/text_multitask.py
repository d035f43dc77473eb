"""Multi-task learning for text: one shared sentence encoder, one linear head per label column of a table.

The data is a CSV/TSV/JSONL with a text column and several label columns (``text,topic,sentiment``; an empty
cell means "no label for this task"). Loss, per-task accuracy and macro F1, and the saved file are the image
multi-task technique's (``core.techniques.multitask``): ``sum_t w_t * CE_t`` over the rows labelled for task t,
the heads saved as ``heads.<task>.*`` beside ``body.*``, the card's ``"kind": "multitask"`` with each task's
classes, plus ``"modality": "text"`` and the tokenizer. ``load`` rebuilds it and predicts every task of a text.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.config import RunConfig
from core.data import text_tasks
from core.i18n import _
from core.models import text_backbones
from core.models.heads import TaskHeads
from core.models.net import TransferNet
from core.results import loading
from core.storage import cards, runs
from core.techniques.multitask import MISSING, MultiTask, _parse_weights
from core.techniques.text_classifier import TextClassifier
from core.train.technique import Data


def fit_text_multitask(config: RunConfig, tasks: list[str] | None = None, weights=None, on_event=None,
                       control=None, run: runs.Run | None = None) -> dict:
    """Train one text encoder with a head per label column of ``config.data``; returns the final metrics."""
    from core.techniques import fit

    config = dataclasses.replace(config, technique="text_multitask", tasks=tasks or config.tasks,
                                 task_weights=[float(w) for w in weights] if weights is not None
                                 else config.task_weights)
    return fit(config, on_event, control, run)


def split_rows(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and validation row indices: a seeded shuffle (labels of several tasks cannot all be stratified)."""
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 2:
        raise ValueError(_("{n} labelled texts are too few to hold out {n_val} for validation; add texts").format(
            n=n, n_val=n_val))
    order = np.random.RandomState(seed).permutation(n).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


class TextMultiTask(MultiTask):
    """One linear head per label column on a text encoder; the rest (loss, metrics, export) is MultiTask's."""

    name = "text_multitask"
    modality = "text"

    def check(self, config: RunConfig) -> None:
        super().check(config)
        TextClassifier.check(self, config)  # the text run's rules (augment none, no probe_init when fine-tuning)

    preprocessing = TextClassifier.preprocessing
    samples = TextClassifier.samples
    prepare = TextClassifier.prepare

    def data(self, config: RunConfig, run, resume: bool, emit) -> Data:
        split_file = run.path / "split.json"
        if resume and split_file.exists():
            d = json.loads(split_file.read_text())
            self.tasks = {t: list(c) for t, c in d["tasks"].items()}
            train, val, digest = d["train"], d["val"], d.get("content_hash")
        else:
            table = text_tasks.read_tasks(config.data, config.tasks)
            self.tasks = table.tasks
            rows = [[text, [self.tasks[t].index(table.labels[t][i]) if table.labels[t][i] else MISSING
                            for t in self.tasks]] for i, text in enumerate(table.texts)]
            tr, va = split_rows(len(rows), config.val_fraction, config.seed)
            train, val = [rows[i] for i in tr], [rows[i] for i in va]
            digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
            runs.atomic_write_text(split_file, json.dumps(
                {"tasks": self.tasks, "train": train, "val": val, "content_hash": digest,
                 "text_column": table.text_column, "skipped": table.skipped,
                 "encoding_problems": table.encoding_problems}))
            for s in table.skipped[:20]:
                emit("warning", message=f"row {s['row']}: {s['message']}")
        self.weights = _parse_weights(list(self.tasks), config.task_weights)
        ytr = torch.tensor([r for _, r in train], dtype=torch.long).reshape(len(train), len(self.tasks))
        yva = torch.tensor([r for _, r in val], dtype=torch.long).reshape(len(val), len(self.tasks))
        labelled = {t: {"train": int((ytr[:, k] != MISSING).sum()), "val": int((yva[:, k] != MISSING).sum())}
                    for k, t in enumerate(self.tasks)}
        return Data([t for t, _ in train], {"labels": ytr}, [t for t, _ in val], {"labels": yva},
                    info={"tasks": self.tasks, "task_weights": self.weights, "labelled": labelled,
                          "modality": "text"}, dataset_hash=digest)

    def build(self, config: RunConfig, data: Data) -> nn.Module:
        body = text_backbones.build_body(config.backbone, pretrained=config.pretrained)
        dim = text_backbones.get(config.backbone).dim
        return TransferNet(body, TaskHeads({t: nn.Linear(dim, len(c)) for t, c in self.tasks.items()}))

    def card(self, config: RunConfig, pre, metrics: dict) -> dict:
        spec = text_backbones.get(config.backbone)
        return {"format": loading.FORMAT, "kind": "multitask", "modality": "text", "backbone": config.backbone,
                "tasks": self.tasks, "task_weights": self.weights, "classes": [], "num_classes": 0,
                "preprocessing": {"tokenizer": spec.hub_id, "max_length": config.max_length},
                "config": config.to_dict(), "metrics": metrics or {}, "versions": loading.versions()}


TECHNIQUE = TextMultiTask


# --- load-back -----------------------------------------------------------------------------------------------

def load(path: str | Path) -> loading.LoadedMultiTask:
    """Rebuild a text multi-task model from its run directory or .safetensors export (``load_model`` does the same)."""
    file = cards.weights_file(Path(path))
    if not file.is_file():
        raise ValueError(_("{path} has no weights yet ({name} missing); train at least one epoch").format(
            path=path, name=file.name))
    card = cards.read_card(file)
    if cards.card_kind(card) != "multitask" or card.get("modality") != "text":
        raise ValueError(_("{name} is not a text multi-task model; load it with core.results.loading.load_model")
                         .format(name=file.name))
    return loading.load_multitask(file)
