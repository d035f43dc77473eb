"""fit(): the training loop shared by the app, the CLI and torchrun. Emits events through a callback."""
from __future__ import annotations

import json
import random
import threading
import time
import traceback
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import backbones, data, export, freezing, runs
from .backbones import Preprocessing
from .config import RunConfig

Event = dict
OnEvent = Callable[[Event], None]


class Stopped(Exception):
    """Raised inside the loop when the user asked to stop."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class Control:
    """Pause / resume / stop flags shared between the UI thread and the worker."""

    def __init__(self):
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def checkpoint(self) -> None:
        """Called between steps: blocks while paused, raises Stopped when asked to stop."""
        self._running.wait()
        if self._stop.is_set():
            raise Stopped()


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU (or the one asked for)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is visible; use auto or cpu")
    return torch.device(name)


def preprocessing_for(config: RunConfig) -> Preprocessing:
    """The backbone's preprocessing, rescaled when the config asks for another input size."""
    pre = backbones.get(config.backbone).preprocessing
    if config.image_size:
        resize = round(config.image_size * pre.resize_size / pre.crop_size)
        pre = replace(pre, crop_size=config.image_size, resize_size=resize)
    return pre


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": repr(random.getstate()),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])]}


def _set_rng_state(s: dict) -> None:
    import ast

    torch.set_rng_state(s["torch"])
    random.setstate(ast.literal_eval(s["python"]))
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))


def _amp_dtype(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_optimizer(config: RunConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def make_scheduler(config: RunConfig, opt: torch.optim.Optimizer, total_steps: int):
    if config.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                   total_steps=max(total_steps, 1), pct_start=0.25)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1), eta_min=0.0)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


class _Forward:
    """Maps a loader batch to logits: images through the whole model, or cached features through the head."""

    def __init__(self, model, pre, device, amp_dtype, channels_last, features: bool):
        self.model, self.pre, self.device = model, pre, device
        self.amp_dtype, self.channels_last, self.features = amp_dtype, channels_last, features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.features:
            return self.model.head(x)
        x = data.normalize(x, self.pre)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return self.model(x)


@torch.no_grad()
def evaluate(forward: _Forward, loader, criterion=None) -> dict:
    """Loss, accuracy and per-sample probabilities over a loader (model in eval mode by the caller)."""
    losses, probs, labels = [], [], []
    for x, y in loader:
        logits = forward(x).float()
        y = y.to(logits.device)
        if criterion is not None:
            losses.append(nn.functional.cross_entropy(logits, y, reduction="sum").item())
        probs.append(torch.softmax(logits, 1).cpu())
        labels.append(y.cpu())
    p = torch.cat(probs) if probs else torch.zeros(0, 1)
    t = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    n = max(len(t), 1)
    return {"loss": sum(losses) / n, "acc": float((p.argmax(1) == t).float().mean()) if len(t) else 0.0,
            "probs": p, "labels": t}


@torch.no_grad()
def embed(model, loader, pre, device, on_progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Body features for every image of a loader (body in eval mode): the cached-features fast path."""
    model.body.eval()
    feats, labels, done = [], [], 0
    for x, y in loader:
        feats.append(model.body(data.normalize(x.to(device), pre)).float().cpu())
        labels.append(y)
        done += len(y)
        if on_progress:
            on_progress(done)
    return torch.cat(feats), torch.cat(labels)


def _loader(dataset, batch_size, shuffle, config, device, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    kw = {}
    if config.num_workers > 0:
        kw = {"num_workers": config.num_workers, "persistent_workers": True}
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g,
                                       pin_memory=device.type == "cuda", drop_last=False, **kw)


def _class_weights(split: data.Split) -> torch.Tensor:
    counts = np.bincount([y for _, y in split.train], minlength=len(split.classes)).astype(np.float64)
    w = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)


def fit(config: RunConfig, on_event: OnEvent | None = None, control: Control | None = None,
        run: runs.Run | None = None, resume: bool = False) -> dict:
    """Train per ``config``; every event goes to the run's log and to ``on_event``. Returns the final metrics."""
    config.validate()
    control = control or Control()
    if run is None:
        run = runs.create(config)
    t_start = time.time()

    def emit(kind: str, **fields) -> None:
        ev = {"type": kind, "time": time.time(), **fields}
        run.append(ev)
        if on_event:
            on_event(ev)

    try:
        return _fit(config, emit, control, run, resume)
    except Stopped:
        emit("end", status="stopped", message="stopped by the user; the best checkpoint so far is kept",
             elapsed_s=time.time() - t_start)
        return {"status": "stopped", "run_dir": str(run.path)}
    except Exception as e:  # the worker must report every failure, never vanish
        emit("end", status="failed", message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        raise


def _fit(config: RunConfig, emit, control: Control, run: runs.Run, resume: bool) -> dict:
    seed_everything(config.seed, config.deterministic)
    device = pick_device(config.device)
    pre = preprocessing_for(config)

    # data
    if resume and (run.path / "split.json").exists():
        split = data.Split.from_dict(json.loads((run.path / "split.json").read_text()))
        index_hash = None
    else:
        index = data.load_index(config.data, progress=lambda d, t: emit("phase", phase="extracting", done=d, total=t))
        split = data.split(index, config.val_fraction, config.seed)
        index_hash = index.content_hash
        runs.atomic_write_text(run.path / "split.json", json.dumps(
            {**split.to_dict(), "content_hash": index_hash, "skipped": [s.__dict__ for s in index.skipped]}))
    classes = split.classes
    cache = data.ImageCache([p for p, _ in split.train + split.val], pre,
                            progress=lambda d, t: emit("phase", phase="decoding images", done=d, total=t))

    # model and freeze plan
    torch.manual_seed(config.seed)
    model = backbones.build_model(config.backbone, len(classes), pretrained=config.pretrained)
    groups = freezing.plan(config.backbone, config.trainable, config.trainable_groups)
    counts = freezing.apply(model, config.backbone, groups)
    model.to(device)
    channels_last = config.channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp_dtype = _amp_dtype(device, config.amp)

    use_features = groups == ["head"] and config.augment == "none" and config.cache_features
    train_ds = data.CachedDataset(split.train, cache, data.train_transform(pre, config.augment))
    val_ds = data.CachedDataset(split.val, cache, data.eval_transform(pre))
    if use_features:
        n_all = len(split.train) + len(split.val)
        plain = data.CachedDataset(split.train, cache, data.eval_transform(pre))
        tick = lambda off: (lambda d: emit("phase", phase="embedding images once", done=off + d, total=n_all))
        ftr, ytr = embed(model, _loader(plain, 64, False, config, device), pre, device, tick(0))
        fva, yva = embed(model, _loader(val_ds, 64, False, config, device), pre, device, tick(len(split.train)))
        train_ds = torch.utils.data.TensorDataset(ftr, ytr)
        val_ds = torch.utils.data.TensorDataset(fva, yva)
    train_loader = _loader(train_ds, config.batch_size, True, config, device, seed=config.seed)
    val_loader = _loader(val_ds, max(config.batch_size, 64), False, config, device)
    forward = _Forward(model, pre, device, amp_dtype, channels_last, use_features)
    if config.compile and not use_features:
        forward.model = torch.compile(model)

    opt = make_optimizer(config, freezing.param_groups(model, config.backbone, groups, config.lr, config.lr_decay,
                                                       config.weight_decay))
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * config.epochs
    sched = make_scheduler(config, opt, total_steps)
    weight = _class_weights(split).to(device) if config.class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start_epoch, best_acc, best_epoch, stale, step = 0, -1.0, -1, 0, 0
    if resume and run.last_ckpt.exists():
        ck = torch.load(run.last_ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, best_acc, best_epoch, stale, step = (ck["epoch"], ck["best_acc"], ck["best_epoch"],
                                                          ck["stale"], ck["step"])
        _set_rng_state(ck["rng"])
        train_loader.generator.set_state(ck["loader_rng"])
        emit("resumed", epoch=start_epoch)

    emit("start", device=str(device), classes=classes, n_train=len(split.train), n_val=len(split.val),
         trainable_groups=groups, params_trainable=counts["trainable"], params_total=counts["total"],
         cached_features=use_features, amp=str(amp_dtype) if amp_dtype else None, versions=export.versions(),
         dataset_hash=index_hash, steps_per_epoch=steps_per_epoch, epochs=config.epochs, resumed=bool(resume))

    t_loop, images_done = time.time(), 0
    ips = 0.0
    for epoch in range(start_epoch, config.epochs):
        freezing.set_train_mode(model, config.backbone, groups)
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        t_epoch = time.time()
        for x, y in train_loader:
            control.checkpoint()
            t0 = time.time()
            y = y.to(device, non_blocking=True)
            logits = forward(x)
            loss = criterion(logits.float(), y)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                       f"lower the learning rate (now {config.lr:g}) and try again")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], config.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            n = len(y)
            tot_loss += loss.item() * n
            tot_correct += int((logits.argmax(1) == y).sum())
            tot_n += n
            images_done += n
            dt = max(time.time() - t0, 1e-9)
            ips = n / dt if ips == 0 else 0.9 * ips + 0.1 * n / dt
            remaining = total_steps - step
            elapsed = time.time() - t_loop
            done_here = step - start_epoch * steps_per_epoch
            eta = elapsed / max(done_here, 1) * remaining
            emit("step", epoch=epoch + 1, step=step, total_steps=total_steps, loss=loss.item(),
                 lr=opt.param_groups[0]["lr"], images_per_s=ips, eta_s=eta)

        model.eval()
        ev = evaluate(forward, val_loader, criterion)
        val_acc = ev["acc"]
        improved = val_acc > best_acc + config.early_stopping_min_delta
        if improved:
            best_acc, best_epoch, stale = val_acc, epoch + 1, 0
            metrics = {"val_accuracy": val_acc, "val_loss": ev["loss"], "epoch": epoch + 1}
            export.save_safetensors(model, export.make_card(config, classes, pre, metrics), run.best_weights)
        else:
            stale += 1
        _save_last(run, model, opt, sched, epoch + 1, best_acc, best_epoch, stale, step, train_loader)
        emit("epoch", epoch=epoch + 1, epochs=config.epochs, train_loss=tot_loss / max(tot_n, 1),
             train_acc=tot_correct / max(tot_n, 1), val_loss=ev["loss"], val_acc=val_acc,
             lr=opt.param_groups[0]["lr"], time_s=time.time() - t_epoch, best=improved, images_per_s=ips)
        if config.early_stopping_patience and stale >= config.early_stopping_patience:
            emit("early_stop", epoch=epoch + 1, best_epoch=best_epoch,
                 message=f"no improvement of validation accuracy for {stale} epochs; keeping epoch {best_epoch}")
            break

    result = {"status": "finished", "val_accuracy": best_acc, "best_epoch": best_epoch,
              "classes": classes, "run_dir": str(run.path), "elapsed_s": time.time() - t_loop}
    runs.atomic_write_text(run.path / "result.json", json.dumps(result, indent=2))
    emit("end", **result)
    return result


def _save_last(run, model, opt, sched, epoch, best_acc, best_epoch, stale, step, loader) -> None:
    state = {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch, "best_acc": best_acc,
             "best_epoch": best_epoch, "stale": stale, "step": step, "rng": _rng_state(),
             "loader_rng": loader.generator.get_state()}
    runs.atomic_save(run.last_ckpt, lambda tmp: torch.save(state, tmp))
