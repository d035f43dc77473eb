"""Image classification, the default technique: a pretrained body, a new linear head, cross-entropy."""
from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from core.config import RunConfig
from core.data import datasets
from core.data.preprocess import Preprocessing
from core.i18n import N_
from core.models import backbones
from core.results import loading
from core.storage import runs
from core.train.technique import Data, Technique


def load_split(config: RunConfig, run: runs.Run, resume: bool, emit) -> tuple[datasets.Split, str | None]:
    """The run's train/val split: re-read on resume (the exact same files), else built and saved."""
    split_file = run.path / "split.json"
    if resume and split_file.exists():
        d = json.loads(split_file.read_text())
        return datasets.Split.from_dict(d), d.get("content_hash")
    index = datasets.load_index(config.data, progress=lambda d, t: emit("phase", phase=N_("extracting"), done=d, total=t))
    split = datasets.split(index, config.val_fraction, config.seed)
    runs.atomic_write_text(split_file, json.dumps(
        {**split.to_dict(), "content_hash": index.content_hash, "skipped": [s.__dict__ for s in index.skipped]}))
    return split, index.content_hash


def labels(items: list[tuple[str, int]]) -> torch.Tensor:
    return torch.tensor([y for _, y in items], dtype=torch.long)


class Classifier(Technique):
    """One label per image; metrics are accuracy and cross-entropy on the validation split."""

    name = kind = "classifier"

    def data(self, config: RunConfig, run, resume: bool, emit) -> Data:
        split, content_hash = load_split(config, run, resume, emit)
        self.classes = split.classes
        weight = _class_weights(split) if config.class_weights else None
        self.criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
        return Data([p for p, _ in split.train], {"label": labels(split.train)},
                    [p for p, _ in split.val], {"label": labels(split.val)},
                    info={"classes": split.classes}, dataset_hash=content_hash)

    def build(self, config: RunConfig, data: Data) -> nn.Module:
        return backbones.build_model(config.backbone, len(self.classes), pretrained=config.pretrained)

    def loss(self, out, y):
        logits = out.float()
        loss = self.criterion.to(logits.device)(logits, y["label"])
        return loss, {"correct": float((logits.argmax(1) == y["label"]).sum()), "n": float(len(logits))}

    def train_metrics(self, sums: dict) -> dict:
        return {"train_acc": sums.get("correct", 0.0) / max(sums.get("n", 0.0), 1.0)}

    def collect(self, out, y):
        return {"logits": out.float(), "label": y["label"]}

    def metrics(self, rows: dict) -> dict:
        logits, y = rows.get("logits"), rows.get("label")
        if logits is None or not len(y):
            return {"val_loss": 0.0, "val_acc": 0.0}
        return {"val_loss": float(nn.functional.cross_entropy(logits, y)),
                "val_acc": int((logits.argmax(1) == y).sum()) / len(y)}  # exact, as scikit-learn counts it

    def card(self, config: RunConfig, pre: Preprocessing, metrics: dict) -> dict:
        return loading.make_card(config, self.classes, pre, metrics)

    def result(self, best_metrics: dict) -> dict:
        return {"classes": self.classes}

    def warm_start(self, config: RunConfig, model: nn.Module, train: dict, val: dict) -> dict:
        from core.train import probe

        # the loss's class weights, so the probe optimises what the epochs after it will
        return probe.warm_start(model.head, (train["_x"], train["label"]), (val["_x"], val["label"]),
                                class_weight=self.criterion.weight)


def _class_weights(split: datasets.Split) -> torch.Tensor:
    """Inverse class frequency, normalised so a balanced dataset gets weight 1 everywhere."""
    counts = np.bincount([y for _, y in split.train], minlength=len(split.classes)).astype(np.float64)
    w = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)


TECHNIQUE = Classifier
