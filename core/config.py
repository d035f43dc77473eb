"""One typed config for a run: built by the UI or the CLI, saved with every checkpoint."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.i18n import N_, _

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "onecycle", "constant")
AUGMENTS = ("none", "light", "strong", "custom")  # presets are bundles of the aug_* fields (core.data.augment)
DEVICES = ("auto", "cpu", "cuda", "mps")
EARLY_STOPPING_METRICS = ("val_acc", "val_loss")
UNFREEZE_MODES = ("all", "gradual")
TECHNIQUES = ("classifier", "distill", "multitask", "simclr", "text",  # plug-ins of the one loop: core.techniques
              "text_distill", "text_multitask", "text_pretrain")
TEXT_TECHNIQUES = ("text", "text_distill", "text_multitask", "text_pretrain")  # those that train text backbones
PRESETS = ("quick", "balanced", "best")  # recipes of core.train.presets
_TRAINABLE_RE = re.compile(r"^(head|all|last-\d+)$")


def _choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(_("{field} must be one of {choices}; got {value}").format(
            field=name, choices=", ".join(map(str, choices)), value=repr(value)))


MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")


def _check_tracking(c) -> None:
    """Experiment-tracking fields: values only; a missing package is a warning at start (core.train.tracking)."""
    if not isinstance(c.tensorboard, bool):
        raise ValueError(_("{field} must be true or false; got {value}").format(field="tensorboard",
                                                                                value=repr(c.tensorboard)))
    uri = c.mlflow_uri
    if not isinstance(uri, str):
        raise ValueError(_("mlflow_uri must be a string (empty = MLflow off); got {value}").format(value=repr(uri)))
    if uri:
        from urllib.parse import urlsplit

        scheme = "databricks" if uri == "databricks" else urlsplit(uri).scheme.split("+")[0].lower()
        if scheme not in MLFLOW_SCHEMES or any(ch.isspace() for ch in uri):
            raise ValueError(_("mlflow_uri must be empty (MLflow off) or a tracking URI starting with {schemes}; got "
                               "{value} — e.g. http://127.0.0.1:5000 for `mlflow server`, or "
                               "file:///absolute/folder").format(schemes=", ".join(s + ":" for s in MLFLOW_SCHEMES),
                                                                 value=repr(uri)))
        if scheme in ("http", "https") and not urlsplit(uri).hostname:
            raise ValueError(_("mlflow_uri {value} names no host; write it as http://HOST:PORT, e.g. "
                               "http://127.0.0.1:5000").format(value=repr(uri)))
    if not isinstance(c.mlflow_experiment, str) or not c.mlflow_experiment.strip():
        raise ValueError(_("mlflow_experiment must be a non-empty name (default transfer-studio); got {value}").format(
            value=repr(c.mlflow_experiment)))


POLICIES = ("none", "randaugment", "trivialaugment")



@dataclass(frozen=True)
class AugmentSettings:
    """What happens to a training image, in order: rotate, crop, flip, colour jitter, policy."""

    flip: bool = False          # random horizontal flip (p = 0.5)
    rotation: float = 0.0       # random rotation within +-degrees, 0..180; 0 = off
    color_jitter: float = 0.0   # brightness/contrast/saturation/hue strength, 0..1; 0 = off
    scale_min: float = 1.0      # random-resized-crop minimum area fraction, 0.05..1; 1 = centre crop
    policy: str = "none"        # "none" | "randaugment" | "trivialaugment"

    def validate(self) -> "AugmentSettings":
        """Raise ValueError naming the setting, its valid range and the value that arrived."""
        if not isinstance(self.flip, bool):
            raise ValueError(_("{field} must be true or false; got {value}").format(field="aug_flip",
                                                                                    value=repr(self.flip)))
        checks = (("aug_rotation", self.rotation, 0.0, 180.0),
                  ("aug_color_jitter", self.color_jitter, 0.0, 1.0),
                  ("aug_scale_min", self.scale_min, 0.05, 1.0))
        for name, value, lo, hi in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise ValueError(_("{field} must be a number in [{min}, {max}]; got {value}").format(
                    field=name, min=f"{lo:g}", max=f"{hi:g}", value=repr(value)))
        if self.policy not in POLICIES:
            raise ValueError(_("{field} must be one of {choices}; got {value}").format(
                field="aug_policy", choices=", ".join(POLICIES), value=repr(self.policy)))
        return self

    @property
    def is_identity(self) -> bool:
        """True when training images are only centre-cropped (nothing random happens)."""
        return (not self.flip and self.rotation == 0 and self.color_jitter == 0
                and self.scale_min >= 1.0 and self.policy == "none")

    def to_config_fields(self) -> dict[str, Any]:
        """The matching ``aug_*`` RunConfig fields (to prefill the custom form from a preset)."""
        return {f"aug_{k}": v for k, v in dataclasses.asdict(self).items()}


@dataclass
class RunConfig:
    """Everything that defines a training run."""

    data: str = ""                    # dataset: a folder or a .zip (ingested into the workspace)
    backbone: str = "efficientnet_lite0"  # a name from core.models.backbones.names()
    pretrained: bool = True           # False = random initialisation (a baseline)
    image_size: int = 0               # network input side in pixels; 0 = the backbone's default (224)
    trainable: str = "head"           # "head" | "last-N" (N backbone groups + head) | "all"
    trainable_groups: list[str] | None = None  # explicit group names; overrides `trainable`
    epochs: int = 5                   # >= 1
    batch_size: int = 32              # >= 1
    lr: float = 1e-3                  # head learning rate, > 0
    lr_decay: float = 1.0             # discriminative LRs: each group toward the stem gets lr * decay^k, (0, 1]
    optimizer: str = "adamw"          # "adamw" | "sgd" (momentum 0.9)
    momentum: float = 0.9             # SGD only
    weight_decay: float = 1e-4        # >= 0
    scheduler: str = "cosine"         # "cosine" | "onecycle" | "constant"
    augment: str = "light"            # "none" | "light" | "strong" | "custom" (= the aug_* fields below)
    aug_flip: bool = True             # custom only: random horizontal flip
    aug_rotation: float = 0.0         # custom only: random rotation within +-degrees, 0..180
    aug_color_jitter: float = 0.0     # custom only: colour jitter strength, 0..1 (0 = off)
    aug_scale_min: float = 0.6        # custom only: random-resized-crop minimum scale, 0.05..1 (1 = centre crop)
    aug_policy: str = "none"          # custom only: "none" | "randaugment" | "trivialaugment"
    label_smoothing: float = 0.0      # [0, 1)
    class_weights: bool = False       # weight the loss by inverse class frequency
    grad_clip: float = 0.0            # max gradient norm; 0 = off
    val_fraction: float = 0.2         # (0, 0.9]; ignored when the data holds its own val split
    seed: int = 0                     # seeds the split, the initialisation and the batch order
    deterministic: bool = False       # torch.use_deterministic_algorithms
    cache_features: bool = True       # head-only + no augmentation: embed each image once
    cached_views: int = 0             # head-only + augmentation: embed this many augmented views of each image once, epochs draw one at random (2-4 is typical); 0 = augment every epoch through the body
    progressive_resize: float = 1.0   # first epoch's image side as a fraction of image_size, growing to full size by the last epoch (fastai's progressive resizing), 0.25..1; 1 = off
    early_stopping_patience: int = 0  # epochs without val improvement before stopping; 0 = off
    early_stopping_min_delta: float = 0.0  # >= 0: how much the metric must improve to count
    early_stopping_metric: str = "val_acc"  # "val_acc" | "val_loss": watched by early stopping and the best checkpoint
    unfreeze_after: int = 0           # gradual unfreezing: head-only epochs first, then the plan's groups; 0 = off
    unfreeze_mode: str = "all"        # "all" (at once) | "gradual" (one more group per epoch, toward the stem)
    unfreeze_lr_factor: float = 0.1   # (0, 1]: body groups learn at lr * factor (times lr_decay^k)
    body_eval: bool = False           # learning body layers run in eval mode: BatchNorm keeps its statistics, no dropout/stochastic depth
    probe_init: bool = False          # fresh classifier runs: fit the head as a logistic regression on the frozen features first
    wise_ft: bool = False             # fine-tuning runs: at the end, try the weights mixed with the starting ones (pretrained body, probe head), a quarter, half and three quarters fine-tuned, and keep a mix that scores better on validation (WiSE-FT)
    time_budget_s: float = 0.0        # seconds for the whole run (stops with the best weights when the next epoch would not fit); 0 = off
    preset: str = ""                  # "" (none recorded) | "custom" (chosen by hand) | "quick" | "balanced" | "best": the recipe that filled this config
    amp: bool = True                  # mixed precision on CUDA (bf16 where supported)
    channels_last: bool = True        # NHWC memory format (CUDA and CPU/oneDNN); False = contiguous NCHW
    compile: bool = False             # torch.compile the model
    sync_bn: bool = False             # under torchrun on CUDA: SyncBatchNorm across GPUs (ignored on CPU)
    num_workers: int = 0              # DataLoader workers
    device: str = "auto"              # "auto" | "cpu" | "cuda" | "mps"
    name: str = ""                    # optional human label for the run
    tensorboard: bool = False         # also write TensorBoard event files to <run_dir>/tensorboard/
    mlflow_uri: str = ""              # MLflow tracking URI: http(s)://host:port, file:///dir, sqlite:///x.db; "" = off
    mlflow_experiment: str = "transfer-studio"  # MLflow experiment the runs go to (created when missing)
    dataset: str = ""                 # the dataset's display name in listings and cards; "" = the data folder's name
    technique: str = "classifier"     # "classifier" | "distill" | "multitask" | "simclr" | "text" | "text_distill" | "text_multitask" | "text_pretrain": what the loop trains
    # technique "text": a sentence encoder from core.models.text_backbones on a CSV/TSV/JSONL of text,label
    max_length: int = 128             # text: tokens kept per text (longer texts are cut), 8..512
    # technique "distill": a finished classifier teaches this run's (smaller) student
    teacher: str = ""                 # distill: the teacher, a run id / run folder / exported .safetensors or .pt
    distill_alpha: float = 0.5        # distill: weight of the true-label loss in [0, 1]; 1 - alpha goes to the teacher
    distill_temperature: float = 4.0  # distill: softening temperature T > 0 (typical 2-8)
    # technique "multitask": one head per label column of a CSV
    tasks: list[str] | None = None    # multitask: label columns to learn; None = every label column of the CSV
    task_weights: list[float] | None = None  # multitask: loss weight per task (same order as tasks), >= 0; None = 1 each
    # technique "simclr": self-supervised adaptation of the backbone to unlabelled images
    sources: list[str] | None = None  # simclr: image folders / .zips / sample:NAME to adapt on; None = data
    simclr_temperature: float = 0.2   # simclr: NT-Xent temperature > 0 (SimCLR uses 0.1-0.5)
    simclr_projection_dim: int = 128  # simclr: width of the projection head's output, 8..4096
    # technique "text_pretrain": continued masked-language-model pretraining on unlabelled text
    mlm_probability: float = 0.15     # text_pretrain: share of tokens masked per text (BERT's 0.15), 0.05..0.5

    def validate(self) -> "RunConfig":
        """Raise ValueError naming the field, the valid choices and the value that arrived."""
        _check_types(self)
        _choice("technique", self.technique, TECHNIQUES)
        # Whether the backbone exists is the registry's to say: core.models.backbones.check(config).
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(_("backbone must be a backbone name; got {value}").format(value=repr(self.backbone)))
        if self.trainable_groups is None and not _TRAINABLE_RE.match(str(self.trainable)):
            raise ValueError(_("trainable must be one of head, last-N (e.g. last-2), all; got {value}").format(
                value=repr(self.trainable)))
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("augment", self.augment, AUGMENTS)
        AugmentSettings(self.aug_flip, self.aug_rotation, self.aug_color_jitter, self.aug_scale_min,
                        self.aug_policy).validate()
        _choice("device", self.device, DEVICES)
        for name, lo in (("epochs", 1), ("batch_size", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(_("{field} must be an integer >= {min}; got {value}").format(field=name, min=lo,
                                                                                              value=repr(v)))
        if not (isinstance(self.num_workers, int) and self.num_workers >= 0):
            raise ValueError(_("{field} must be an integer >= {min}; got {value}").format(
                field="num_workers", min=0, value=repr(self.num_workers)))
        if not (isinstance(self.image_size, int) and (self.image_size == 0 or 32 <= self.image_size <= 1024)):
            raise ValueError(_("image_size must be 0 (backbone default) or 32..1024; got {value}").format(
                value=repr(self.image_size)))
        if not self.lr > 0:
            raise ValueError(_("{field} must be > 0; got {value}").format(field="lr", value=repr(self.lr)))
        if not 0 < self.lr_decay <= 1:
            raise ValueError(_("{field} must be in {range}; got {value}").format(field="lr_decay", range="(0, 1]",
                                                                                 value=repr(self.lr_decay)))
        if not 0 < self.val_fraction <= 0.9:
            raise ValueError(_("{field} must be in {range}; got {value}").format(
                field="val_fraction", range="(0, 0.9]", value=repr(self.val_fraction)))
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(_("{field} must be in {range}; got {value}").format(
                field="label_smoothing", range="[0, 1)", value=repr(self.label_smoothing)))
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(_("weight_decay and grad_clip must be >= 0"))
        if self.early_stopping_patience < 0:
            raise ValueError(_("{field} must be >= 0; got {value}").format(
                field="early_stopping_patience", value=repr(self.early_stopping_patience)))
        if self.early_stopping_min_delta < 0:
            raise ValueError(_("{field} must be >= 0; got {value}").format(
                field="early_stopping_min_delta", value=repr(self.early_stopping_min_delta)))
        _choice("early_stopping_metric", self.early_stopping_metric, EARLY_STOPPING_METRICS)
        _choice("unfreeze_mode", self.unfreeze_mode, UNFREEZE_MODES)
        if not (isinstance(self.unfreeze_after, int) and 0 <= self.unfreeze_after < self.epochs):
            raise ValueError(_("unfreeze_after must be an integer in 0..epochs-1 ({max}); got {value}").format(
                max=self.epochs - 1, value=repr(self.unfreeze_after)))
        if self.unfreeze_after and self.trainable == "head" and not self.trainable_groups:
            raise ValueError(_("unfreeze_after needs layer groups to unfreeze, but trainable is 'head'; "
                               "set trainable to last-N or all, or unfreeze_after to 0"))
        if not 0 < self.unfreeze_lr_factor <= 1:
            raise ValueError(_("{field} must be in {range}; got {value}").format(
                field="unfreeze_lr_factor", range="(0, 1]", value=repr(self.unfreeze_lr_factor)))
        if not (isinstance(self.cached_views, int) and 0 <= self.cached_views <= 16):
            raise ValueError(_("cached_views must be an integer in 0..16 (0 = off); got {value}").format(
                value=repr(self.cached_views)))
        if not 0.25 <= self.progressive_resize <= 1:
            raise ValueError(_("progressive_resize must be in [0.25, 1] (1 = off); got {value}").format(
                value=repr(self.progressive_resize)))
        if self.time_budget_s < 0:
            raise ValueError(_("time_budget_s must be >= 0 seconds (0 = no budget); got {value}").format(
                value=repr(self.time_budget_s)))
        _choice("preset", self.preset, ("", "custom") + PRESETS)
        if not (isinstance(self.max_length, int) and 8 <= self.max_length <= 512):
            raise ValueError(_("max_length must be an integer in 8..512 (tokens per text); got {value}").format(
                value=repr(self.max_length)))
        if not 0.05 <= self.mlm_probability <= 0.5:
            raise ValueError(_("mlm_probability must be in [0.05, 0.5] (BERT masks 0.15); got {value}").format(
                value=repr(self.mlm_probability)))
        _check_tracking(self)
        return self

    def to_dict(self) -> dict:
        """Plain JSON-friendly dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Build from a dict, rejecting unknown keys by name (configs saved before typed technique fields
        carried them in a free-form ``extra`` dict: those are read into the typed fields)."""
        if not isinstance(d, dict):
            raise ValueError(_("a config must be an object of field: value; got {type}").format(type=type(d).__name__))
        if "extra" in d:
            d = _from_legacy_extra(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(_("unknown config field(s) {fields}; valid fields: {valid}").format(
                fields=", ".join(unknown), valid=", ".join(sorted(known))))
        return cls(**d)

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        """Parse JSON text produced by to_json (or written by hand)."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(_("config is not valid JSON: {error}").format(error=e)) from None
        if not isinstance(d, dict):
            raise ValueError(_("config JSON must be an object of field: value"))
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """Read a config JSON file."""
        return cls.from_json(Path(path).read_text())


def progressive_side(fraction: float, epochs: int, full: int, epoch: int) -> int | None:
    """Progressive resizing (the ``progressive_resize`` field): the side of training images in ``epoch``
    (0-based), growing linearly from ``fraction * full`` to ``full`` at the last epoch, in steps of 8 px
    (at least 32); None = full size."""
    if fraction >= 1 or epochs < 2:
        return None
    frac = fraction + (1 - fraction) * epoch / (epochs - 1)
    side = max(32, int(round(full * frac / 8)) * 8)
    return side if side < full else None


def _expected(annotation: str) -> tuple[str, callable]:
    """(words for the expected type, a check) for a field's annotation as written in the class."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    optional_list = lambda kind: (lambda v: v is None or (isinstance(v, list)  # noqa: E731
                                                         and all(kind(x) for x in v)))
    table = {
        "str": (N_("a string"), lambda v: isinstance(v, str)),
        "bool": (N_("true or false"), lambda v: isinstance(v, bool)),
        "int": (N_("an integer"), lambda v: isinstance(v, int) and not isinstance(v, bool)),
        "float": (N_("a number"), number),
        "list[str] | None": (N_("a list of strings or null"), optional_list(lambda x: isinstance(x, str))),
        "list[float] | None": (N_("a list of numbers or null"), optional_list(number)),
    }
    return table[annotation]


def _check_types(c: RunConfig) -> None:
    """Wrong types are refused by field before any range check can trip over them ("0.01" is not a number)."""
    for f in dataclasses.fields(c):
        words, ok = _expected(str(f.type))
        value = getattr(c, f.name)
        if not ok(value):
            raise ValueError(_("{field} must be {expected}; got {value} ({type})").format(
                field=f.name, expected=_(words), value=repr(value), type=type(value).__name__))


def _from_legacy_extra(d: dict) -> dict:
    """A config dict from before the typed technique fields: ``extra`` read into them (owner is kept by the
    run folder, not the config)."""
    d = dict(d)
    extra = d.pop("extra") or {}
    if not isinstance(extra, dict):
        raise ValueError(_("extra must be an object (configs of older versions); got {value}").format(
            value=repr(extra)))
    moved = {"dataset": extra.get("dataset"), "technique": extra.get("technique"), "teacher": extra.get("teacher"),
             "distill_alpha": extra.get("alpha"), "distill_temperature": extra.get("temperature")
             if extra.get("technique") == "distill" else None,
             "tasks": extra.get("tasks"), "sources": extra.get("sources"),
             "simclr_temperature": extra.get("temperature") if extra.get("technique") == "simclr" else None,
             "simclr_projection_dim": extra.get("projection_dim")}
    weights = extra.get("task_weights")
    if isinstance(weights, dict):
        moved["task_weights"] = [float(weights[t]) for t in extra.get("tasks") or weights]
    for k, v in moved.items():
        if v is not None and k not in d:
            d[k] = v
    return d


def field_help() -> dict[str, str]:
    """Each field's comment from this file (allowed values and meaning), for CLI help texts."""
    import inspect

    out = {}
    for line in inspect.getsource(RunConfig).splitlines():
        m = re.match(r"\s+(\w+): [^=]+= (.+?)\s+# (.*)$", line)
        if m:
            out[m.group(1)] = f"{m.group(3)} (default {m.group(2)})"
    return out


def fields() -> list[dataclasses.Field]:
    """The config's fields, in order (the CLI derives its flags from these)."""
    return list(dataclasses.fields(RunConfig))
