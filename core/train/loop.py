"""fit(): THE training loop, shared by every technique, the app, the CLI and torchrun.

A technique (core.train.technique.Technique; the plug-ins live in core.techniques) supplies its data,
head, loss, metrics and what it saves; this module supplies the rest once. Events go to the run's log
(and to a callback), checkpoints to the run folder; see Technique's docstring for the division of work.
"""
from __future__ import annotations

import json
import random
import time
import traceback
from typing import Callable

import numpy as np
import torch

from core.models import backbones
from core.data import datasets
from core.train.ddp import context as distributed_context
from core.results import loading
from core.models import freezing
from core.models.net import TRAIN_PIXELS, cpu_chunk
from core.storage import locks, runs
from core.config import RunConfig
from core.i18n import N_, _
from core.train import checkpoints, events, wise
from core.train.events import said
from core.train.control import Control, Stopped, TrainingDiverged
from core.train.technique import Technique
from core.train.feed import (EMBED_BATCH, Forward as _Forward, Rows as _Rows, Samples as _Samples,
                             Views as _Views, chunks as _chunks, drop_short_batch, embed_rows as _embed_rows,
                             epoch_image_size, loader as _loader, per_rank_batch, to_device as _to)
from core.train.schedule import (RESTART_FACTOR, Budget as _Budget, active_groups, make_optimizer, make_scheduler,
                                 restart_schedule, schedule_end as _schedule_end)

Event = dict
OnEvent = Callable[[Event], None]


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU (or the one asked for)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(_("device 'cuda' was asked for but no CUDA GPU is visible; use auto or cpu"))
    return torch.device(name)


def use_channels_last(config: RunConfig, device: torch.device) -> bool:
    """Whether the model and its inputs go channels_last: on CUDA, and on CPU too, where oneDNN's kernels
    made an EfficientNet-Lite0 training step at 96 px ~25% cheaper and a forward pass ~20% cheaper
    (measured on the 2-core development machine; benchmarks/bench_engine.py)."""
    return bool(config.channels_last) and device.type in ("cuda", "cpu")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def _amp_dtype(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _environment(device: torch.device) -> dict:
    """What a reproduction needs besides the config: library versions and the hardware."""
    import platform

    env = {**loading.versions(), "numpy": np.__version__, "cuda": torch.version.cuda,
           "platform": platform.platform(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def logged_run(run: runs.Run, on_event: OnEvent | None, work: Callable, stopped: str = "stopped by the user; "
               "the best checkpoint so far is kept", cleanup: list | None = None) -> dict:
    """Run ``work(emit)``: every event goes to the run's log and to ``on_event``, and the log always ends
    with one 'end' event (finished with the returned metrics, stopped, or failed with the reason).

    ``cleanup`` holds callables that must reach the disk before any end event (e.g. pending best weights).
    """
    from core.train import tracking

    t_start = time.time()
    sink = None  # TensorBoard / MLflow, when the run's config turns them on

    def emit(kind: events.EventKind, **fields) -> None:
        ev = events.event(kind, time.time(), **fields)
        if kind == "end" and sink:
            sink.close(ev)  # first, so a tracking warning still comes before the end line
        run.append(ev)
        if on_event:
            on_event(ev)
        if sink and kind != "end":
            sink.send(ev)

    sink = tracking.open_sink(run, lambda message: emit("warning", source="tracking", **events.carried(message)))

    def finish() -> None:
        for fn in cleanup or ():
            fn()

    try:
        result = work(emit)
    except Stopped:
        finish()
        emit("end", status="stopped", **said(stopped), elapsed_s=time.time() - t_start)
        return {"status": "stopped", "run_dir": str(run.path)}
    except TrainingDiverged as e:  # a known outcome with its own advice; a traceback would only add noise
        finish()
        emit("end", status="failed", reason="diverged", message=str(e), elapsed_s=time.time() - t_start)
        raise
    except Exception as e:  # the worker must report every failure, never vanish
        try:
            finish()
        except Exception:  # the original failure is the one to report
            pass
        emit("end", status="failed", message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        raise
    emit("end", **result)
    return result


def fit(config: RunConfig, technique: Technique, on_event: OnEvent | None = None, control: Control | None = None,
        run: runs.Run | None = None, resume: bool = False) -> dict:
    """Train ``config`` with ``technique`` (core.techniques picks it from ``config.technique``); every event goes
    to the run's log and to ``on_event``. Returns the final metrics."""
    backbones.check(config.validate())
    technique.check(config)
    control = control or Control()
    run = run or runs.create(config)
    cleanup: list = []  # _fit registers work that must reach the disk before any end event (the best weights)
    with locks.hold(run.path):  # one trainer per run, across processes; the kernel frees it if this one dies
        return logged_run(run, on_event, lambda emit: _fit(config, technique, emit, control, run, resume, cleanup),
                          technique.stopped_message, cleanup=cleanup)


@torch.no_grad()
def _validate(forward, loader, technique: Technique) -> dict[str, torch.Tensor]:
    rows: dict[str, list] = {}
    for x, y in loader:
        out = forward(technique.inputs(x))
        for k, v in technique.collect(out, _to(y, forward.device)).items():
            rows.setdefault(k, []).append(v.detach().cpu())
    return {k: torch.cat(v) for k, v in rows.items()}


def _fit(config: RunConfig, technique: Technique, emit, control: Control, run: runs.Run, resume: bool,
         cleanup: list) -> dict:
    t_fit = time.time()  # the time budget counts from here: decoding and embedding are part of the user's wait
    seed_everything(config.seed, config.deterministic)
    ddp = distributed_context()  # DDP hooks under torchrun; no-ops in an ordinary process
    device = ddp.device or pick_device(config.device)
    pre = technique.preprocessing(config)
    ddp.wait_for_main()  # rank 0 extracts, indexes and decodes first; the other ranks then reuse its files
    data = technique.data(config, run, resume, emit)
    own = technique.samples(config, data, pre, emit)  # a non-image modality brings its datasets (issue 17)
    cache = None if own else datasets.ImageCache(data.train + data.val, pre,
                                progress=lambda d, t: emit("phase", phase=N_("decoding images"), done=d, total=t))
    ddp.release_others()

    ck = None
    if resume and run.last_ckpt.exists():
        ck = torch.load(run.last_ckpt, map_location="cpu", weights_only=True)
    if resume and ddp.main:
        for tmp in run.path.glob(".*.tmp"):  # half-written files of a killed writer; the real ones are intact
            tmp.unlink(missing_ok=True)
    start_epoch = ck["epoch"] if ck else 0

    # model and freeze plan; `target` is what learns once gradual unfreezing (if any) is done
    torch.manual_seed(config.seed)
    model = technique.build(config, data)
    target = freezing.plan(config.backbone, config.trainable, config.trainable_groups)
    groups = active_groups(config, target, start_epoch)
    counts = freezing.apply(model, config.backbone, groups)
    model.to(device)
    channels_last = use_channels_last(config, device) and technique.modality == "image"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp_dtype = _amp_dtype(device, config.amp)

    # Head-only epochs (all of them, or those before unfreezing) can train on features computed once,
    # because a frozen body in eval mode maps each un-augmented image to the same vector every epoch.
    head_only_epochs = config.epochs if target == ["head"] else max(config.unfreeze_after, 0)
    # With cached_views, augmented runs too: a few views per image are embedded once and epochs draw among them.
    views = config.cached_views if config.augment != "none" else 0
    use_features = (head_only_epochs > start_epoch and (config.augment == "none" or views > 0) and config.cache_features
                    and type(technique).inputs is Technique.inputs)  # multi-view techniques need the images
    batch = per_rank_batch(config.batch_size, ddp.world)
    eval_batch = max(batch, 64)
    gen = torch.Generator()
    gen.manual_seed(config.seed)
    drop = drop_short_batch(technique, len(data.train), config.batch_size)
    if own:
        train_images, val_images, plain = own
    else:
        train_images = _Samples(data.train, data.train_targets, cache, technique.train_transform(pre, config))
        val_images = _Samples(data.val, data.val_targets, cache, datasets.eval_transform(pre))
    loaders = {False: (_loader(train_images, batch, True, config, device, generator=gen, drop_last=drop),
                       _loader(val_images, eval_batch, False, config, device))}
    cached = None  # (train rows, val rows) of body features, when computed: the probe warm start reuses them
    if use_features:
        n_all = len(data.train) + len(data.val)
        if not own:
            plain = _Samples(data.train, data.train_targets, cache, datasets.eval_transform(pre))
        tick = lambda off: (lambda d: emit("phase", phase=N_("embedding images once"), done=off + d, total=n_all))
        # under DDP each rank embeds its shard and the rows are all-gathered back into order
        if views:
            n_all += len(data.train) * (views - 1)
        ftr = ddp.gather_rows(_embed_rows(model, _loader(ddp.shard(plain), EMBED_BATCH, False, config, device), pre,
                                          device, tick(0), channels_last, technique.prepare))
        # view 0 is the plain image; views 1.. are draws of the training transform
        extra = [ddp.gather_rows(_embed_rows(model, _loader(ddp.shard(train_images), EMBED_BATCH, False, config, device),
                                             pre, device, tick(len(data.train) * v), channels_last, technique.prepare))
                 ["_x"] for v in range(1, views)]
        fva = ddp.gather_rows(_embed_rows(model, _loader(ddp.shard(val_images), EMBED_BATCH, False, config, device),
                                          pre, device, tick(n_all - len(data.val)), channels_last, technique.prepare))
        cached = ({**ftr}, {**fva})
        rows = _Views(torch.stack([ftr.pop("_x")] + extra, 1), ftr, config.seed) if views else _Rows(ftr.pop("_x"), ftr)
        loaders[True] = (_loader(rows, batch, True, config, device, generator=gen,
                                 drop_last=drop),
                         _loader(_Rows(fva.pop("_x"), fva), eval_batch, False, config, device))
    loaders = ddp.shard_loaders(loaders, config.seed)
    forward = _Forward(model, pre, device, amp_dtype, channels_last, use_features, technique.prepare)
    if config.compile:
        forward.model = torch.compile(model)

    # The optimizer holds every target group from the start (frozen ones have no gradient, so they are
    # skipped), which keeps one scheduler and one resumable optimizer state across unfreezing.
    pgroups = freezing.param_groups(model, config.backbone, target, config.lr, config.lr_decay, config.weight_decay)
    if config.unfreeze_after > 0:
        for g in pgroups:
            if g["name"] != "head":
                g["lr"] *= config.unfreeze_lr_factor
    opt = make_optimizer(config, pgroups)
    steps_per_epoch = len(loaders[False][0])
    total_steps = steps_per_epoch * config.epochs
    sched = make_scheduler(config, opt, total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    best_score, best_epoch, stale, step, best_metrics = float("-inf"), -1, 0, 0, {}
    # Groups outside the plan never change (no gradient, BatchNorm in eval), so checkpoints leave them out:
    # a resumed run rebuilds them bit-identically from the same weights and seed.
    fixed = checkpoints.group_keys(model, config.backbone, [g for g in backbones.group_names(config.backbone) if g not in target])
    learned = checkpoints.LearnedState(model, config.backbone, target, fixed)
    best = checkpoints.BestWriter(run, learned, technique, lambda metrics: technique.card(config, pre, metrics))
    cleanup.append(best.flush)
    if ck:
        missing, unexpected = model.load_state_dict(ck["model"], strict=False)
        if unexpected or set(missing) - fixed:
            raise ValueError(_("{path} does not match this run's model (missing {missing}, unexpected "
                               "{unexpected}); start a new run instead of resuming").format(
                path=run.last_ckpt, missing=sorted(missing)[:3], unexpected=sorted(unexpected)[:3]))
        if ck.get("best_pending") and ddp.main:
            # the run was stopped hard before these best weights reached the best file: write them now
            best.pending = (ck["best_pending"], json.loads(ck["best_metrics"]))
            best.flush()
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        best_score, best_epoch, stale, step = ck["best_score"], ck["best_epoch"], ck["stale"], ck["step"]
        best_metrics = json.loads(ck["best_metrics"])
        checkpoints.set_rng_state(ck["rng"])
        gen.set_state(ck["loader_rng"])
        end = _schedule_end(ck["scheduler"], step)
        if end is not None and end < total_steps:  # epochs were raised ("train N more epochs"): a warm restart
            sched = restart_schedule(config, opt, total_steps - step)
            emit("warning", epoch=start_epoch, **said(
                N_("epochs raised to {epochs}: the learning-rate schedule restarts over the {new} new epochs at "
                   "{factor:g}x its first peak"), epochs=config.epochs, new=config.epochs - start_epoch,
                factor=RESTART_FACTOR))
        emit("resumed", epoch=start_epoch, step=step)

    emit("start", technique=technique.name, device=str(device), n_train=len(data.train), n_val=len(data.val),
         trainable_groups=target, active_groups=groups, params_trainable=counts["trainable"],
         params_total=counts["total"], cached_features=use_features, amp=str(amp_dtype) if amp_dtype else None,
         versions=loading.versions(), environment=_environment(device), dataset_hash=data.dataset_hash,
         steps_per_epoch=steps_per_epoch, epochs=config.epochs, batch_size=config.batch_size,
         resumed=ck is not None, start_epoch=start_epoch, **data.info)
    if config.probe_init and ck is None:  # a resumed run already has its warm-started (and trained) head
        found = _warm_start(config, technique, model, cached, data, cache, pre, device, ddp, emit, channels_last)
        if found and technique.validates and config.early_stopping_metric == "val_acc" and data.val:
            # the probe is "epoch 0", the best so far: an epoch must beat it to replace it, so the model handed
            # over is never worse on validation than the linear probe, whatever fine-tuning does
            best_score, best_epoch = found["probe_val_acc"], 0
            best_metrics = {"val_accuracy": found["probe_val_acc"], "val_loss": found.get("probe_val_loss"),
                            "epoch": 0, "probe": True}
            if ddp.main:
                best.update(best_metrics)
    start_state = None  # WiSE-FT: the learnable tensors as training began (core.train.wise)
    if wise.applies(config, any(g != "head" for g in target), technique.validates, bool(data.val)):
        if ck is None:
            start_state = {k: v.to("cpu", copy=True) for k, v in learned.state().items()}
            if ddp.main:
                wise.save_start(run, start_state)
        else:
            start_state = wise.load_start(run)

    micro = batch  # largest chunk that fits on the device; halved on CUDA out-of-memory

    def train_step(x: torch.Tensor, y: dict, size: int) -> tuple[float, dict]:
        """One optimizer step over a batch, in chunks of ``size`` samples; returns (mean loss, summed numbers)."""
        opt.zero_grad(set_to_none=True)
        y = _to(y, device)
        n, loss_sum, sums, stepped = len(x), 0.0, {}, False
        for xc, yc in _chunks(x, y, size):
            loss, nums = technique.loss(forward(technique.inputs(xc)), yc)
            if not torch.isfinite(loss):
                raise TrainingDiverged(_("the loss became {loss} at epoch {epoch}, step {step}; lower the learning "
                                         "rate (now {lr:g}, try {lower:g}) and train again").format(
                    loss=loss.item(), epoch=epoch + 1, step=step + 1, lr=config.lr, lower=config.lr / 10))
            if loss.requires_grad:  # False only when a batch holds nothing to learn from (multi-task gaps)
                scaler.scale(loss if len(xc) == n else loss * (len(xc) / n)).backward()
                stepped = True
            loss_sum += loss.item() * len(xc)
            for k, v in nums.items():
                sums[k] = sums.get(k, 0.0) + v
        if stepped:
            if config.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], config.grad_clip)
            scaler.step(opt)
            scaler.update()
        return loss_sum / n, sums

    t_loop, ips, prev_groups = time.time(), 0.0, groups
    budget, first_step, stopped_by = _Budget(config.time_budget_s, t_fit), step, None
    last_epoch = start_epoch
    for epoch in range(start_epoch, config.epochs):
        groups = active_groups(config, target, epoch)
        if groups != prev_groups:
            counts = freezing.apply(model, config.backbone, groups)
            emit("unfreeze", epoch=epoch + 1, step=step, groups=[g for g in groups if g not in prev_groups],
                 active_groups=groups, params_trainable=counts["trainable"])
            prev_groups = groups
        features = use_features and epoch < head_only_epochs
        forward.features = features
        ddp.prepare(forward, model, config, groups)
        train_loader, val_loader = loaders[features]
        ddp.set_epoch(train_loader, epoch)
        if isinstance(train_loader.dataset, _Views):
            train_loader.dataset.set_epoch(epoch)
        forward.size = None if features else epoch_image_size(config, pre.crop_size, epoch)
        if features:  # the body is not used (its features are cached) and stays in eval mode: skip a full walk
            model.head.train()
        else:
            freezing.set_train_mode(model, config.backbone, groups)
            if config.body_eval:  # the features the probe was fitted on: pretrained BN statistics, no dropout
                model.body.eval()  # or stochastic depth (gradients still reach every learning layer)
        # On a CPU a step costs less per image in chunks of TRAIN_PIXELS (net.py) with gradients accumulated: the same
        # step, unless BatchNorm normalises with batch statistics, the loss couples a batch's samples, or DDP would
        # all-reduce after every chunk.
        cpu_chunks = (device.type == "cpu" and not features and ddp.world == 1 and technique.per_sample_loss
                      and technique.modality == "image" and not freezing.batchnorm_learning(model))
        tot_loss, tot_n, sums = 0.0, 0, {}
        used = [g["lr"] for g in opt.param_groups]  # the rates the last step ran with (events report these)
        t_epoch = time.time()
        for x, y in train_loader:
            control.checkpoint()
            if budget.on and step > first_step and ddp.agree(budget.spent()):  # ranks must leave together
                stopped_by = "time_budget"
                break
            t0 = time.time()
            side = forward.size or x.shape[-1]  # progressive resizing: the side this epoch's steps run at
            chunk = cpu_chunk(side * side, TRAIN_PIXELS) if cpu_chunks else len(x)
            while True:
                try:
                    loss_value, nums = train_step(x, y, min(micro, chunk))
                    break
                except torch.cuda.OutOfMemoryError:
                    ddp.oom()
                    opt.zero_grad(set_to_none=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    if micro <= 1:
                        raise RuntimeError(_("the device ran out of memory at step {step} even with one image at a "
                                             "time; choose a smaller backbone or image size").format(
                            step=step + 1)) from None
                    micro = max(1, min(micro, len(x)) // 2)
                    emit("warning", epoch=epoch + 1, step=step + 1, batch_size=micro,
                         **said(N_("out of GPU memory at step {step}: each batch of {batch} now goes through in "
                                   "chunks of {micro} (gradients are accumulated, so the effective batch size and "
                                   "the schedule stay the same)"), step=step + 1, batch=batch, micro=micro))
            used = [g["lr"] for g in opt.param_groups]  # before the scheduler sets the next step's rates
            sched.step()
            step += 1
            n = len(x)
            tot_loss += loss_value * n
            tot_n += n
            for k, v in nums.items():
                sums[k] = sums.get(k, 0.0) + v
            dt = max(time.time() - t0, 1e-9)
            ips = n / dt if ips == 0 else 0.9 * ips + 0.1 * n / dt
            done_here = step - start_epoch * steps_per_epoch
            eta = (time.time() - t_loop) / max(done_here, 1) * (total_steps - step)
            emit("step", epoch=epoch + 1, step=step, total_steps=total_steps, loss=loss_value,
                 lr=used[0], images_per_s=ips, eta_s=eta, **technique.step_metrics(nums))

        (model.head if features else model).eval()
        train_size, forward.size = forward.size or pre.crop_size, None  # validation sees full-size images
        keys = sorted(sums)
        tot_loss, tot_n, *summed = ddp.sum(tot_loss, tot_n, *(float(sums[k]) for k in keys))
        train = {"train_loss": tot_loss / max(tot_n, 1), **technique.train_metrics(dict(zip(keys, summed)))}
        if technique.validates:
            ev = technique.metrics(ddp.gather_rows(_validate(ddp.for_eval(forward), val_loader, technique)))
        else:
            ev = {}
        metrics = {**train, **ev}
        score = technique.score(config, metrics)
        improved = score > best_score + config.early_stopping_min_delta
        if improved:
            best_score, best_epoch, stale = score, epoch + 1, 0
            best_metrics = {"val_accuracy": ev.get("val_acc"), "val_loss": ev.get("val_loss"), "epoch": epoch + 1,
                            **{k: v for k, v in metrics.items() if k not in ("val_acc", "val_loss")}}
            if ddp.main:  # only rank 0 writes checkpoints
                best.update(best_metrics)
        else:
            stale += 1
        last_epoch = epoch + 1
        budget.record(features, time.time() - t_epoch)
        if ddp.main:
            checkpoints.save_last(run, learned, opt, sched, gen, epoch=epoch + 1, best_score=best_score,
                       best_epoch=best_epoch, stale=stale, step=step, best_metrics=json.dumps(best_metrics),
                       best_pending=best.unwritten())
        emit("epoch", epoch=epoch + 1, epochs=config.epochs, **metrics, train_image_size=train_size,
             lr=used[0], lrs={g["name"]: lr for g, lr in zip(opt.param_groups, used) if g["name"] in groups},
             time_s=time.time() - t_epoch, best=improved, images_per_s=ips)
        if ddp.agree(config.early_stopping_patience and stale >= config.early_stopping_patience):
            emit("early_stop", epoch=epoch + 1, best_epoch=best_epoch,
                 **said(N_("no improvement of {metric} for {stale} epochs; keeping epoch {best}"),
                        metric=config.early_stopping_metric, stale=stale, best=best_epoch))
            break
        next_features = use_features and epoch + 1 < head_only_epochs
        if budget.on and epoch + 1 < config.epochs and (stopped_by or ddp.agree(not budget.next_fits(next_features))):
            stopped_by = "time_budget"
            emit("budget", epoch=epoch + 1, best_epoch=best_epoch, budget_s=config.time_budget_s,
                 elapsed_s=budget.elapsed(), **said(N_("stopped at the time budget of {budget:g} s after epoch "
                                                       "{epoch} of {epochs}; keeping epoch {best}"),
                                                    budget=config.time_budget_s, epoch=epoch + 1,
                                                    epochs=config.epochs, best=best_epoch))
            break

    if ddp.main:
        best.flush()
    best_path = run.path / technique.best_file
    if best_epoch != last_epoch and (best.kept is not None or best_path.exists()):
        # The model in memory ends as the best epoch's, like the exported file (this run's copy when it
        # has one: reading the file back would cost as much again).
        if best.kept is not None:
            learned.load(best.kept)
            emit("restored_best", epoch=best_epoch, **said(N_("restored the weights of epoch {epoch}, the best by "
                                                              "{metric}"), epoch=best_epoch,
                                                           metric=config.early_stopping_metric))
    in_memory = best_epoch == last_epoch or best.kept is not None  # the model holds the best epoch's weights
    if start_state is not None and best_epoch > 0 and in_memory:
        best_score, best_metrics = _weight_average(config, technique, model, learned, start_state, forward,
                                                   loaders[False][1], ddp, best, best_score, best_metrics, emit)
    no_val = 0.0 if technique.validates else None  # a run stopped before its first epoch has no accuracy yet
    result = {"status": "finished", "technique": technique.name,
              "val_accuracy": best_metrics.get("val_accuracy", no_val),
              "val_loss": best_metrics.get("val_loss"), "best_epoch": best_epoch, "epochs_run": last_epoch,
              "run_dir": str(run.path), "elapsed_s": time.time() - t_loop, **technique.result(best_metrics)}
    if stopped_by:
        result.update(stopped_by=stopped_by, time_budget_s=config.time_budget_s)
    runs.atomic_write_text(run.path / "result.json", json.dumps(result, indent=2))
    return result


def _weight_average(config, technique, model, learned, start, forward, val_loader, ddp, best, best_score: float,
                    best_metrics: dict, emit) -> tuple[float, dict]:
    """WiSE-FT (core.train.wise): validate mixes of the start and the best weights in memory; the model keeps the
    winner, which becomes the run's best when it beats the fine-tuned weights. Returns (best score, best metrics).
    (A resumed run's epochs are compared with the best epoch's score, not the mix's; its own end mixes again.)"""
    end = {k: v.to("cpu", copy=True) for k, v in learned.state().items()}
    forward.features, forward.size = False, None
    model.eval()

    def score_of(state: dict) -> tuple[float, dict]:
        learned.load(state)
        metrics = technique.metrics(ddp.gather_rows(_validate(ddp.for_eval(forward), val_loader, technique)))
        return technique.score(config, metrics), metrics

    share, won, tried = wise.choose(score_of, start, end, best_score, config.early_stopping_min_delta)
    rows = [{"share": t["share"], "val_acc": t["metrics"].get("val_acc"), "val_loss": t["metrics"].get("val_loss")}
            for t in tried]
    before = best_metrics.get("val_accuracy")
    if won is None:
        learned.load(end)
        top = max(tried, key=lambda t: t["score"])
        emit("weight_average", share=1.0, tried=rows, **said(
            N_("weight averaging (WiSE-FT): no mix of the fine-tuned and the starting weights scored better on "
               "validation (best {mix} at {share} fine-tuned, against {best}); the fine-tuned weights are kept"),
            mix=_pct(top["metrics"].get("val_acc")), share=f"{top['share']:.0%}", best=_pct(before)))
        return best_score, best_metrics
    learned.load(wise.mix(start, end, share))
    best_metrics = {**best_metrics, **{k: v for k, v in won.items() if k not in ("val_acc", "val_loss")},
                    "val_accuracy": won.get("val_acc"), "val_loss": won.get("val_loss"), "wise_ft_share": share}
    if ddp.main:
        best.update(best_metrics)
        best.flush()
    emit("weight_average", share=share, tried=rows, **said(
        N_("weight averaging (WiSE-FT): {share} fine-tuned and {rest} starting weights (pretrained body, probe "
           "head) scored {after} on validation against {before} for the fine-tuned weights alone; the mix is "
           "kept"), share=f"{share:.0%}", rest=f"{1 - share:.0%}", after=_pct(won.get("val_acc")),
        before=_pct(before)))
    return technique.score(config, won), best_metrics


def _pct(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def _warm_start(config, technique, model, cached, data, cache, pre, device, ddp, emit, channels_last) -> dict | None:
    """The linear-probe warm start: the technique fits its head on frozen-body features of the training
    images (eval transform), reusing the cached features when the loop computed them."""
    if type(technique).warm_start is Technique.warm_start:
        emit("warning", **said(N_("probe_init is not available for technique {technique}; the head starts from its "
                                  "usual initialisation"), technique=technique.name))
        return None
    if cached is None and cache is None:  # a technique with its own datasets (text): nothing here to embed
        emit("warning", **said(N_("probe_init needs cached features for technique {technique}; the head starts "
                                  "from its usual initialisation"), technique=technique.name))
        return None
    if cached is None:  # augmented or fine-tuning runs: embed the un-augmented images once, for the probe only
        n_all = len(data.train) + len(data.val)
        tick = lambda off: (lambda d: emit("phase", phase=N_("embedding images for the probe"), done=off + d, total=n_all))
        rows = []
        for off, (paths, targets) in ((0, (data.train, data.train_targets)),
                                      (len(data.train), (data.val, data.val_targets))):
            plain = _Samples(paths, targets, cache, datasets.eval_transform(pre))
            rows.append(ddp.gather_rows(_embed_rows(model, _loader(ddp.shard(plain), EMBED_BATCH, False, config,
                                                                   device), pre, device, tick(off), channels_last,
                                                    technique.prepare)))
        cached = tuple(rows)
    t0 = time.time()
    model.head.eval()
    found = technique.warm_start(config, model, *cached)  # every rank fits on the same gathered rows
    if ddp.world > 1:  # ... and takes rank 0's result, so float summation order cannot make the heads differ
        state = ddp.broadcast_object({k: v.cpu() for k, v in model.head.state_dict().items()})
        model.head.load_state_dict(state)
    if found is not None:
        emit("probe", **found, time_s=time.time() - t0)
    return found


