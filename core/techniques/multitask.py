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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.models import backbones
from core.models.heads import TaskHeads
from core.data import datasets
from core.results import loading
from core.data import ingest
from core.data import labels as labelrules
from core.storage import paths
from core.storage import runs
from core.config import RunConfig
from core.data.imageio import is_image_name
from core.data.message import Message
from core.i18n import N_, _
from core.train import events
from core.train.technique import Data, Technique

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
                   and not any(part.startswith(".") for part in q.relative_to(root).parts)
                   and paths.within(q, root))  # a linked CSV could be any file on the server
    if len(found) != 1:
        raise ValueError(_("{source!s} holds {n} CSV files; multi-task data needs exactly one, with a filename "
                           "column and one column per task (found: {names})").format(
                             source=source, n=len(found), names=', '.join((q.name for q in found))))
    return found[0]


def _images_by_name(base: Path) -> dict[str, list[Path]]:
    """Image files under ``base`` by file name; links leading outside ``base`` are left out."""
    found: dict[str, list[Path]] = {}
    for q in base.rglob("*"):
        if is_image_name(q.name) and q.is_file() and paths.within(q, base):
            found.setdefault(q.name, []).append(q.resolve())
    return found


def read_table(source: str, tasks: list[str] | None = None) -> TaskTable:
    """Read a multi-label CSV (a .csv file, or a folder / .zip holding one CSV and the images)."""
    path = _find_csv(source)
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    first = text.split("\n", 1)[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" else max(",;\t|", key=first.count)
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise ValueError(_("{name} has no data rows; expected a header (filename, task_a, task_b, ...) and one "
                           "row per image").format(name=path.name))
    header = [h.strip() for h in rows[0]]
    norm = [h.lower().replace(" ", "_").replace("-", "_") for h in header]
    file_col = next((norm.index(c) for c in ingest.FILENAME_COLUMNS if c in norm), 0)
    split_col = next((norm.index(c) for c in ingest.SPLIT_COLUMNS if c in norm), None)
    columns = [h for i, h in enumerate(header) if i not in (file_col, split_col)]
    if tasks is None:
        tasks = columns
    unknown = [t for t in tasks if t not in columns]
    if unknown or not tasks:
        raise ValueError(_("task column(s) {unknown} not in {name}; its label columns are {columns}").format(
                             unknown=', '.join(unknown) or _("(none)"), name=path.name,
                             columns=', '.join(columns) or _("(none)")))
    if len(set(tasks)) != len(tasks):
        raise ValueError(_("each task may be named once; got {tasks}").format(tasks=', '.join(tasks)))
    for t in tasks:
        labelrules.check_label(t, f"{path.name}: the header of task column")
    col = {t: header.index(t) for t in tasks}

    base = path.parent.resolve()
    by_name: dict[str, list[Path]] | None = None
    files, raw, splits, skipped = [], {t: [] for t in tasks}, [], []
    for lineno, row in enumerate(rows[1:], start=2):
        cell = lambda i: row[i].strip() if i < len(row) else ""  # noqa: E731 - short rows mean empty cells
        name = cell(file_col)
        try:  # refused before any lookup: the row count never tells whether a file outside exists
            target = paths.contained(base, name)
        except paths.OutsideError as e:
            skipped.append(Message(N_("{file} line {line}: image path refused ({error})"), file=path.name,
                                   line=lineno, error=str(e)))
            continue
        if not target.is_file():
            if by_name is None:  # CSVs often list bare names while the images sit in sub-folders
                by_name = _images_by_name(base)
            hits = by_name.get(target.name, [])
            target = hits[0] if len(hits) == 1 else None
        if target is None or not is_image_name(target.name):
            skipped.append(Message(N_("{file} line {line}: image {name!r} not found next to the CSV"),
                                   file=path.name, line=lineno, name=name))
            continue
        values = {t: cell(col[t]) for t in tasks}
        if not any(values.values()):
            skipped.append(Message(N_("{file} line {line}: no label for any task"), file=path.name, line=lineno))
            continue
        bad = [(t, v, labelrules.label_problem(v)) for t, v in values.items() if v and labelrules.label_problem(v)]
        if bad:
            t, v, why = bad[0]
            skipped.append(Message(N_("{file} line {line}: label {label!r} of task {task!r} {why} — fix the cell"),
                                   file=path.name, line=lineno, label=v[:60], task=t, why=why))
            continue
        files.append(str(target))
        for t in tasks:
            raw[t].append(values[t])
        s = cell(split_col).lower() if split_col is not None else ""
        splits.append("val" if s in ("val", "valid", "validation") else "train" if s == "train" else None)
    classes = {t: sorted({v for v in raw[t] if v}) for t in tasks}
    for t, cl in classes.items():
        if len(cl) < 2:
            raise ValueError(_("task {t!r} has {n} class ({cl}); each task needs at least 2 — fill in its column "
                               "or leave the task out").format(t=t, n=len(cl), cl=', '.join(cl)))
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
        raise ValueError(_("{n} labelled images are too few to hold out {n_val} for validation; add images").format(
                             n=n, n_val=n_val))
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


# --- the technique -------------------------------------------------------------------------------

def _parse_weights(tasks: list[str], weights) -> dict[str, float]:
    if weights is None:
        return {t: 1.0 for t in tasks}
    if isinstance(weights, dict):
        w = {t: float(weights.get(t, 1.0)) for t in tasks}
    else:
        weights = list(weights)
        if len(weights) != len(tasks):
            raise ValueError(_("{n} task weights for {n2} tasks ({tasks}); give one weight per task, in the same "
                               "order").format(n=len(weights), n2=len(tasks), tasks=', '.join(tasks)))
        w = {t: float(x) for t, x in zip(tasks, weights)}
    if any(v < 0 for v in w.values()) or not any(v > 0 for v in w.values()):
        raise ValueError(_("task weights must be >= 0 with at least one > 0; got {w}").format(w=w))
    return w


def fit_multitask(config: RunConfig, tasks: list[str] | None = None, weights=None, on_event=None,
                  control=None, run: runs.Run | None = None) -> dict:
    """Train one backbone with a head per task on ``config.data`` (a multi-label CSV); returns final metrics."""
    from core.techniques import fit

    if isinstance(weights, dict):
        weights = [float(weights[t]) for t in (tasks or weights)]
    config = dataclasses.replace(config, technique="multitask", tasks=tasks,
                                 task_weights=[float(w) for w in weights] if weights is not None else None)
    return fit(config, on_event, control, run)


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


def _mean(values) -> float:
    vals = [v for v in values if v is not None]
    return float(sum(vals) / len(vals)) if vals else 0.0


class MultiTask(Technique):
    """One linear head per label column; the loss sums each task's cross-entropy over its labelled rows."""

    name = kind = "multitask"
    # a task's loss is the mean over the rows labelled for it: chunks of a batch would weigh those rows differently
    per_sample_loss = False

    def check(self, config: RunConfig) -> None:
        if config.task_weights is not None and config.tasks is not None:
            _parse_weights(config.tasks, config.task_weights)

    def data(self, config: RunConfig, run, resume: bool, emit) -> Data:
        split_file = run.path / "split.json"
        if resume and split_file.exists():
            d = json.loads(split_file.read_text())
            self.tasks = {t: list(c) for t, c in d["tasks"].items()}
            train, val = d["train"], d["val"]
        else:
            table = read_table(config.data, config.tasks)
            tr, va = split_rows(table, config.val_fraction, config.seed)
            self.tasks = table.tasks
            train = [[table.files[i], table.label_matrix([i])[0].tolist()] for i in tr]
            val = [[table.files[i], table.label_matrix([i])[0].tolist()] for i in va]
            runs.atomic_write_text(split_file, json.dumps({"tasks": table.tasks, "train": train, "val": val,
                                                           "skipped": table.skipped}))
            for s in table.skipped[:20]:
                emit("warning", **events.carried(s))
        self.weights = _parse_weights(list(self.tasks), config.task_weights)
        ytr = torch.tensor([r for _, r in train], dtype=torch.long).reshape(len(train), len(self.tasks))
        yva = torch.tensor([r for _, r in val], dtype=torch.long).reshape(len(val), len(self.tasks))
        labelled = {t: {"train": int((ytr[:, k] != MISSING).sum()), "val": int((yva[:, k] != MISSING).sum())}
                    for k, t in enumerate(self.tasks)}
        return Data([p for p, _ in train], {"labels": ytr}, [p for p, _ in val], {"labels": yva},
                    info={"tasks": self.tasks, "task_weights": self.weights, "labelled": labelled})

    def build(self, config: RunConfig, data: Data) -> nn.Module:
        net = backbones.build_model(config.backbone, 1, pretrained=config.pretrained)
        net.head = TaskHeads({t: nn.Linear(backbones.feature_dim(net), len(c)) for t, c in self.tasks.items()})
        return net

    def loss(self, out, y):
        loss, _ = masked_loss(out, y["labels"], self.weights)
        sums = {}
        for k, t in enumerate(self.tasks):
            mask = y["labels"][:, k] != MISSING
            sums[f"correct:{t}"] = float((out[t][mask].argmax(1) == y["labels"][mask, k]).sum())
            sums[f"n:{t}"] = float(mask.sum())
        return loss, sums

    def train_metrics(self, sums: dict) -> dict:
        self._train_acc = {t: (sums[f"correct:{t}"] / sums[f"n:{t}"] if sums.get(f"n:{t}") else None)
                           for t in self.tasks}
        return {"train_acc": _mean(self._train_acc.values())}

    def collect(self, out, y):
        return {**{f"logits:{t}": v.float() for t, v in out.items()}, "labels": y["labels"]}

    def metrics(self, rows: dict) -> dict:
        if "labels" not in rows:
            return {"val_loss": 0.0, "val_acc": 0.0, "tasks": {}}
        val = task_metrics({t: rows[f"logits:{t}"] for t in self.tasks}, rows["labels"], self.tasks)
        train = getattr(self, "_train_acc", {})
        return {"val_loss": sum(self.weights[t] * v["loss"] for t, v in val.items() if v["loss"] is not None),
                "val_acc": _mean(v["acc"] for v in val.values()),
                "tasks": {t: {"train_acc": train.get(t), "val_acc": v["acc"], "val_f1": v["f1"], "val_loss": v["loss"],
                              "n_val": v["n"]} for t, v in val.items()}}

    def card(self, config: RunConfig, pre, metrics: dict) -> dict:
        return loading.make_card(config, [], pre, metrics, kind="multitask", tasks=self.tasks,
                                 task_weights=self.weights)

    def export_state(self, state: dict) -> dict:
        # saved as core.models.heads.MultiTaskNet: body.*, heads.<task>.*
        return {("heads." + k[len("head."):] if k.startswith("head.") else k): v for k, v in state.items()}

    def result(self, best_metrics: dict) -> dict:
        return {"tasks": self.tasks}


TECHNIQUE = MultiTask
