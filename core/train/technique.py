"""What a training technique plugs into the one loop (core.train.loop), and the data it hands over.

The loop owns everything techniques share: seeding, devices, AMP and channels_last, cached features,
loaders (and their DDP samplers), freezing, gradual unfreezing and discriminative learning rates,
the optimizer and schedule, NaN and out-of-memory handling, pause/stop, validation, early stopping,
best weights, resumable checkpoints, events, tracking and the result file. A technique supplies only
what is its own: its data and targets, its model's head, its loss, its metrics and what it saves.

Models follow one shape, ``TransferNet(body, head)``: the backbone's body plus whatever head the
technique needs (a linear classifier, one linear layer per task, a projection head), so layer groups,
freezing and feature caching work the same for every technique. Targets are dicts of tensors, one row
per sample, so they travel through loaders, feature caches and DDP gathers unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from core.config import RunConfig
from core.data.preprocess import Preprocessing
from core.i18n import N_
from core.storage import cards


@dataclass
class Data:
    """A technique's training and validation samples: image paths and, per target name, one row each."""

    train: list[str]
    train_targets: dict[str, torch.Tensor]
    val: list[str] = field(default_factory=list)
    val_targets: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict = field(default_factory=dict)      # extra fields for the start event (classes, tasks, ...)
    dataset_hash: str | None = None


class Technique:
    """The default behaviour of every hook; ``core.techniques`` subclasses it once per technique."""

    name = "classifier"
    kind = "classifier"                 # the model card's kind (core.storage.cards.card_kind)
    best_file = cards.BEST_FILE         # where the best weights go inside the run folder
    validates = True                    # False: no validation split; epochs are judged on training metrics
    drop_last = False                   # drop a short last batch (contrastive losses need negatives)
    per_sample_loss = True              # a batch's loss is the mean over its samples, so it may go through in chunks
                                        # (with each chunk's loss weighted by its share of the batch)
    stopped_message = N_("stopped by the user; the best checkpoint so far is kept")
    modality = "image"                  # what a sample is: "image" (decoded, cached, augmented) or "text" (token ids)

    def check(self, config: RunConfig) -> None:
        """Refuse this technique's bad parameters with a ValueError (called when a run or job starts)."""

    def data(self, config: RunConfig, run, resume: bool, emit) -> Data:
        """Read the data, write (or on resume re-read) the run's split.json, return the samples."""
        raise NotImplementedError

    def build(self, config: RunConfig, data: Data) -> nn.Module:
        """The model, a ``TransferNet``-shaped module (``.body`` and ``.head``)."""
        raise NotImplementedError

    def preprocessing(self, config: RunConfig) -> Preprocessing | None:
        """The input preprocessing the model is saved with: the backbone's, at the config's image size."""
        from core.models import backbones

        return backbones.preprocessing_for(config)

    def samples(self, config: RunConfig, data: Data, pre, emit):
        """(training, validation, un-augmented training) datasets of (input, {target: row}) pairs, or None for
        the loop's own image datasets over the decode-once cache (the default)."""
        return None

    def prepare(self, x: torch.Tensor, pre) -> torch.Tensor:
        """A batch on the device -> the body's input: images are normalised by the preprocessing's mean/std."""
        from core.data import datasets

        return datasets.normalize(x, pre)

    def train_transform(self, pre: Preprocessing, config: RunConfig):
        """uint8 CHW square -> the training view(s) of one image."""
        from core.data import datasets

        return datasets.train_transform(pre, config if config.augment == "custom" else config.augment)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A loader batch -> the model's input batch (identity except for multi-view techniques)."""
        return x

    def loss(self, out, y: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """(mean loss over the batch, numbers summed over the epoch for ``train_metrics``)."""
        raise NotImplementedError

    def step_metrics(self, nums: dict[str, float]) -> dict:
        """Numbers of one training step worth charting live (besides the loss); none by default."""
        return {}

    def train_metrics(self, sums: dict[str, float]) -> dict:
        """Epoch training metrics from the summed batch numbers (besides train_loss, which the loop keeps)."""
        return {}

    def collect(self, out, y: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-sample rows of one validation batch; the loop concatenates (and gathers under DDP) them."""
        raise NotImplementedError

    def metrics(self, rows: dict[str, torch.Tensor]) -> dict:
        """Validation metrics from the collected rows: at least ``val_loss`` and ``val_acc``."""
        raise NotImplementedError

    def score(self, config: RunConfig, metrics: dict) -> float:
        """Higher is better: what early stopping and the best checkpoint watch."""
        if config.early_stopping_metric == "val_loss":
            return -metrics["val_loss"]
        return metrics["val_acc"]

    def card(self, config: RunConfig, pre: Preprocessing, metrics: dict) -> dict:
        """The model card saved with the best weights."""
        raise NotImplementedError

    def export_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The best weights as saved (the whole model by default)."""
        return state

    def result(self, best_metrics: dict) -> dict:
        """Technique-specific fields of result.json and the end event."""
        return {}

    def warm_start(self, config: RunConfig, model: nn.Module, train: dict[str, torch.Tensor],
                   val: dict[str, torch.Tensor]) -> dict | None:
        """Before the first step of a fresh run with ``probe_init``: set the head from frozen-body features
        (rows under "_x" beside the targets); returns numbers for the 'probe' event, None when unsupported."""
        return None
