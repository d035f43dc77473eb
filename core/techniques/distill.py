"""Knowledge distillation (Hinton et al., 2015): a finished run teaches a smaller student.

Loss = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)).

The teacher's logits are computed once per image (centre crop, the teacher's own preprocessing)
and cached on disk, so the teacher never runs inside the training loop. That is exact only when
the student sees that same unaugmented view, so distillation requires ``augment="none"``: with
random crops the student would be matched against the teacher's opinion of a different picture.

A distillation run is an ordinary run directory (config, split, events, ``best.safetensors`` with a
card), so the app charts it like training and ``core.results.loading.load_model`` loads the student.
``compare`` builds the result table: teacher, distilled student, and the same student trained
without the teacher (``alpha=1``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.models import backbones
from core.data import datasets
from core.results import loading
from core.models import freezing
from core.storage import runs
from core.storage import workspace
from core.config import RunConfig
from core.train.loop import (Control, embed, logged_run, make_optimizer, make_scheduler, pick_device,
                      seed_everything)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      alpha: float, temperature: float) -> torch.Tensor:
    """alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(teacher_T || student_T), averaged over the batch."""
    ce = nn.functional.cross_entropy(student_logits, labels)
    if alpha >= 1:
        return ce
    t = temperature
    # T^2 keeps the soft term's gradients on the same scale as the hard term's whatever T is (Hinton et al.).
    kl = nn.functional.kl_div(nn.functional.log_softmax(student_logits / t, dim=1),
                              nn.functional.log_softmax(teacher_logits / t, dim=1),
                              reduction="batchmean", log_target=True) * t * t
    return alpha * ce + (1 - alpha) * kl


# --- the teacher ---------------------------------------------------------------------------------

def _weights_file(source) -> Path:
    p = Path(str(source))
    if not p.exists():
        p = runs.open_run(source).path  # a bare run id
    return p / "best.safetensors" if p.is_dir() else p


def load_teacher(source) -> tuple[loading.LoadedModel, Path]:
    """The teacher model and its weights file, from a run id, a run directory or an exported model."""
    path = _weights_file(source)
    if not path.exists():
        raise ValueError(f"teacher {source!s} has no weights yet ({path.name} missing); pick a finished run "
                         f"or an exported .safetensors / .pt file")
    card = loading.read_card(path)
    if card.get("kind", "classifier") != "classifier":
        raise ValueError(f"teacher {source!s} is a {card['kind']} model; a teacher must be a classifier run")
    return loading.load_model(path), path


@torch.no_grad()
def teacher_logits(teacher: loading.LoadedModel, weights_file: Path, paths: list[str], progress=None) -> torch.Tensor:
    """The teacher's logits for each image (centre crop), cached on disk per teacher file and image list."""
    st = Path(weights_file).stat()
    key = hashlib.sha256(json.dumps([str(Path(weights_file).resolve()), st.st_size, st.st_mtime_ns, paths,
                                     teacher.preprocessing.to_dict()]).encode()).hexdigest()[:20]
    file = workspace.sub("cache") / f"teacher-{key}.npy"
    if file.exists():
        return torch.from_numpy(np.load(file))
    pre = teacher.preprocessing
    cache = datasets.ImageCache(paths, pre)
    crop = datasets.eval_transform(pre)
    teacher.model.eval()
    out = []
    for i in range(0, len(paths), 64):
        x = torch.stack([crop(cache.get(p)) for p in paths[i:i + 64]])
        out.append(teacher.model(datasets.normalize(x, pre)).float())
        if progress:
            progress(min(i + 64, len(paths)), len(paths))
    logits = torch.cat(out) if out else torch.zeros(0, len(teacher.classes))
    tmp = file.with_name(f"{file.stem}.{id(logits)}.tmp.npy")
    np.save(tmp, logits.numpy())
    tmp.replace(file)
    return logits


# --- training ------------------------------------------------------------------------------------

def distill(teacher, student_config: RunConfig, alpha: float = 0.5, temperature: float = 4.0, on_event=None,
            control: Control | None = None, run: runs.Run | None = None) -> dict:
    """Train ``student_config`` against ``teacher`` (run id/dir or export); returns the final metrics."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha (weight of the hard-label loss) must be in [0, 1]; got {alpha!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (typical: 2-8); got {temperature!r}")
    if student_config.augment != "none":
        raise ValueError(f"distillation needs augment='none' (got {student_config.augment!r}): the teacher's "
                         f"logits are computed once on the centre crop, so the student must see that same view")
    teacher_model, teacher_file = load_teacher(teacher)
    config = dataclasses.replace(student_config, extra={
        **student_config.extra, "technique": "distill", "teacher": str(teacher), "teacher_file": str(teacher_file),
        "teacher_backbone": teacher_model.card["backbone"], "alpha": alpha, "temperature": temperature})
    backbones.check(config.validate())
    control = control or Control()
    run = run or runs.create(config)
    return logged_run(run, on_event, lambda emit: _distill(config, teacher_model, teacher_file, emit, control, run),
                      "stopped by the user; the best student so far is kept")


def fit_config(config: RunConfig, on_event=None, control: Control | None = None, run: runs.Run | None = None,
               resume: bool = False) -> dict:
    """Same call as trainer.fit, for job runners: teacher, alpha and temperature come from ``config.extra``."""
    if resume:
        raise ValueError("a distillation run cannot be resumed; start it again (the teacher's logits are cached)")
    extra = config.extra
    if "teacher" not in extra:
        raise ValueError("config.extra['teacher'] is missing: name the teacher run for distillation")
    return distill(extra["teacher"], config, float(extra.get("alpha", 0.5)), float(extra.get("temperature", 4.0)),
                   on_event, control, run)


def _distill(config: RunConfig, teacher: loading.LoadedModel, teacher_file: Path, emit, control, run) -> dict:
    alpha, temperature = config.extra["alpha"], config.extra["temperature"]
    seed_everything(config.seed, config.deterministic)
    device = pick_device(config.device)
    pre = backbones.preprocessing_for(config)

    index = datasets.load_index(config.data, progress=lambda d, t: emit("phase", phase="extracting", done=d, total=t))
    split = datasets.split(index, config.val_fraction, config.seed)
    classes = split.classes
    if sorted(teacher.classes) != sorted(classes):
        raise ValueError(f"the teacher knows classes {', '.join(teacher.classes)} but the data has "
                         f"{', '.join(classes)}; distil on the dataset the teacher was trained for")
    runs.atomic_write_text(run.path / "split.json", json.dumps({**split.to_dict(), "content_hash": index.content_hash}))
    _warn_if_teacher_saw_val(teacher_file, split, emit)

    order = [teacher.classes.index(c) for c in classes]  # teacher columns in the student's class order
    all_items = split.train + split.val
    t_logits = teacher_logits(teacher, teacher_file, [p for p, _ in all_items],
                              progress=lambda d, t: emit("phase", phase="teacher logits", done=d, total=t))[:, order]
    t_train, t_val = t_logits[:len(split.train)], t_logits[len(split.train):]

    cache = datasets.ImageCache([p for p, _ in all_items], pre,
                            progress=lambda d, t: emit("phase", phase="decoding images", done=d, total=t))
    torch.manual_seed(config.seed)
    model = backbones.build_model(config.backbone, len(classes), pretrained=config.pretrained)
    groups = freezing.plan(config.backbone, config.trainable, config.trainable_groups)
    counts = freezing.apply(model, config.backbone, groups)
    model.to(device)

    use_features = groups == ["head"] and config.cache_features
    crop = datasets.eval_transform(pre)
    train_ds = _WithTeacher(datasets.CachedDataset(split.train, cache, crop), t_train)
    val_ds = _WithTeacher(datasets.CachedDataset(split.val, cache, crop), t_val)
    if use_features:  # a frozen body gives the same features every epoch: embed each image once
        def features(ds, logits):
            feats, labels = embed(model, torch.utils.data.DataLoader(ds.base, batch_size=64), pre, device)
            return torch.utils.data.TensorDataset(feats, labels, logits)
        train_ds, val_ds = features(train_ds, t_train), features(val_ds, t_val)

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        return model.head(x) if use_features else model(datasets.normalize(x, pre))

    g = torch.Generator()
    g.manual_seed(config.seed)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=config.batch_size, shuffle=True, generator=g,
                                               num_workers=config.num_workers)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=64, num_workers=config.num_workers)
    yva = torch.tensor([y for _, y in split.val])
    opt = make_optimizer(config, freezing.param_groups(model, config.backbone, groups, config.lr, config.lr_decay,
                                                       config.weight_decay))
    total = len(train_loader) * config.epochs
    sched = make_scheduler(config, opt, total)
    teacher_val_top1 = t_val.argmax(1)
    emit("start", technique="distill", device=str(device), classes=classes, n_train=len(split.train),
         n_val=len(split.val), trainable_groups=groups, params_trainable=counts["trainable"],
         params_total=counts["total"], cached_features=use_features, steps_per_epoch=len(train_loader),
         epochs=config.epochs, alpha=alpha, temperature=temperature, teacher=config.extra["teacher"],
         teacher_val_acc=float((teacher_val_top1 == yva).float().mean()) if len(yva) else 0.0,
         versions=loading.versions())

    step, best_acc, best_epoch, ips, t_loop = 0, -1.0, 0, 0.0, time.time()
    for epoch in range(config.epochs):
        freezing.set_train_mode(model, config.backbone, groups)
        tot_loss, tot_correct, tot_n, t_epoch = 0.0, 0, 0, time.time()
        for x, y, tl in train_loader:
            control.checkpoint()
            t_step = time.time()
            y, tl = y.to(device), tl.to(device)
            logits = forward(x).float()
            loss = distillation_loss(logits, tl, y, alpha, temperature)
            if not torch.isfinite(loss):
                raise RuntimeError(f"the loss became {loss.item()} at step {step + 1}; lower the learning rate "
                                   f"(now {config.lr:g}) or the temperature (now {temperature:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            sched.step()
            step += 1
            tot_loss += loss.item() * len(y)
            tot_correct += int((logits.argmax(1) == y).sum())
            tot_n += len(y)
            rate = len(y) / max(time.time() - t_step, 1e-9)
            ips = rate if ips == 0 else 0.9 * ips + 0.1 * rate
            emit("step", epoch=epoch + 1, step=step, total_steps=total, loss=loss.item(),
                 lr=opt.param_groups[0]["lr"], images_per_s=ips, eta_s=(time.time() - t_loop) / step * (total - step))

        model.eval()
        with torch.no_grad():
            val_logits = torch.cat([forward(x).float().cpu() for x, _, _ in val_loader])
        val_loss = float(nn.functional.cross_entropy(val_logits, yva)) if len(yva) else 0.0
        val_pred = val_logits.argmax(1)
        val_acc = float((val_pred == yva).float().mean()) if len(yva) else 0.0
        agreement = float((val_pred == teacher_val_top1).float().mean()) if len(yva) else 0.0
        improved = val_acc > best_acc
        if improved:
            best_acc, best_epoch = val_acc, epoch + 1
            metrics = {"val_accuracy": val_acc, "val_loss": val_loss, "agreement_with_teacher": agreement,
                       "epoch": epoch + 1}
            card = loading.make_card(config, classes, pre, metrics, technique="distill",
                                    teacher=config.extra["teacher"], alpha=alpha, temperature=temperature)
            loading.save_safetensors(model, card, run.best_weights)
        emit("epoch", epoch=epoch + 1, epochs=config.epochs, train_loss=tot_loss / max(tot_n, 1),
             train_acc=tot_correct / max(tot_n, 1), val_loss=val_loss, val_acc=val_acc, agreement=agreement,
             lr=opt.param_groups[0]["lr"], time_s=time.time() - t_epoch, best=improved, images_per_s=ips)

    result = {"status": "finished", "technique": "distill", "val_accuracy": best_acc, "best_epoch": best_epoch,
              "classes": classes, "run_dir": str(run.path), "elapsed_s": time.time() - t_loop}
    runs.atomic_write_text(run.path / "result.json", json.dumps(result, indent=2))
    return result


class _WithTeacher(torch.utils.data.Dataset):
    """(image, label, teacher logits) triples: the cached logits travel with their image."""

    def __init__(self, base: datasets.CachedDataset, logits: torch.Tensor):
        self.base, self.logits = base, logits

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, y, self.logits[i]


def _warn_if_teacher_saw_val(teacher_file: Path, split: datasets.Split, emit) -> None:
    """A teacher trained on the student's validation images makes the comparison look better than it is."""
    teacher_split = teacher_file.parent / "split.json"
    if not teacher_split.exists():
        return
    seen = {p for p, _ in json.loads(teacher_split.read_text()).get("train", [])}
    overlap = sum(p in seen for p, _ in split.val)
    if overlap:
        emit("warning", message=f"{overlap} of the {len(split.val)} validation images were in the teacher's "
                                f"training set; use the same data, seed and val_fraction as the teacher's run")


# --- the result table ----------------------------------------------------------------------------

def _latency_ms(model: nn.Module, size: int, repeats: int = 10) -> float:
    """Median CPU time for one image (batch of 1), after warm-up."""
    model = model.to("cpu").eval()
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 2):
            t = time.perf_counter()
            model(x)
            if i >= 2:
                times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def compare(teacher, students: dict, latency_repeats: int = 10) -> list[dict]:
    """Rows for the teacher and each student (label -> run id/dir or export) on the first student's val split.

    Columns: accuracy, top-1 agreement with the teacher, parameters, size on disk, CPU latency per image.
    """
    from core.results.metrics import predict_items

    if not students:
        raise ValueError("compare needs at least one student run (label -> run directory)")
    first = _weights_file(next(iter(students.values())))
    split_file = first.parent / "split.json"
    if not split_file.exists():
        raise ValueError(f"{first.parent} has no split.json; pass student run directories, not exported files")
    split = datasets.Split.from_dict(json.loads(split_file.read_text()))
    labels = np.array([y for _, y in split.val])
    entries = [("teacher", teacher)] + list(students.items())
    loaded = []
    for label, source in entries:
        model, path = (load_teacher(source) if label == "teacher" else
                       (loading.load_model(_weights_file(source)), _weights_file(source)))
        if sorted(model.classes) != sorted(split.classes):
            raise ValueError(f"{label} predicts {', '.join(model.classes)}, not the classes of the validation "
                             f"data ({', '.join(split.classes)})")
        probs = predict_items(model, split.val)[:, [model.classes.index(c) for c in split.classes]]
        loaded.append((label, model, path, probs.argmax(1)))
    teacher_pred = loaded[0][3]
    rows = []
    for label, model, path, pred in loaded:
        rows.append({"model": label, "backbone": model.card["backbone"],
                     "accuracy": float((pred == labels).mean()) if len(labels) else 0.0,
                     "agreement_with_teacher": float((pred == teacher_pred).mean()) if len(labels) else 0.0,
                     "parameters": sum(p.numel() for p in model.model.parameters()),
                     "size_mb": path.stat().st_size / 1e6,
                     "latency_ms": _latency_ms(model.model, model.preprocessing.crop_size, latency_repeats)})
    return rows
