"""Multi-task learning: one shared backbone, one linear head per label column of a CSV.

The data is a CSV (``filename, task_a, task_b, ...``; an empty cell means "no label for this task"),
given directly, inside a folder, or inside a .zip with the images. The loss is
``sum_t w_t * L_t`` where ``L_t`` is the cross-entropy over the rows that have a label for task t;
rows missing that label contribute nothing to it. Per-task accuracy and macro F1 go into every
epoch event. The export carries every head; its card has ``"kind": "multitask"`` and the classes of
each task, and ``load_multitask`` rebuilds it and predicts every task at once.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.models import backbones
from core.models.heads import MultiTaskNet, build_multitask as build  # noqa: F401 (build: this technique's model)
from core.data import datasets
from core.results import loading
from core.models import freezing
from core.data import ingest
from core.storage import runs
from core.data.preprocess import Preprocessing
from core.config import RunConfig
from core.data.imageio import is_image_name, open_image
from core.train.loop import (Control, embed, logged_run, make_optimizer, make_scheduler, pick_device,
                      seed_everything)

MISSING = -1


# --- the table -----------------------------------------------------------------------------------

@dataclass
class TaskTable:
    """Images and their labels for several tasks; ``labels[t][i] == MISSING`` when row i has none for t."""

    files: list[str]                       # absolute image paths
    tasks: dict[str, list[str]]            # task -> class names (sorted)
    labels: dict[str, list[int]]           # task -> class index per row, MISSING when empty
    splits: list[str | None] = field(default_factory=list)  # "train" / "val" from a split column, else None
    skipped: list[str] = field(default_factory=list)         # rows left out, with the reason

    def label_matrix(self, rows: list[int] | None = None) -> torch.Tensor:
        """(rows, tasks) long tensor in task order, MISSING where unlabelled."""
        rows = range(len(self.files)) if rows is None else rows
        return torch.tensor([[self.labels[t][i] for t in self.tasks] for i in rows], dtype=torch.long)


def _find_csv(source: str) -> Path:
    p = Path(source)
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        return p
    root = datasets.resolve(source)
    found = sorted(q for q in root.rglob("*") if q.suffix.lower() in (".csv", ".tsv")
                   and not any(part.startswith(".") for part in q.relative_to(root).parts))
    if len(found) != 1:
        raise ValueError(f"{source!s} holds {len(found)} CSV files; multi-task data needs exactly one, with a "
                         f"filename column and one column per task (found: {', '.join(q.name for q in found)})")
    return found[0]


def read_table(source: str, tasks: list[str] | None = None) -> TaskTable:
    """Read a multi-label CSV (a .csv file, or a folder / .zip holding one CSV and the images)."""
    path = _find_csv(source)
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    first = text.split("\n", 1)[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" else max(",;\t|", key=first.count)
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise ValueError(f"{path.name} has no data rows; expected a header (filename, task_a, task_b, ...) and "
                         f"one row per image")
    header = [h.strip() for h in rows[0]]
    norm = [h.lower().replace(" ", "_").replace("-", "_") for h in header]
    file_col = next((norm.index(c) for c in ingest.FILENAME_COLUMNS if c in norm), 0)
    split_col = next((norm.index(c) for c in ingest.SPLIT_COLUMNS if c in norm), None)
    columns = [h for i, h in enumerate(header) if i not in (file_col, split_col)]
    if tasks is None:
        tasks = columns
    unknown = [t for t in tasks if t not in columns]
    if unknown or not tasks:
        raise ValueError(f"task column(s) {', '.join(unknown) or '(none)'} not in {path.name}; its label columns "
                         f"are {', '.join(columns) or '(none)'}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"each task may be named once; got {', '.join(tasks)}")
    col = {t: header.index(t) for t in tasks}

    base = path.parent
    by_name: dict[str, list[Path]] | None = None
    files, raw, splits, skipped = [], {t: [] for t in tasks}, [], []
    for lineno, row in enumerate(rows[1:], start=2):
        cell = lambda i: row[i].strip() if i < len(row) else ""  # noqa: E731 - short rows mean empty cells
        name = cell(file_col)
        target = (base / name) if name else None
        if target is not None and not target.is_file():
            if by_name is None:  # CSVs often list bare names while the images sit in sub-folders
                by_name = {}
                for q in base.rglob("*"):
                    if q.is_file() and is_image_name(q.name):
                        by_name.setdefault(q.name, []).append(q)
            hits = by_name.get(Path(name).name, [])
            target = hits[0] if len(hits) == 1 else None
        if target is None or not is_image_name(target.name):
            skipped.append(f"{path.name} line {lineno}: image {name!r} not found next to the CSV")
            continue
        values = {t: cell(col[t]) for t in tasks}
        if not any(values.values()):
            skipped.append(f"{path.name} line {lineno}: no label for any task")
            continue
        files.append(str(target.resolve()))
        for t in tasks:
            raw[t].append(values[t])
        s = cell(split_col).lower() if split_col is not None else ""
        splits.append("val" if s in ("val", "valid", "validation") else "train" if s == "train" else None)
    classes = {t: sorted({v for v in raw[t] if v}) for t in tasks}
    for t, cl in classes.items():
        if len(cl) < 2:
            raise ValueError(f"task {t!r} has {len(cl)} class ({', '.join(cl)}); each task needs at least 2 — "
                             f"fill in its column or leave the task out")
    labels = {t: [classes[t].index(v) if v else MISSING for v in raw[t]] for t in tasks}
    return TaskTable(files, classes, labels, splits, skipped)


def split_rows(table: TaskTable, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and validation row indices: the CSV's split column when present, else a seeded shuffle."""
    if any(s == "val" for s in table.splits) and any(s == "train" for s in table.splits):
        return ([i for i, s in enumerate(table.splits) if s != "val"],
                [i for i, s in enumerate(table.splits) if s == "val"])
    n = len(table.files)
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 2:
        raise ValueError(f"{n} labelled images are too few to hold out {n_val} for validation; add images")
    order = np.random.RandomState(seed).permutation(n).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


# --- model and loss ------------------------------------------------------------------------------

def masked_loss(logits: dict[str, torch.Tensor], targets: torch.Tensor, weights: dict[str, float]
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """sum_t w_t * CE_t over the rows labelled for task t; targets is (N, tasks) with MISSING for no label.

    Returns the total and each task's unweighted mean loss (NaN for a task with no label in the batch).
    """
    total = torch.zeros((), device=targets.device)
    parts: dict[str, float] = {}
    for k, (t, out) in enumerate(logits.items()):
        y = targets[:, k]
        mask = y != MISSING
        if not mask.any():
            parts[t] = float("nan")  # nothing to learn for this task here; not a zero loss
            continue
        loss_t = nn.functional.cross_entropy(out[mask].float(), y[mask])
        parts[t] = loss_t.item()
        total = total + weights.get(t, 1.0) * loss_t
    return total, parts


# --- training ------------------------------------------------------------------------------------

def _parse_weights(tasks: list[str], weights) -> dict[str, float]:
    if weights is None:
        return {t: 1.0 for t in tasks}
    if isinstance(weights, dict):
        w = {t: float(weights.get(t, 1.0)) for t in tasks}
    else:
        weights = list(weights)
        if len(weights) != len(tasks):
            raise ValueError(f"{len(weights)} task weights for {len(tasks)} tasks ({', '.join(tasks)}); "
                             f"give one weight per task, in the same order")
        w = {t: float(x) for t, x in zip(tasks, weights)}
    if any(v < 0 for v in w.values()) or not any(v > 0 for v in w.values()):
        raise ValueError(f"task weights must be >= 0 with at least one > 0; got {w}")
    return w


def fit_multitask(config: RunConfig, tasks: list[str] | None = None, weights=None, on_event=None,
                  control: Control | None = None, run: runs.Run | None = None) -> dict:
    """Train one backbone with a head per task on ``config.data`` (a multi-label CSV); returns final metrics."""
    table = read_table(config.data, tasks)
    task_names = list(table.tasks)
    w = _parse_weights(task_names, weights)
    config = dataclasses.replace(config, extra={**config.extra, "technique": "multitask", "tasks": task_names,
                                                "task_weights": w})
    backbones.check(config.validate())
    control = control or Control()
    run = run or runs.create(config)
    return logged_run(run, on_event, lambda emit: _fit(config, table, w, emit, control, run),
                      "stopped by the user; the best checkpoint so far is kept")


def fit_config(config: RunConfig, on_event=None, control: Control | None = None, run: runs.Run | None = None,
               resume: bool = False) -> dict:
    """Same call as trainer.fit, for job runners: tasks and weights come from ``config.extra``."""
    if resume:
        raise ValueError("a multi-task run cannot be resumed; start it again")
    return fit_multitask(config, config.extra.get("tasks"), config.extra.get("task_weights"), on_event, control, run)


class _Rows(torch.utils.data.Dataset):
    """(uint8 image, label row) pairs."""

    def __init__(self, files: list[str], labels: torch.Tensor, cache: datasets.ImageCache, transform):
        self.files, self.labels, self.cache, self.transform = files, labels, cache, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return self.transform(self.cache.get(self.files[i])), self.labels[i]


def task_metrics(logits: dict[str, torch.Tensor], targets: torch.Tensor, classes: dict[str, list[str]]) -> dict:
    """Per task: accuracy, macro F1, loss and the number of labelled rows they were computed on."""
    from sklearn.metrics import f1_score

    out = {}
    for k, t in enumerate(logits):
        y = targets[:, k]
        mask = y != MISSING
        n = int(mask.sum())
        if n == 0:
            out[t] = {"acc": None, "f1": None, "loss": None, "n": 0}
            continue
        lg, yt = logits[t][mask].float(), y[mask]
        pred = lg.argmax(1)
        out[t] = {"acc": float((pred == yt).float().mean()), "loss": float(nn.functional.cross_entropy(lg, yt)),
                  "f1": float(f1_score(yt.numpy(), pred.numpy(), labels=list(range(len(classes[t]))),
                                       average="macro", zero_division=0)), "n": n}
    return out


def _fit(config: RunConfig, table: TaskTable, weights: dict[str, float], emit, control, run) -> dict:
    seed_everything(config.seed, config.deterministic)
    device = pick_device(config.device)
    pre = backbones.preprocessing_for(config)
    tr, va = split_rows(table, config.val_fraction, config.seed)
    runs.atomic_write_text(run.path / "split.json", json.dumps({
        "tasks": table.tasks, "train": [[table.files[i], table.label_matrix([i])[0].tolist()] for i in tr],
        "val": [[table.files[i], table.label_matrix([i])[0].tolist()] for i in va], "skipped": table.skipped}))
    for s in table.skipped[:20]:
        emit("warning", message=s)
    cache = datasets.ImageCache(table.files, pre,
                            progress=lambda d, t: emit("phase", phase="decoding images", done=d, total=t))

    torch.manual_seed(config.seed)
    model, net = build(config.backbone, table.tasks, pretrained=config.pretrained)
    groups = freezing.plan(config.backbone, config.trainable, config.trainable_groups)
    counts = freezing.apply(net, config.backbone, groups)
    model.to(device)
    head_params = sum(p.numel() for p in model.heads.parameters())
    params_total = counts["total"] - sum(p.numel() for p in net.head.parameters()) + head_params
    params_trainable = counts["trainable"] - sum(p.numel() for p in net.head.parameters()) + head_params
    # Optimizer groups come from the layer groups of the original TransferNet; its unused head is swapped for ours.
    opt_groups = freezing.param_groups(net, config.backbone, groups, config.lr, config.lr_decay, config.weight_decay)
    for g in opt_groups:
        if g["name"] == "head":
            g["params"] = list(model.heads.parameters())

    ytr, yva = table.label_matrix(tr), table.label_matrix(va)
    ftr, fva = [table.files[i] for i in tr], [table.files[i] for i in va]
    use_features = groups == ["head"] and config.augment == "none" and config.cache_features
    augment = config if config.augment == "custom" else config.augment
    train_ds = _Rows(ftr, ytr, cache, datasets.train_transform(pre, augment))
    val_ds = _Rows(fva, yva, cache, datasets.eval_transform(pre))
    if use_features:  # a frozen body gives the same features every epoch: embed each image once
        def features(files, labels):
            loader = torch.utils.data.DataLoader(_Rows(files, labels, cache, datasets.eval_transform(pre)), batch_size=64)
            return torch.utils.data.TensorDataset(embed(net, loader, pre, device)[0], labels)
        train_ds, val_ds = features(ftr, ytr), features(fva, yva)

    def forward(x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.to(device)
        return model.forward_features(x) if use_features else model(datasets.normalize(x, pre))

    g = torch.Generator()
    g.manual_seed(config.seed)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=config.batch_size, shuffle=True, generator=g,
                                               num_workers=config.num_workers)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=64, num_workers=config.num_workers)
    opt = make_optimizer(config, opt_groups)
    total = len(train_loader) * config.epochs
    sched = make_scheduler(config, opt, total)
    labelled = {t: {"train": int((ytr[:, k] != MISSING).sum()), "val": int((yva[:, k] != MISSING).sum())}
                for k, t in enumerate(table.tasks)}
    emit("start", technique="multitask", device=str(device), tasks=table.tasks, task_weights=weights,
         labelled=labelled, n_train=len(tr), n_val=len(va), trainable_groups=groups,
         params_trainable=params_trainable, params_total=params_total, cached_features=use_features,
         steps_per_epoch=len(train_loader), epochs=config.epochs, versions=loading.versions())

    step, best, best_epoch, ips, t_loop = 0, -1.0, 0, 0.0, time.time()
    for epoch in range(config.epochs):
        freezing.set_train_mode(net, config.backbone, groups)
        model.heads.train()
        tot_loss, n_seen, t_epoch = 0.0, 0, time.time()
        train_logits, train_targets = {t: [] for t in table.tasks}, []
        for x, y in train_loader:
            control.checkpoint()
            t_step = time.time()
            y = y.to(device)
            logits = forward(x)
            loss, parts = masked_loss(logits, y, weights)
            if not torch.isfinite(loss):
                raise RuntimeError(f"the loss became {loss.item()} at step {step + 1}; lower the learning rate "
                                   f"(now {config.lr:g}) and try again")
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:  # False only when no row of the batch has a label for any task
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                opt.step()
            sched.step()
            step += 1
            tot_loss += loss.item() * len(y)
            n_seen += len(y)
            for t in table.tasks:
                train_logits[t].append(logits[t].detach().float().cpu())
            train_targets.append(y.cpu())
            rate = len(y) / max(time.time() - t_step, 1e-9)
            ips = rate if ips == 0 else 0.9 * ips + 0.1 * rate
            emit("step", epoch=epoch + 1, step=step, total_steps=total, loss=loss.item(),
                 task_losses={t: v for t, v in parts.items() if v == v}, lr=opt.param_groups[0]["lr"],
                 images_per_s=ips, eta_s=(time.time() - t_loop) / step * (total - step))

        model.eval()
        with torch.no_grad():
            outs = [(forward(x), y) for x, y in val_loader]
        val_logits = {t: torch.cat([o[t].float().cpu() for o, _ in outs]) for t in table.tasks}
        val_targets = torch.cat([y for _, y in outs])
        val = task_metrics(val_logits, val_targets, table.tasks)
        train = task_metrics({t: torch.cat(v) for t, v in train_logits.items()}, torch.cat(train_targets),
                             table.tasks)
        val_acc = _mean(v["acc"] for v in val.values())
        val_loss = sum(weights[t] * v["loss"] for t, v in val.items() if v["loss"] is not None)
        improved = val_acc > best
        if improved:
            best, best_epoch = val_acc, epoch + 1
            metrics = {"val_accuracy": val_acc, "val_loss": val_loss, "epoch": epoch + 1, "tasks": val}
            card = loading.make_card(config, [], pre, metrics, kind="multitask", tasks=table.tasks,
                                    task_weights=weights)
            loading.save_safetensors(model, card, run.best_weights)
        emit("epoch", epoch=epoch + 1, epochs=config.epochs, train_loss=tot_loss / max(n_seen, 1),
             train_acc=_mean(v["acc"] for v in train.values()), val_loss=val_loss, val_acc=val_acc,
             tasks={t: {"train_acc": train[t]["acc"], "val_acc": v["acc"], "val_f1": v["f1"], "val_loss": v["loss"],
                        "train_f1": train[t]["f1"], "n_val": v["n"]} for t, v in val.items()},
             lr=opt.param_groups[0]["lr"], time_s=time.time() - t_epoch, best=improved, images_per_s=ips)

    result = {"status": "finished", "technique": "multitask", "val_accuracy": best, "best_epoch": best_epoch,
              "tasks": table.tasks, "run_dir": str(run.path), "elapsed_s": time.time() - t_loop}
    runs.atomic_write_text(run.path / "result.json", json.dumps(result, indent=2))
    return result


def _mean(values) -> float:
    vals = [v for v in values if v is not None]
    return float(sum(vals) / len(vals)) if vals else 0.0
