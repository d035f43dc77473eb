"""Knowledge distillation for text: a fine-tuned text classifier teaches a smaller text encoder.

The loss is the image distillation's (``core.techniques.distill.distillation_loss``): alpha * CE on the labels
plus (1 - alpha) * T^2 * KL between the temperature-softened teacher and student. The teacher's logits are
computed once per text, with the teacher's own tokenizer and max_length, before the first step (texts are not
augmented, so they are exact for every epoch) and cached on disk per teacher file and text list. The student is
any text backbone; the default is MiniLM-L3 (``text_backbones.TRUNCATED``), the first 3 blocks of the bundled
all-MiniLM-L6-v2. The student's card names its teacher (``distilled_from``), and ``load_model`` predicts with it
like any text classifier.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from core.config import RunConfig
from core.data import text as text_data
from core.i18n import N_, _
from core.models import text_backbones
from core.results import loading
from core.storage import cards, runs, workspace
from core.techniques.distill import distillation_loss
from core.techniques.text_classifier import TextClassifier, text_card
from core.train.events import said
from core.train.technique import Data


def _weights_file(source) -> Path:
    p = Path(str(source))
    if not p.exists():
        p = runs.open_run(source).path  # a bare run id
    return cards.weights_file(p)


def load_teacher(source) -> tuple[loading.LoadedTextModel, Path]:
    """The text teacher and its weights file, from a run id, a run directory or an exported text model."""
    path = _weights_file(source)
    if not path.exists():
        raise ValueError(_("teacher {source} has no weights yet ({name} missing); pick a finished text run or an "
                           "exported .safetensors / .pt text model").format(source=source, name=path.name))
    card = loading.read_card(path)
    if cards.card_kind(card) != "classifier" or card.get("modality") != "text":
        raise ValueError(_("teacher {source} is not a text classifier (kind {kind}, modality {modality}); a text "
                           "student needs a finished text classification run as its teacher").format(
            source=source, kind=cards.card_kind(card), modality=card.get("modality", "image")))
    return loading.load_model(path), path


@torch.no_grad()
def teacher_logits(teacher: loading.LoadedTextModel, weights_file: Path, texts: list[str],
                   progress=None) -> torch.Tensor:
    """The teacher's logits for each text, cached on disk per teacher file and text list."""
    st = Path(weights_file).stat()
    key = hashlib.sha256(json.dumps([str(Path(weights_file).resolve()), st.st_size, st.st_mtime_ns, texts,
                                     teacher.max_length]).encode()).hexdigest()[:20]
    file = workspace.sub("cache") / f"text-teacher-{key}.npy"
    if file.exists():
        return torch.from_numpy(np.load(file))
    teacher.model.eval()
    out = []
    for i in range(0, len(texts), 64):
        ids = text_backbones.tokenize(teacher.tokenizer, texts[i:i + 64], teacher.max_length)
        out.append(teacher.model(ids).float())
        if progress:
            progress(min(i + 64, len(texts)), len(texts))
    logits = torch.cat(out) if out else torch.zeros(0, len(teacher.classes))
    tmp = file.with_name(f"{file.stem}.{id(logits)}.tmp.npy")
    np.save(tmp, logits.numpy())
    tmp.replace(file)
    return logits


def distill(teacher, student_config: RunConfig, alpha: float = 0.5, temperature: float = 4.0, on_event=None,
            control=None, run: runs.Run | None = None) -> dict:
    """Train the text student ``student_config`` against ``teacher`` (run id/dir or export); final metrics."""
    from core.techniques import fit

    config = dataclasses.replace(student_config, technique="text_distill", teacher=str(teacher), distill_alpha=alpha,
                                 distill_temperature=temperature)
    return fit(config, on_event, control, run)


class TextDistill(TextClassifier):
    """A text classifier whose loss also pulls its softened outputs toward a text teacher's."""

    name = "text_distill"
    stopped_message = N_("stopped by the user; the best student so far is kept")

    def check(self, config: RunConfig) -> None:
        super().check(config)
        if not config.teacher:
            raise ValueError(_("teacher is missing: name the finished text run (id or folder) or the exported text "
                               "model that teaches this student"))
        if not 0 <= config.distill_alpha <= 1:
            raise ValueError(_("distill_alpha (weight of the true-label loss) must be in [0, 1]; got {alpha!r}")
                             .format(alpha=config.distill_alpha))
        if not config.distill_temperature > 0:
            raise ValueError(_("distill_temperature must be > 0 (typical: 2-8); got {temperature!r}").format(
                temperature=config.distill_temperature))
        load_teacher(config.teacher)  # a clear error now rather than after the texts are read

    def data(self, config: RunConfig, run, resume: bool, emit) -> Data:
        d = super().data(config, run, resume, emit)
        teacher, teacher_file = load_teacher(config.teacher)
        if sorted(teacher.classes) != sorted(self.classes):
            raise ValueError(_("the teacher knows classes {teacher_classes} but the data has {classes}; distil on "
                               "the dataset the teacher was trained for").format(
                teacher_classes=", ".join(teacher.classes), classes=", ".join(self.classes)))
        self.alpha, self.temperature, self.teacher = config.distill_alpha, config.distill_temperature, config.teacher
        self.teacher_name = teacher.card.get("config", {}).get("name") or teacher_file.parent.name
        self.teacher_backbone = teacher.card["backbone"]
        _warn_if_teacher_saw_val(teacher_file, d.val, emit)
        order = [teacher.classes.index(c) for c in self.classes]  # teacher columns in the student's class order
        logits = teacher_logits(teacher, teacher_file, d.train + d.val, progress=lambda k, n: emit(
            "phase", phase=N_("teacher logits"), done=k, total=n))[:, order]
        d.train_targets["teacher"], d.val_targets["teacher"] = logits[:len(d.train)], logits[len(d.train):]
        yva, tva = d.val_targets["label"], d.val_targets["teacher"].argmax(1)
        d.info.update(alpha=self.alpha, temperature=self.temperature, teacher=config.teacher,
                      teacher_backbone=self.teacher_backbone,
                      teacher_val_acc=float((tva == yva).float().mean()) if len(yva) else 0.0)
        return d

    def loss(self, out, y):
        logits = out.float()
        loss = distillation_loss(logits, y["teacher"].float(), y["label"], self.alpha, self.temperature)
        return loss, {"correct": float((logits.argmax(1) == y["label"]).sum()), "n": float(len(logits))}

    def collect(self, out, y):
        return {"logits": out.float(), "label": y["label"], "teacher": y["teacher"].float()}

    def metrics(self, rows: dict) -> dict:
        m = super().metrics(rows)
        if "teacher" not in rows or not len(rows["teacher"]):
            return {**m, "agreement": 0.0, "kl_to_teacher": 0.0}
        s, t = rows["logits"], rows["teacher"]
        kl = torch.nn.functional.kl_div(torch.log_softmax(s, 1), torch.log_softmax(t, 1), reduction="batchmean",
                                        log_target=True)
        return {**m, "agreement": float((s.argmax(1) == t.argmax(1)).float().mean()), "kl_to_teacher": float(kl)}

    def card(self, config: RunConfig, pre, metrics: dict) -> dict:
        metrics = {**metrics, "agreement_with_teacher": metrics.get("agreement")}
        return {**text_card(config, self.classes, metrics), "technique": "text_distill", "teacher": config.teacher,
                "distilled_from": {"teacher": config.teacher, "name": self.teacher_name,
                                   "backbone": self.teacher_backbone},
                "alpha": self.alpha, "temperature": self.temperature}

    def result(self, best_metrics: dict) -> dict:
        return {**super().result(best_metrics), "teacher": self.teacher,
                "agreement_with_teacher": best_metrics.get("agreement")}


TECHNIQUE = TextDistill


def _warn_if_teacher_saw_val(teacher_file: Path, val_texts: list[str], emit) -> None:
    """A teacher trained on the student's validation texts makes the student look better than it is."""
    teacher_split = teacher_file.parent / "split.json"
    if not teacher_split.exists():
        return
    seen = {text_data.normalise(t) for t, _ in json.loads(teacher_split.read_text()).get("train", [])}
    overlap = sum(text_data.normalise(t) in seen for t in val_texts)
    if overlap:
        emit("warning", **said(N_("{overlap} of the {n} validation texts were in the teacher's training set; use the "
                                  "same data, seed and val_fraction as the teacher's run"), overlap=overlap,
                               n=len(val_texts)))


# --- the result table ----------------------------------------------------------------------------------------

def _latency_ms(model: loading.LoadedTextModel, text: str, repeats: int = 10) -> float:
    """Median CPU time to classify one text (batch of 1, tokenizing included), after warm-up."""
    import statistics
    import time

    model.model.to("cpu").eval()
    times = []
    for i in range(repeats + 2):
        t = time.perf_counter()
        model.predict_proba([text])
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def compare(teacher, students: dict, latency_repeats: int = 10) -> list[dict]:
    """Rows for the teacher and each student (label -> run dir/id) on the first student's validation texts:
    accuracy, top-1 agreement with the teacher, parameters, size on disk, CPU latency per text."""
    if not students:
        raise ValueError(_("compare needs at least one student run (label -> run directory)"))
    first = _weights_file(next(iter(students.values())))
    split_file = first.parent / "split.json"
    if not split_file.exists():
        raise ValueError(_("{folder} has no split.json; pass student run directories, not exported files").format(
            folder=first.parent))
    split = text_data.TextSplit.from_dict(json.loads(split_file.read_text()))
    texts, labels = [t for t, _ in split.val], np.array([y for _, y in split.val])
    loaded = []
    for label, source in [("teacher", teacher)] + list(students.items()):
        model, path = load_teacher(source)
        if sorted(model.classes) != sorted(split.classes):
            raise ValueError(_("{label} predicts {classes}, not the classes of the validation texts ({expected})")
                             .format(label=label, classes=", ".join(model.classes),
                                     expected=", ".join(split.classes)))
        probs = model.predict_proba(texts)[:, [model.classes.index(c) for c in split.classes]].numpy()
        loaded.append((label, model, path, probs.argmax(1)))
    teacher_pred = loaded[0][3]
    return [{"model": label, "backbone": model.card["backbone"],
             "accuracy": float((pred == labels).mean()) if len(labels) else 0.0,
             "agreement_with_teacher": float((pred == teacher_pred).mean()) if len(labels) else 0.0,
             "parameters": sum(p.numel() for p in model.model.parameters()), "size_mb": path.stat().st_size / 1e6,
             "latency_ms": _latency_ms(model, texts[0] if texts else "a short text", latency_repeats)}
            for label, model, path, pred in loaded]
