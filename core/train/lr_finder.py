"""Learning-rate finder: an exponential sweep of the learning rate over the training split (fastai's lr_find).

The loss is recorded at each step while the rate grows from ``start_lr`` to ``end_lr``; the suggestion is
where the smoothed loss falls fastest. The model's weights, the RNG and the disk (except the image and
index caches) are left as they were.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn

from core.models import backbones
from core.data import datasets
from core.models import freezing
from core.train import feed, loop
from core.config import RunConfig
from core.i18n import _


def _suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The rate of steepest descent of the smoothed loss (against log lr), before its minimum; else min/10."""
    i_min = min(range(len(smoothed)), key=smoothed.__getitem__)
    if i_min >= 3:
        logs = [math.log10(v) for v in lrs]
        # Skip the first points: the smoothing's warm-up makes the earliest slope unreliable.
        lo = max(1, i_min // 10)
        slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(lo, i_min)]
        if slopes and min(slopes) < 0:
            return lrs[lo + min(range(len(slopes)), key=slopes.__getitem__)]
    return lrs[i_min] / 10


def _probe_head(model: nn.Module, split, cache, pre, config: RunConfig, device,
                rows: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Fit the head as the run will start it (``probe_init``: the linear probe on frozen features), so the sweep
    measures the rates that suit a probe-fitted head rather than a random one."""
    from core.train import probe

    if rows is None:  # fine-tuning sweeps train on augmented images: embed the plain ones once for the probe
        plain = datasets.CachedDataset(split.train, cache, datasets.eval_transform(pre))
        rows = feed.embed(model, loop._loader(plain, 64, False, config, device), pre, device)
    feats, labels = rows
    probe.warm_start(model.head, (feats, labels), (feats[:0], labels[:0]))


def lr_find(config: RunConfig, on_progress: Callable[[int, int], None] | None = None, start_lr: float = 1e-7,
            end_lr: float = 10.0, num_iter: int = 100, model: nn.Module | None = None,
            diverge_factor: float = 4.0, beta: float = 0.98) -> dict:
    """Sweep the learning rate exponentially; returns {'lrs', 'losses', 'suggestion', ...} (losses smoothed).
    With ``config.probe_init`` and no ``model`` given, the sweep starts from the probe-fitted head."""
    backbones.check(config.validate())
    if not 0 < start_lr < end_lr:
        raise ValueError(_("lr_find needs 0 < start_lr < end_lr; got start_lr={start_lr!r}, end_lr={end_lr!r}").format(
                             start_lr=start_lr, end_lr=end_lr))
    if not (isinstance(num_iter, int) and num_iter >= 5):
        raise ValueError(_("num_iter must be an integer >= 5; got {num_iter!r}").format(num_iter=num_iter))
    rng = torch.get_rng_state()
    loop.seed_everything(config.seed, config.deterministic)
    device = loop.pick_device(config.device)
    pre = backbones.preprocessing_for(config)
    split = datasets.split(datasets.load_index(config.data), config.val_fraction, config.seed)
    cache = datasets.ImageCache([p for p, _ in split.train], pre)

    own_model = model is None
    if own_model:
        torch.manual_seed(config.seed)
        model = backbones.build_model(config.backbone, len(split.classes), pretrained=config.pretrained)
    elif model.head.out_features != len(split.classes):
        raise ValueError(_("the model has {out_features} outputs but the data has {n} classes; pass a model built "
                           "for this dataset or none").format(
                             out_features=model.head.out_features, n=len(split.classes)))
    saved = None if own_model else copy.deepcopy(model.state_dict())
    saved_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    target = freezing.plan(config.backbone, config.trainable, config.trainable_groups)
    try:
        freezing.apply(model, config.backbone, target)
        model.to(device)
        use_features = target == ["head"] and config.augment == "none" and config.cache_features
        augment = config if config.augment == "custom" else config.augment
        ds = datasets.CachedDataset(split.train, cache, datasets.eval_transform(pre) if use_features
                                else datasets.train_transform(pre, augment))
        if use_features:
            f, y = feed.embed(model, loop._loader(ds, 64, False, config, device), pre, device)
            ds = torch.utils.data.TensorDataset(f, y)
        loader = loop._loader(ds, config.batch_size, True, config, device, seed=config.seed)
        if own_model and config.probe_init:
            _probe_head(model, split, cache, pre, config, device, (f, y) if use_features else None)
        forward = loop._Forward(model, pre, device, loop._amp_dtype(device, config.amp), False, use_features)
        groups = freezing.param_groups(model, config.backbone, target, config.lr, config.lr_decay,
                                       config.weight_decay)
        ratios = [g["lr"] / config.lr for g in groups]  # discriminative rates keep their proportions
        opt = loop.make_optimizer(config, groups)
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        freezing.set_train_mode(model, config.backbone, target)
        if config.body_eval and not use_features:  # as the loop trains it: pretrained BatchNorm statistics
            model.body.eval()

        mult = (end_lr / start_lr) ** (1 / (num_iter - 1))
        lrs, raw, smoothed, avg, best, diverged = [], [], [], 0.0, float("inf"), False
        it = iter(loader)
        for i in range(num_iter):
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(loader)
                x, y = next(it)
            lr = start_lr * mult ** i
            for g, r in zip(opt.param_groups, ratios):
                g["lr"] = lr * r
            loss = criterion(forward(x).float(), y.to(device))
            value = loss.item()
            if not math.isfinite(value):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            avg = beta * avg + (1 - beta) * value
            s = avg / (1 - beta ** (i + 1))
            lrs.append(lr)
            raw.append(value)
            smoothed.append(s)
            best = min(best, s)
            if on_progress:
                on_progress(i + 1, num_iter)
            if i > 0 and s > diverge_factor * best:
                diverged = True
                break
    finally:
        if saved is not None:
            model.load_state_dict(saved)
        for n, p in model.named_parameters():
            p.requires_grad_(saved_flags[n])
        torch.set_rng_state(rng)
    if len(lrs) < 3:
        raise ValueError(_("the loss diverged within {n} steps of the sweep starting at {start_lr:g}; lower "
                           "start_lr").format(n=len(lrs), start_lr=start_lr))
    i_min = min(range(len(smoothed)), key=smoothed.__getitem__)
    return {"lrs": lrs, "losses": smoothed, "raw_losses": raw, "suggestion": _suggest(lrs, smoothed),
            "min_loss_lr": lrs[i_min], "diverged": diverged, "stopped_at": lrs[-1],
            "start_lr": start_lr, "end_lr": end_lr, "num_iter": num_iter}
