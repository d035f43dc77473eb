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

from core.data import datasets
from core.results import loading
from core.storage import cards, runs
from core.storage import workspace
from core.config import RunConfig
from core.i18n import N_, _
from core.techniques.classifier import Classifier
from core.train.events import said
from core.train.technique import Data


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
    return cards.weights_file(p)


def load_teacher(source) -> tuple[loading.LoadedModel, Path]:
    """The teacher model and its weights file, from a run id, a run directory or an exported model."""
    path = _weights_file(source)
    if not path.exists():
        raise ValueError(_("teacher {source!s} has no weights yet ({name} missing); pick a finished run or an "
                           "exported .safetensors / .pt file").format(source=source, name=path.name))
    card = loading.read_card(path)
    if card.get("kind", "classifier") != "classifier":
        raise ValueError(_("teacher {source!s} is a {kind} model; a teacher must be a classifier run").format(
                             source=source, kind=card['kind']))
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


# --- the technique --------------------------------------------------------------------------------

def distill(teacher, student_config: RunConfig, alpha: float = 0.5, temperature: float = 4.0, on_event=None,
            control=None, run: runs.Run | None = None) -> dict:
    """Train ``student_config`` against ``teacher`` (run id/dir or export); returns the final metrics."""
    from core.techniques import fit

    config = dataclasses.replace(student_config, technique="distill", teacher=str(teacher), distill_alpha=alpha,
                                 distill_temperature=temperature)
    return fit(config, on_event, control, run)


class Distill(Classifier):
    """A classifier whose loss also pulls its softened outputs toward a teacher's (targets: label, teacher)."""

    name = "distill"
    kind = "classifier"  # the student is an ordinary classifier
    stopped_message = N_("stopped by the user; the best student so far is kept")

    def check(self, config: RunConfig) -> None:
        if not config.teacher:
            raise ValueError(_("teacher is missing: name the finished run (id or folder) or the exported model "
                               "that teaches this student"))
        if not 0 <= config.distill_alpha <= 1:
            raise ValueError(_("distill_alpha (weight of the true-label loss) must be in [0, 1]; got "
                               "{distill_alpha!r}").format(distill_alpha=config.distill_alpha))
        if not config.distill_temperature > 0:
            raise ValueError(_("distill_temperature must be > 0 (typical: 2-8); got {distill_temperature!r}").format(
                                 distill_temperature=config.distill_temperature))
        if config.augment != "none":
            raise ValueError(_("distillation needs augment='none' (got {augment!r}): the teacher's logits are "
                               "computed once on the centre crop, so the student must see that same view").format(
                                 augment=config.augment))
        load_teacher(config.teacher)  # a clear error now rather than after the data is read

    def data(self, config: RunConfig, run, resume: bool, emit) -> Data:
        d = super().data(config, run, resume, emit)
        teacher, teacher_file = load_teacher(config.teacher)
        if sorted(teacher.classes) != sorted(self.classes):
            raise ValueError(_("the teacher knows classes {classes} but the data has {classes2}; distil on the "
                               "dataset the teacher was trained for").format(
                                 classes=', '.join(teacher.classes), classes2=', '.join(self.classes)))
        self.alpha, self.temperature = config.distill_alpha, config.distill_temperature
        split = datasets.Split(self.classes, list(zip(d.train, d.train_targets["label"].tolist())),
                               list(zip(d.val, d.val_targets["label"].tolist())))
        _warn_if_teacher_saw_val(teacher_file, split, emit)
        order = [teacher.classes.index(c) for c in self.classes]  # teacher columns in the student's class order
        logits = teacher_logits(teacher, teacher_file, d.train + d.val,
                                progress=lambda k, n: emit("phase", phase=N_("teacher logits"), done=k, total=n))[:, order]
        d.train_targets["teacher"], d.val_targets["teacher"] = logits[:len(d.train)], logits[len(d.train):]
        yva, tva = d.val_targets["label"], d.val_targets["teacher"].argmax(1)
        d.info.update(alpha=self.alpha, temperature=self.temperature, teacher=config.teacher,
                      teacher_val_acc=float((tva == yva).float().mean()) if len(yva) else 0.0)
        return d

    def loss(self, out, y):
        logits = out.float()
        loss = distillation_loss(logits, y["teacher"].float(), y["label"], self.alpha, self.temperature)
        return loss, {"correct": float((logits.argmax(1) == y["label"]).sum()), "n": float(len(logits))}

    def collect(self, out, y):
        return {**super().collect(out, y), "teacher_top1": y["teacher"].argmax(1)}

    def metrics(self, rows: dict) -> dict:
        m = super().metrics(rows)
        y = rows.get("label")
        agree = (rows["logits"].argmax(1) == rows["teacher_top1"]).float().mean() if y is not None and len(y) else 0
        return {**m, "agreement": float(agree)}

    def card(self, config: RunConfig, pre, metrics: dict) -> dict:
        metrics = {**metrics, "agreement_with_teacher": metrics.get("agreement")}
        return loading.make_card(config, self.classes, pre, metrics, technique="distill", teacher=config.teacher,
                                 alpha=self.alpha, temperature=self.temperature)


TECHNIQUE = Distill


def _warn_if_teacher_saw_val(teacher_file: Path, split: datasets.Split, emit) -> None:
    """A teacher trained on the student's validation images makes the comparison look better than it is."""
    teacher_split = teacher_file.parent / "split.json"
    if not teacher_split.exists():
        return
    seen = {p for p, _ in json.loads(teacher_split.read_text()).get("train", [])}
    overlap = sum(p in seen for p, _ in split.val)
    if overlap:
        emit("warning", **said(N_("{overlap} of the {n} validation images were in the teacher's training set; use "
                                  "the same data, seed and val_fraction as the teacher's run"),
                               overlap=overlap, n=len(split.val)))


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
        raise ValueError(_("compare needs at least one student run (label -> run directory)"))
    first = _weights_file(next(iter(students.values())))
    split_file = first.parent / "split.json"
    if not split_file.exists():
        raise ValueError(_("{parent} has no split.json; pass student run directories, not exported files").format(
                             parent=first.parent))
    split = datasets.Split.from_dict(json.loads(split_file.read_text()))
    labels = np.array([y for _, y in split.val])
    entries = [("teacher", teacher)] + list(students.items())
    loaded = []
    for label, source in entries:
        model, path = (load_teacher(source) if label == "teacher" else
                       (loading.load_model(_weights_file(source)), _weights_file(source)))
        if sorted(model.classes) != sorted(split.classes):
            raise ValueError(_("{label} predicts {classes}, not the classes of the validation data ({classes2})").format(
                                 label=label, classes=', '.join(model.classes), classes2=', '.join(split.classes)))
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
