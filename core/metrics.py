"""Evaluation on top of scikit-learn: per-class report, confusion matrix, misclassified examples."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from . import data, runs
from .export import load_model


def report(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted averages, confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    preds = probs.argmax(1)
    idx = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=idx, zero_division=0)
    per_class = [{"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                  "support": int(s[i])} for i, c in enumerate(classes)]
    avgs = {}
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(labels, preds, labels=idx, average=avg, zero_division=0)
        avgs[avg] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    return {"accuracy": float((preds == labels).mean()) if len(labels) else 0.0, "per_class": per_class,
            "averages": avgs, "confusion": confusion_matrix(labels, preds, labels=idx).tolist(), "classes": classes}


@torch.no_grad()
def predict_items(model, items: list[tuple[str, int]], batch_size: int = 64) -> np.ndarray:
    """Probabilities for (path, label) items through the decode-once cache and the model's preprocessing."""
    pre = model.preprocessing
    cache = data.ImageCache([p for p, _ in items], pre)
    crop = data.eval_transform(pre)
    out = []
    for i in range(0, len(items), batch_size):
        x = torch.stack([crop(cache.get(p)) for p, _ in items[i:i + batch_size]])
        out.append(torch.softmax(model.model(data.normalize(x, pre)).float(), 1))
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.classes)))


def evaluate_run(run_dir: str | Path, refresh: bool = False) -> dict:
    """Evaluate a run's best checkpoint on its validation split; cached in ``evaluation.json``."""
    run = runs.open_run(run_dir)
    out_file = run.path / "evaluation.json"
    if out_file.exists() and not refresh and out_file.stat().st_mtime >= run.best_weights.stat().st_mtime:
        return json.loads(out_file.read_text())
    if not run.best_weights.exists():
        raise ValueError(f"run {run.id} has no checkpoint yet; train at least one epoch")
    split = data.Split.from_dict(json.loads((run.path / "split.json").read_text()))
    model = load_model(run.path)
    probs = predict_items(model, split.val)
    labels = np.array([y for _, y in split.val])
    rep = report(labels, probs, split.classes)
    rep["items"] = [{"path": p, "label": int(y), "pred": int(pr.argmax()), "confidence": float(pr.max()),
                     "p_true": float(pr[y])} for (p, y), pr in zip(split.val, probs)]
    rep["probs"] = probs.round(6).tolist()
    runs.atomic_write_text(out_file, json.dumps(rep))
    return rep


def misclassified(rep: dict, limit: int = 24) -> list[dict]:
    """Wrong predictions, most confident first."""
    wrong = [it for it in rep["items"] if it["pred"] != it["label"]]
    return sorted(wrong, key=lambda it: -it["confidence"])[:limit]
