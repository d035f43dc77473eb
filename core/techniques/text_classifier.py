"""Text classification: a pretrained sentence encoder (core.models.text_backbones), a linear head, cross-entropy.

The image classifier's loss, metrics and class weights apply as they are; what changes is the modality: texts
are tokenised once into padded id rows (the loop's samples), the body masks the padding itself, and nothing is
normalised or augmented. Head-only runs therefore take the loop's cached-feature path: each text is encoded once.
"""
from __future__ import annotations

import hashlib
import json

import torch

from core.config import RunConfig
from core.data import text as text_data
from core.data.preprocess import Preprocessing
from core.i18n import N_, _
from core.models import text_backbones
from core.storage import runs
from core.techniques.classifier import Classifier, _class_weights
from core.train.feed import Rows  # token id rows are in-memory tensors, as cached features are
from core.train.technique import Data


def content_hash(table: text_data.TextTable) -> str:
    """Identifies a text dataset by its rows (texts and labels, in order)."""
    return hashlib.sha256(json.dumps([[r.text, r.label] for r in table.rows]).encode()).hexdigest()[:16]


def load_split(config: RunConfig, run: runs.Run, resume: bool) -> tuple[text_data.TextSplit, str | None]:
    """The run's split: re-read on resume (the very same texts), else read, split and saved to split.json."""
    split_file = run.path / "split.json"
    if resume and split_file.exists():
        d = json.loads(split_file.read_text())
        return text_data.TextSplit.from_dict(d), d.get("content_hash")
    table = text_data.read(config.data)
    split = text_data.split(table, config.val_fraction, config.seed)
    digest = content_hash(table)
    runs.atomic_write_text(split_file, json.dumps(
        {**split.to_dict(), "content_hash": digest, "columns": [table.text_column, table.label_column],
         "encoding_problems": table.encoding_problems, "skipped": table.skipped}))
    return split, digest


class TextClassifier(Classifier):
    """One label per text; metrics are the image classifier's (accuracy and cross-entropy on validation)."""

    name = "text"
    modality = "text"

    def check(self, config: RunConfig) -> None:
        if not text_backbones.is_text(config.backbone):
            raise ValueError(_("technique text needs a text backbone, one of {names}; got {backbone!r}").format(
                                 names=', '.join(text_backbones.names()), backbone=config.backbone))
        if config.augment != "none":  # the loop's augmentation (and its cached views) transform images
            raise ValueError(_("augment transforms images; a text run takes augment none, got {augment!r}").format(
                                 augment=config.augment))
        if getattr(config, "probe_init", False) and not _head_only(config):
            # the loop's probe warm start embeds images when no features were cached (fine-tuning runs)
            raise ValueError(_("probe_init on a text run needs head-only training (trainable head); turn "
                               "probe_init off to fine-tune encoder blocks"))
        if getattr(config, "progressive_resize", 1.0) < 1:
            raise ValueError(_("progressive_resize resizes images; a text run must keep it at 1 (off), got "
                               "{progressive_resize!r}").format(progressive_resize=config.progressive_resize))

    def preprocessing(self, config: RunConfig) -> Preprocessing:
        # Texts are tokenised, not resized (the card records the tokenizer and max_length instead); the loop's
        # image bookkeeping (sizes in events, progressive resizing off) still reads an image preprocessing.
        return Preprocessing()

    def data(self, config: RunConfig, run, resume: bool, emit) -> Data:
        split, digest = load_split(config, run, resume)
        self.classes = split.classes
        weight = _class_weights(split) if config.class_weights else None
        self.criterion = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
        label = lambda rows: torch.tensor([y for _, y in rows], dtype=torch.long)  # noqa: E731
        return Data([t for t, _ in split.train], {"label": label(split.train)},
                    [t for t, _ in split.val], {"label": label(split.val)},
                    info={"classes": split.classes, "modality": "text"}, dataset_hash=digest)

    def samples(self, config: RunConfig, data: Data, pre, emit):
        n = len(data.train) + len(data.val)
        emit("phase", phase=N_("tokenizing texts"), done=0, total=n)
        tok = text_backbones.tokenizer(config.backbone)
        train = Rows(text_backbones.tokenize(tok, data.train, config.max_length), data.train_targets)
        val = Rows(text_backbones.tokenize(tok, data.val, config.max_length), data.val_targets)
        emit("phase", phase=N_("tokenizing texts"), done=n, total=n)
        return train, val, train  # nothing random happens to a text: the plain training view is the same

    def prepare(self, x: torch.Tensor, pre) -> torch.Tensor:
        return x  # token ids go to the body as they are; it masks the padding

    def build(self, config: RunConfig, data: Data):
        return text_backbones.build_model(config.backbone, len(self.classes), pretrained=config.pretrained)

    def card(self, config: RunConfig, pre, metrics: dict) -> dict:
        return text_card(config, self.classes, metrics)


def _head_only(config: RunConfig) -> bool:
    from core.models import freezing

    return freezing.plan(config.backbone, config.trainable, config.trainable_groups) == ["head"]


def text_card(config: RunConfig, classes: list[str], metrics: dict | None = None) -> dict:
    """The model card of a text classifier: the image card's fields, with the tokenizer in place of resizing."""
    from core.results import loading

    spec = text_backbones.get(config.backbone)
    return {"format": loading.FORMAT, "kind": "classifier", "modality": "text", "backbone": config.backbone,
            "classes": list(classes), "num_classes": len(classes),
            "preprocessing": {"tokenizer": spec.hub_id, "max_length": config.max_length},
            "config": config.to_dict(), "metrics": metrics or {}, "versions": loading.versions()}


TECHNIQUE = TextClassifier
