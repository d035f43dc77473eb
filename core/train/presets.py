"""Training recipes: quick, balanced and best, fitted to a dataset, this machine and a time budget.

``plan()`` reads the dataset (class counts, image sides), measures how fast the chosen backbone runs here
(a few images forward, and backward where layers learn), and fills RunConfig fields with one sentence of
reason each. Every recipe starts from the linear-probe warm start (core.train.probe: the head trained to
convergence on frozen features), then fine-tunes the last layer groups with discriminative learning rates
where the budget allows — "linear probe, then fine-tune" (Kumar et al. 2022) and fastai's ``fine_tune``.
Explicit overrides win over every choice. ``suggest()`` is the torch-free part the Layers page shows.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from core.config import PRESETS, progressive_side
from core.i18n import _, ngettext
from core.train import wise
from core.train.measure import DECODE_S, dataset_stats, throughput

DEFAULT_BUDGET_S = {"quick": 60.0, "balanced": 300.0, "best": 1200.0}  # sized for a 2-core CPU; a GPU does more
MAX_EPOCHS = {"quick": 5, "balanced": 6, "best": 12}
PROGRESSIVE = 0.75  # fine-tuning recipes start at 3/4 of the image side (progressive resizing; see README "Measured")
HEAD_ONLY_BELOW = 30        # images in the smallest class under which no body layer learns
ALL_FROM = 500              # images in the smallest class from which every layer learns
SETUP_S = 4.0               # process start, model build, first batches: measured order of magnitude


@dataclass
class Plan:
    """A recipe for one dataset: RunConfig fields, a reason per field, the expected and allowed seconds."""

    preset: str
    fields: dict
    reasons: dict
    expected_s: float
    budget_s: float
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The app's and the CLI's view: preset, fields, reasons, expected_s, budget_s."""
        return {"preset": self.preset, "fields": dict(self.fields), "reasons": dict(self.reasons),
                "expected_s": self.expected_s, "budget_s": self.budget_s}


# --- torch-free suggestions (services.recommend shows them on the Layers and Train pages) ------------

def suggest_layers(counts: dict[str, int]) -> tuple[str, str]:
    """(trainable, reason) from the smallest class."""
    if not counts:
        return "head", _("no data yet: start with the head only")
    smallest = min(counts.values())
    if smallest < HEAD_ONLY_BELOW:
        return "head", (_("the smallest class has {smallest} images: with so few, only the head learns (on top of "
                          "a linear probe) so the pretrained features are not overwritten").format(
                            smallest=smallest))
    if smallest < ALL_FROM:
        return "last-2", (_("the smallest class has {smallest} images: the last two layer groups and the head "
                            "fine-tune, the rest keeps its pretrained features").format(smallest=smallest))
    return "all", _("the smallest class has {smallest} images: enough to fine-tune every layer").format(
                      smallest=smallest)


def suggest_image_size(sides: list[int], native: int = 224) -> tuple[int, str]:
    """(image_size, reason): the images' median shorter side rounded up to a multiple of 32, in 64..native."""
    if not sides:
        return native, _("the backbone's native {native} px").format(native=native)
    median = statistics.median(sides)
    size = min(native, max(64, 32 * math.ceil(median / 32)))
    if size >= native:
        return native, _("your images (median side {median:.0f} px) are at least the backbone's native {native} px").format(
                           median=median, native=native)
    return size, (_("your images are small (median side {median:.0f} px): {size} px keeps their detail without "
                    "paying for upsampled pixels that carry none").format(median=median, size=size))


def suggest_augment(n_train: int, fine_tune: bool) -> tuple[str, str]:
    """(augment, reason) by data size; head-only recipes go without, so features are computed once."""
    if not fine_tune:
        return "none", _("only the head learns: un-augmented images are embedded once, so epochs cost almost "
                         "nothing")
    if n_train < 2000:
        return "light", _("{n_train} training images: flips and crops add variety without distorting the classes").format(
                            n_train=n_train)
    return "strong", _("{n_train} training images: enough to profit from strong augmentation").format(
                         n_train=n_train)


def suggest(counts: dict[str, int], sides: list[int] | None = None, native: int = 224) -> dict:
    """Layers, image size, augmentation and epochs for the Layers/Train pages, each with its reason."""
    trainable, why_layers = suggest_layers(counts)
    size, why_size = suggest_image_size(sides or [], native)
    n_train = int(sum(counts.values()) * 0.8)
    augment, why_aug = suggest_augment(n_train, trainable != "head")
    epochs = 5 if trainable == "head" else 4
    why_epochs = (_("head epochs on cached features after the probe fit cost almost nothing") if trainable == "head"
                  else _("1 probe fit plus a few fine-tuning epochs, as fastai's fine_tune does"))
    return {"trainable": trainable, "augment": augment, "reason": why_layers, "image_size": size,
            "image_size_reason": why_size, "epochs": epochs, "epochs_reason": why_epochs,
            "augment_reason": why_aug}


def expected_seconds(fields: dict, stats: dict, rates: tuple[float, float]) -> float:
    """Seconds a run of ``fields`` should take: setup, decoding, the probe's embedding pass, the epochs."""
    fwd, trn = rates
    n_all, n_train, n_val = stats["n"], stats["n_train"], stats["n_val"]
    head_only = fields.get("trainable", "head") == "head"
    cached = head_only and fields.get("augment") == "none" and fields.get("cache_features", True)
    seconds = SETUP_S + n_all * stats.get("decode_s", DECODE_S)
    if fields.get("probe_init") or cached:
        seconds += n_all / fwd + 1.0  # one embedding pass (shared by the probe and cached epochs) + the fit
    epochs = int(fields.get("epochs", 5))
    if cached:
        return seconds + 0.05 * epochs
    frozen = int(fields.get("unfreeze_after", 0)) if not head_only else epochs
    full = int(fields.get("image_size") or 224)
    # progressive resizing: an epoch's training pass costs in proportion to its pixels; validation is at full size
    area = [((progressive_side(float(fields.get("progressive_resize", 1.0)), epochs, full, e) or full) / full) ** 2
            for e in range(epochs)]
    mixes = len(wise.SHARES) * n_val / fwd if fields.get("wise_ft") and not head_only else 0.0  # validated once each
    return (seconds + mixes + sum(a * n_train / fwd + n_val / fwd for a in area[:frozen])
            + sum(a * n_train / trn + n_val / fwd for a in area[frozen:]))


# --- the recipes ----------------------------------------------------------------------------------

def _backbone(preset: str) -> tuple[str, str]:
    """(backbone, reason): Lite0 for speed; the strongest bundled Lite for "best"."""
    from core.models import backbones

    if preset == "best":
        for name in ("efficientnet_lite2", "efficientnet_lite1"):
            if backbones.known(name) and backbones.weights_status(name) == "bundled":
                return name, (_("{name}: the most accurate body that works offline (ImageNet top-1 {top1}%), "
                                "slower than Lite0").format(
                                  name=backbones.get(name).title.split(' (')[0], top1=backbones.get(name).top1))
    return "efficientnet_lite0", _("EfficientNet-Lite0: small, fast on a CPU, ImageNet weights work offline")


def _recipe(preset: str, stats: dict) -> tuple[dict, dict]:
    """Every field but the epochs, with reasons (the epochs depend on the measured speed)."""
    from core.models import backbones

    backbone, why_backbone = _backbone(preset)
    native = backbones.get(backbone).preprocessing.crop_size
    size, why_size = suggest_image_size(stats["sides"], native)
    if preset == "quick":
        trainable, why_layers = "head", _("quick: only the head learns, on features computed once")
    else:
        trainable, why_layers = suggest_layers(stats["counts"])
        if preset == "best" and trainable == "last-2":
            trainable, why_layers = "last-3", _("the smallest class has {smallest} images: the last three layer "
                                                "groups and the head fine-tune, the rest keeps its pretrained "
                                                "features").format(smallest=min(stats["counts"].values()))
    augment, why_aug = suggest_augment(stats["n_train"], trainable != "head")
    tune = trainable != "head"
    f = {"preset": preset, "backbone": backbone, "image_size": size, "trainable": trainable, "augment": augment,
         "probe_init": True, "label_smoothing": 0.1, "optimizer": "adamw", "cache_features": True, "body_eval": tune,
         "lr": 3e-4, "lr_decay": 0.5 if tune else 1.0,
         "scheduler": "onecycle" if tune else "cosine", "unfreeze_after": 1 if preset == "best" and tune else 0,
         "unfreeze_mode": "gradual" if preset == "best" and tune else "all",
         "progressive_resize": PROGRESSIVE if tune else 1.0, "wise_ft": tune}
    r = {"backbone": why_backbone, "image_size": why_size, "trainable": why_layers, "augment": why_aug,
         "probe_init": _("the head starts as a logistic regression fitted on the frozen features (a linear "
                         "probe), so training starts at least as good as the simplest honest baseline"),
         "label_smoothing": _("0.1: softer targets make a small dataset's model less over-confident"),
         **_recipe_reasons(tune, gradual=preset == "best" and tune)}
    return f, r


def _recipe_reasons(tune: bool, gradual: bool) -> dict:
    """The reasons of the fields that differ between fine-tuning and head-only recipes."""
    return {"body_eval": (_("on: fine-tuned layers keep their pretrained BatchNorm statistics and run without "
                            "dropout, so a small dataset's batches do not pull the features away from the "
                            "probe's")) if tune else _("off: no body layer learns"),
            # measured on digits: 1e-3 pulled a probe-fitted model from 0.90 to 0.45 validation accuracy in one epoch
            "lr": (_("3e-4 for the head, less toward the input: a probe-fitted head needs small steps, larger ones "
                     "undo it (the LR finder on this page can refine it)") if tune else
                   _("3e-4: the probe already fitted the head, so the epochs only polish it")),
            "lr_decay": (_("0.5: each layer group toward the input learns at half the rate of the one above "
                           "(discriminative learning rates), so general features change least")) if tune else
                        _("1: only the head learns"),
            "scheduler": (_("one-cycle: a warm-up protects the pretrained features, then the rate anneals")
                          if tune else _("cosine: the rate anneals to zero so the last epoch settles")),
            "progressive_resize": (_("{fraction:g}: the first epoch trains on images at {percent} of the side, "
                                     "growing to full size by the last epoch (progressive resizing): early epochs "
                                     "cost a fraction of the pixels, so more epochs fit the budget").format(
                                       fraction=PROGRESSIVE, percent=f"{PROGRESSIVE:.0%}") if tune else
                                   _("off: head-only epochs are cheap at full size")),
            "wise_ft": (_("on: at the end the fine-tuned weights are also tried mixed with the starting ones "
                          "(pretrained body, probe head); a mix is kept only when it scores better on validation "
                          "(WiSE-FT: keeps more of what the pretrained body knew, which helps on new images)")
                        if tune else _("off: no body layer learns")),
            "unfreeze_after": (_("1 head epoch on augmented images, then one more layer group per epoch (gradual "
                                 "unfreezing)")) if gradual else
                              _("0: the probe fit replaces the frozen warm-up epoch")}


def _fit_epochs(preset: str, fields: dict, stats: dict, rates, budget: float) -> int:
    """The most epochs (up to the preset's maximum) whose expected time stays within 90% of the budget; 0 if none."""
    for e in range(MAX_EPOCHS[preset], 0, -1):
        if expected_seconds({**fields, "epochs": e}, stats, rates) <= 0.9 * budget:
            return e
    return 0


def plan(data_dir, preset: str = "balanced", time_budget_s: float | None = None, device: str = "auto",
         overrides: dict | None = None) -> Plan:
    """The preset's RunConfig fields for this dataset, machine and budget; ``overrides`` win field by field."""
    if preset not in PRESETS:
        raise ValueError(_("preset must be one of {names}; got {preset!r}").format(
                             names=', '.join(PRESETS), preset=preset))
    overrides = dict(overrides or {})
    stats = dataset_stats(str(data_dir))
    budget = float(time_budget_s or overrides.get("time_budget_s") or DEFAULT_BUDGET_S[preset])
    fields, reasons = _recipe(preset, stats)
    if preset == "best" and "backbone" not in overrides:
        fields, reasons = _choose_body(str(data_dir), fields, reasons, stats, budget, device, overrides)
    fields.update({k: v for k, v in overrides.items() if k != "epochs"})
    if "image_size" not in overrides and "backbone" in overrides:  # the user's body: sized for its own input
        fields["image_size"], reasons["image_size"] = suggest_image_size(stats["sides"], _native(fields))
    fields, reasons, rates, epochs = _fit(preset, fields, reasons, stats, budget, device, overrides)
    native = _native(fields)
    if "image_size" not in overrides and fields["image_size"] < native:
        fields, reasons, rates, epochs = _choose_size(preset, (fields, reasons, rates, epochs), native, stats,
                                                      budget, device, overrides)
    if preset != "quick" and fields["trainable"] != "head" and "lr" not in overrides:
        fields, reasons = _with_found_lr(str(data_dir), fields, reasons, stats, rates, budget, device, epochs)
    elif preset == "quick" and "lr" not in overrides:
        reasons["lr"] = _("{reason}; the quick recipe skips the LR finder: it is meant to finish in about a "
                          "minute, and the probe has already fitted the head").format(reason=reasons["lr"])
    reasons["epochs"] = _why_epochs(epochs, preset, budget)
    fields["epochs"] = int(overrides.get("epochs", max(epochs, 1)))
    if fields.get("unfreeze_after", 0) >= fields["epochs"]:
        fields["unfreeze_after"] = 0
    fields["time_budget_s"] = budget
    reasons["time_budget_s"] = (_("{budget:g} s: training stops when the next epoch would not fit, keeping the "
                                  "best weights").format(budget=budget))
    if "epochs" in overrides and not (time_budget_s or "time_budget_s" in overrides):
        # the budget only served to choose the epochs: a user who chose them gets all of them
        fields["time_budget_s"] = 0.0
        reasons["time_budget_s"] = _("off: you set the epochs (give a time budget to cap the run)")
    reasons.update({k: _("set by you") for k in overrides})
    expected = expected_seconds(fields, stats, rates)
    return Plan(preset, fields, reasons, round(expected, 1), budget, {**stats, "rates": rates})


BODY_CV_SHARE = 0.1   # embedding the training images with both bodies may take at most this share of the budget
BODY_CV_FOLDS = 5     # folds of the cross-validated probe (fewer when the smallest class has fewer training images)
# The stronger ImageNet body keeps its place unless Lite0's cross-validated probe beats it by more than this, so
# ties (sets both bodies separate perfectly) keep it. The estimate itself moved by 2.5 points between fold seeds on
# 240 digits (0.825-0.850, a one-off script): a close call can go either way.
BODY_CV_MARGIN = 0.01
_BODIES: dict[tuple, dict[str, float]] = {}  # (data, images, split, device) -> {backbone: accuracy, "folds": k}


def _choose_body(data: str, fields: dict, reasons: dict, stats: dict, budget: float, device: str,
                 overrides: dict) -> tuple[dict, dict]:
    """The "best" recipe's body: its stronger bundled one, or Lite0 when a linear probe cross-validated on the
    training images scores clearly higher with Lite0's features. ImageNet accuracy does not rank bodies for every
    dataset: on scikit-learn's 8-px digits, upsampled, Lite0's probe scored 0.677 on 400 held-out digits where
    Lite2's scored 0.640 (a one-off script on benchmarks/bench_quality.py's digits split and test set). Skipped,
    with the reason, when a class is too small to cross-validate or when embedding the training images twice
    would take more than ``BODY_CV_SHARE`` of the budget."""
    from core.models import backbones

    strong, light = fields["backbone"], "efficientnet_lite0"
    if strong == light:
        return fields, reasons
    fields, reasons = dict(fields), dict(reasons)
    smallest = min(stats["counts"].values()) if stats["counts"] else 0
    folds = min(BODY_CV_FOLDS, int(smallest * (stats["n_train"] / max(stats["n"], 1))))
    if folds < 2:
        reasons["backbone"] = _("{reason}; not compared with Lite0: the smallest class has too few training images "
                                "to cross-validate").format(reason=reasons["backbone"])
        return fields, reasons
    cost = sum(stats["n_train"] / throughput(b, backbones.get(b).preprocessing.crop_size, device)[0]
               for b in (strong, light))
    if cost > BODY_CV_SHARE * budget:
        reasons["backbone"] = _("{reason}; not compared with Lite0: embedding the training images with both "
                                "bodies would take about {cost} s, more than a tenth of the {budget} s "
                                "budget").format(reason=reasons["backbone"], cost=f"{cost:.0f}", budget=f"{budget:g}")
        return fields, reasons
    key = (data, stats["n"], overrides.get("val_fraction"), overrides.get("seed"), device)
    if key not in _BODIES:
        import torch

        from core.train import probe

        _BODIES[key] = {}
        for b in (strong, light):
            feats, labels, n_classes = _train_features(data, b, overrides, device)
            # the split's own count: a class's training images can be fewer than the estimate above
            folds = min(folds, int(torch.unique(labels, return_counts=True)[1].min()))
            _BODIES[key][b] = probe.cross_validated(feats, labels, n_classes, max(folds, 2))
        _BODIES[key]["folds"] = max(folds, 2)
    acc = _BODIES[key]
    folds = int(acc["folds"])
    names = {b: backbones.get(b).title.split(" (")[0] for b in (strong, light)}
    if acc[light] > acc[strong] + BODY_CV_MARGIN:
        fields["backbone"] = light
        fields["image_size"], reasons["image_size"] = suggest_image_size(stats["sides"], _native(fields))
        reasons["backbone"] = _("{light}: a linear probe cross-validated on your training images ({folds} folds) "
                                "scored {light_acc} with its features against {strong_acc} with {strong}'s, so the "
                                "smaller body fits this data better").format(
                                  light=names[light], folds=folds, light_acc=f"{acc[light]:.1%}",
                                  strong_acc=f"{acc[strong]:.1%}", strong=names[strong])
    else:
        reasons["backbone"] = _("{reason}; a linear probe cross-validated on your training images ({folds} folds) "
                                "scored {strong_acc} with its features against {light_acc} with Lite0's").format(
                                  reason=reasons["backbone"], folds=folds, strong_acc=f"{acc[strong]:.1%}",
                                  light_acc=f"{acc[light]:.1%}")
    return fields, reasons


def _train_features(data: str, backbone: str, overrides: dict, device: str):
    """(features, labels, classes) of the run's training split through ``backbone``'s pretrained body at its
    native size, centre-cropped as validation images are: the images the run will train on, decoded into the
    shared cache the run then reads."""
    import torch

    from core.config import RunConfig
    from core.data import datasets
    from core.models import backbones
    from core.train import feed, loop

    config = RunConfig(data=data, backbone=backbone, **{k: overrides[k] for k in ("val_fraction", "seed")
                                                          if k in overrides})
    split = datasets.split(datasets.load_index(data), config.val_fraction, config.seed)
    pre = backbones.preprocessing_for(config)
    dev = loop.pick_device(device)
    body = backbones.build_model(backbone, len(split.classes), pretrained=True).body.to(dev).eval()
    paths = [p for p, _ in split.train]
    cache, crop, feats = datasets.ImageCache(paths, pre), datasets.eval_transform(pre), []
    with torch.no_grad():
        for i in range(0, len(paths), feed.EMBED_BATCH):
            x = torch.stack([crop(cache.get(p)) for p in paths[i:i + feed.EMBED_BATCH]]).to(dev)
            feats.append(feed.body_features(body, datasets.normalize(x, pre)))
    return torch.cat(feats), torch.tensor([y for _, y in split.train]), len(split.classes)


def _native(fields: dict) -> int:
    from core.models import backbones

    return backbones.get(fields["backbone"]).preprocessing.crop_size


def _fit(preset: str, fields: dict, reasons: dict, stats: dict, budget: float, device: str,
         overrides: dict) -> tuple[dict, dict, tuple[float, float], int]:
    """(fields, reasons, rates, epochs) for ``fields`` at their image size: the epochs that fit the budget, and the
    fall-back to the head only when no fine-tuning epoch fits (unless the user chose the layers or epochs)."""
    fields, reasons = dict(fields), dict(reasons)
    rates = _rates(fields, device)
    epochs = _fit_epochs(preset, fields, stats, rates, budget)
    if not epochs and fields["trainable"] != "head" and not {"trainable", "epochs"} & set(overrides):
        one = expected_seconds({**fields, "epochs": 1}, stats, rates)
        fields.update(trainable="head", augment=overrides.get("augment", "none"), lr=overrides.get("lr", 3e-4),
                      lr_decay=1.0, scheduler=overrides.get("scheduler", "cosine"), unfreeze_after=0)
        reasons["trainable"] = (_("a budget of {budget:g} s leaves no room to fine-tune layers here (that run "
                                  "would take about {one:.0f} s): only the head learns").format(
                                    budget=budget, one=one))
        fields["body_eval"] = overrides.get("body_eval", False)
        fields["progressive_resize"] = overrides.get("progressive_resize", 1.0)
        head_only = _recipe_reasons(tune=False, gradual=False)  # the reasons of the fields just changed
        fields["wise_ft"] = overrides.get("wise_ft", False)
        reasons.update({k: head_only[k] for k in ("lr", "lr_decay", "scheduler", "unfreeze_after", "body_eval",
                                                  "progressive_resize", "wise_ft")})
        reasons["augment"] = suggest_augment(stats["n_train"], False)[1]
        rates = _rates(fields, device)
        epochs = _fit_epochs(preset, fields, stats, rates, budget)
    return fields, reasons, rates, epochs


UPSAMPLE_MIN_EPOCHS = 2  # an upsampled plan must keep at least this many of the small plan's epochs


def _choose_size(preset: str, small: tuple, native: int, stats: dict, budget: float, device: str,
                 overrides: dict) -> tuple:
    """The small-image plan, or the same recipe at the backbone's native size when that fits the budget.

    Pretrained features are strongest at the size they were trained at: on 8-px digits (digits-low in
    benchmarks/bench_quality.py) the recipes trained at 64 px reached 0.750 where a linear probe at 224 px reached
    0.833.
    Small images are upsampled when the measured throughput says the recipe still fits: the same layers learn
    and at least ``UPSAMPLE_MIN_EPOCHS`` (or all of the small plan's) epochs fit; otherwise, with many images or
    a tight budget, they stay small and the reason says why."""
    fields, reasons, epochs = small[0], small[1], small[3]
    up = _fit(preset, {**fields, "image_size": native}, reasons, stats, budget, device, overrides)
    n = stats["n"]
    if epochs and up[3] >= min(epochs, UPSAMPLE_MIN_EPOCHS) and up[0]["trainable"] == fields["trainable"]:
        up[1]["image_size"] = ngettext(
            "upsampled to {size} px: {n} image fits the budget at {size} px; pretrained features are stronger at "
            "their native size", "upsampled to {size} px: {n} images fit the budget at {size} px; pretrained "
            "features are stronger at their native size", n).format(size=native, n=n)
        return up
    reasons = dict(reasons)
    reasons["image_size"] = _("{reason}; {native} px would not fit the budget of {budget} s with these "
                              "layers").format(reason=reasons["image_size"], native=native, budget=f"{budget:g}")
    return fields, reasons, small[2], epochs


LR_FIND_STEPS = 30           # a short sweep: enough to see where the loss of a probe-fitted head starts to rise
LR_FIND_RANGE = (1e-6, 1e-1)  # the sweep's rates
LR_FIND_SHARE = 0.1          # the sweep may take at most this share of the time budget, else it is skipped
LR_FIND_RUN_SHARE = 0.5      # ... and at most this share of the run's expected time
# The rates a recipe accepts from the finder: on digits 1e-3 already pulled a probe-fitted model from 0.90 to 0.45
# validation accuracy in one epoch, and below 3e-5 a few epochs barely move the layers.
LR_LIMITS = (3e-5, 1e-3)
_FOUND: dict[tuple, dict] = {}  # (data, images, the fields the sweep depends on) -> the finder's result


def _with_found_lr(data: str, fields: dict, reasons: dict, stats: dict, rates: tuple[float, float], budget: float,
                   device: str, epochs: int = 0) -> tuple[dict, dict]:
    """The fine-tuning recipes' learning rate from a short LR-finder sweep (core.train.lr_finder) that starts from
    the probe-fitted head, kept within ``LR_LIMITS``; skipped, with the reason, when it would eat the budget."""
    from core.config import RunConfig, fields as config_fields

    fwd, trn = rates
    batch = int(fields.get("batch_size", RunConfig.batch_size))
    cost = stats["n_train"] / fwd + LR_FIND_STEPS * batch / trn
    fields, reasons = dict(fields), dict(reasons)
    if cost > LR_FIND_SHARE * budget:
        reasons["lr"] = _("{reason}; the LR finder is skipped: its sweep would take about {cost} s, more than a "
                          "tenth of the {budget} s budget").format(reason=reasons["lr"], cost=f"{cost:.0f}",
                                                                    budget=f"{budget:g}")
        return fields, reasons
    # a sweep that costs more than a good share of the run it informs is wasted work: on the 64 photo crops of
    # benchmarks/bench_quality.py it took ~60 s of planning for a 21-s run
    run_s = expected_seconds({**fields, "epochs": epochs or 1}, stats, rates)  # the plan's epochs
    if cost > LR_FIND_RUN_SHARE * run_s:
        reasons["lr"] = _("{reason}; the LR finder is skipped: its sweep would take about {cost} s, more than half "
                          "of the {run} s the run itself should take").format(reason=reasons["lr"], cost=f"{cost:.0f}",
                                                                              run=f"{run_s:.0f}")
        return fields, reasons
    known = {f.name for f in config_fields()}
    config = RunConfig(**{**{k: v for k, v in fields.items() if k in known}, "data": data, "device": device,
                          "time_budget_s": 0.0})
    key = (data, stats["n"], config.backbone, config.image_size, config.trainable, config.augment, config.lr_decay,
           config.label_smoothing, config.body_eval, config.batch_size, config.optimizer, config.seed, device)
    if key not in _FOUND:
        from core.train import lr_finder

        _FOUND[key] = lr_finder.lr_find(config, start_lr=LR_FIND_RANGE[0], end_lr=LR_FIND_RANGE[1],
                                        num_iter=LR_FIND_STEPS)
    found = _FOUND[key]["suggestion"]
    lo, hi = LR_LIMITS
    fields["lr"] = float(min(max(found, lo), hi))
    why = _("the LR finder (a {steps}-step sweep from the probe-fitted head) suggested {found}").format(
        steps=LR_FIND_STEPS, found=f"{found:.2g}")
    if found > hi:
        why = _("{why}, capped at {lr}: larger steps undo the probe-fitted head").format(why=why, lr=f"{hi:g}")
    elif found < lo:
        why = _("{why}, raised to {lr}: smaller steps barely move the layers in a few epochs").format(
            why=why, lr=f"{lo:g}")
    reasons["lr"] = _("{why}; layer groups toward the input learn less (lr_decay)").format(why=why)
    return fields, reasons


def _rates(fields: dict, device: str) -> tuple[float, float]:
    from core.models import backbones

    size = fields.get("image_size") or backbones.get(fields["backbone"]).preprocessing.crop_size
    return throughput(fields["backbone"], size, device, fields.get("trainable", "head"))


def _why_epochs(epochs: int, preset: str, budget: float) -> str:
    if not epochs:
        return _("even one epoch may not fit in {budget:g} s; the run stops at the budget with the best weights").format(
                   budget=budget)
    if epochs == MAX_EPOCHS[preset]:
        return _("{epochs}: the most this recipe uses; the time budget leaves room for all of them").format(
                   epochs=epochs)
    return _("{epochs}: as many as fit in the {budget:g} s budget at the speed measured on this machine").format(
               epochs=epochs, budget=budget)


def describe(p: Plan) -> str:
    """The plan as text for a terminal: each choice, its value and why, then the expected time."""
    lines = [_("preset {preset}: expected about {duration} (budget {budget})").format(
                 preset=p.preset, duration=_duration(p.expected_s), budget=_duration(p.budget_s))]
    for k in sorted(p.reasons):
        lines.append(f"  {k:<16} {str(p.fields.get(k, '')):<20} {p.reasons[k]}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return _("{m} min {s} s").format(m=m, s=s) if m else _("{s} s").format(s=s)


# --- after a run: was it finished? -------------------------------------------------------------------

RISING = 0.005      # validation accuracy that rose by more than this in the last epoch was still rising
UNCONVERGED = 0.05  # a head whose training loss fell by more than this share in the last epoch had not converged


def unfinished(events: list[dict]) -> dict | None:
    """Whether a finished classifier run stopped while still improving: {"message", "more_epochs"} or None."""
    epochs = [e for e in events if e.get("type") == "epoch" and "val_acc" in e]
    end = next((e for e in reversed(events) if e.get("type") == "end"), {})
    if end.get("status") != "finished" or not epochs or any(e.get("type") == "early_stop" for e in events):
        return None
    n = len(epochs)
    more = min(20, max(2, n // 2))
    last, earlier = epochs[-1], epochs[:-1]
    if end.get("stopped_by") == "time_budget":
        return {"more_epochs": more, "message": _("training stopped at the time budget after epoch {epoch}; "
                                                  "{more} more epochs may still improve the model").format(
                                                    epoch=last['epoch'], more=more)}
    if earlier and last["val_acc"] > max(e["val_acc"] for e in earlier) + RISING:
        return {"more_epochs": more, "message": _("validation accuracy was still rising at the last epoch "
                                                  "({before:.1%} → {after:.1%})").format(
                                                    before=earlier[-1]['val_acc'], after=last['val_acc'])}
    start = next((e for e in events if e.get("type") == "start"), {})
    head_only = start.get("trainable_groups") == ["head"]
    if head_only and earlier and earlier[-1]["train_loss"] > 0 and \
            (earlier[-1]["train_loss"] - last["train_loss"]) / earlier[-1]["train_loss"] > UNCONVERGED:
        return {"more_epochs": more, "message": _("the head had not converged: its training loss still fell "
                                                  "{before:.3f} → {after:.3f} in the last epoch").format(
                                                    before=earlier[-1]['train_loss'], after=last['train_loss'])}
    return None
