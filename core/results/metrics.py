"""Evaluation on top of scikit-learn: per-class report, confusion matrix, misclassified examples."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from core.data import datasets
from core.models.net import infer
from core.storage import runs
from core.results.loading import load_model
from core.results.tta import mode_of as tta_mode, probs as _views_probs
from core.i18n import _


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


def tta_probs(net, x: torch.Tensor, mode: str = "flip") -> torch.Tensor:
    """Test-time augmentation: the softmax over the views of ``mode`` (core.results.tta), averaged."""
    return _views_probs(net, x, mode)


@torch.no_grad()
def predict_items(model, items: list[tuple[str, int]], batch_size: int = 64, tta: bool | str = False) -> np.ndarray:
    """Probabilities for (path, label) items through the decode-once cache and the model's preprocessing
    (``tta``: "flip" or True, "multicrop", averaged over the views, see ``core.results.tta``)."""
    mode = tta_mode(tta)
    pre = model.preprocessing
    cache = datasets.ImageCache([p for p, _ in items], pre)
    crop = datasets.eval_transform(pre)
    out = []
    for i in range(0, len(items), batch_size):
        x = datasets.normalize(torch.stack([crop(cache.get(p)) for p, _ in items[i:i + batch_size]]), pre)
        out.append(tta_probs(model.model, x, mode) if mode != "none" else torch.softmax(infer(model.model, x).float(), 1))
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.classes)))


def evaluate_run(run_dir: str | Path, refresh: bool = False, tta: bool | str = False) -> dict:
    """Evaluate a run's best checkpoint on its validation split; cached in ``evaluation.json``
    (``evaluation_tta.json`` with the flip, ``evaluation_multicrop.json`` with the multi-crop augmentation)."""
    mode = tta_mode(tta)
    run = runs.open_run(run_dir)
    out_file = run.path / {"none": "evaluation.json", "flip": "evaluation_tta.json",
                           "multicrop": "evaluation_multicrop.json"}[mode]
    if out_file.exists() and not refresh and out_file.stat().st_mtime >= run.best_weights.stat().st_mtime:
        return json.loads(out_file.read_text())
    if not run.best_weights.exists():
        raise ValueError(_("run {id} has no checkpoint yet; train at least one epoch").format(id=run.id))
    split = datasets.Split.from_dict(json.loads((run.path / "split.json").read_text()))
    model = load_model(run.path)
    probs = predict_items(model, split.val, tta=mode)
    labels = np.array([y for _, y in split.val])
    rep = report(labels, probs, split.classes)
    rep["tta"], rep["tta_mode"] = mode != "none", mode
    rep["items"] = _items(split.val, probs)
    rep["probs"] = probs.round(6).tolist()
    runs.atomic_write_text(out_file, json.dumps(rep))
    return rep


def _items(items: list[tuple[str, int]], probs: np.ndarray) -> list[dict]:
    return [{"path": p, "label": int(y), "pred": int(pr.argmax()), "confidence": float(pr.max()),
             "p_true": float(pr[y]), "loss": _loss(float(pr[y]))} for (p, y), pr in zip(items, probs)]


def _loss(p_true: float) -> float:
    """Cross-entropy of one item; probabilities are stored rounded, so 0 is clipped rather than infinite."""
    return float(-np.log(max(p_true, 1e-7)))


def _with_names(it: dict, classes: list[str]) -> dict:
    return {**it, "loss": it.get("loss", _loss(it["p_true"])), "true_class": classes[it["label"]],
            "pred_class": classes[it["pred"]]}


def misclassified(rep: dict, limit: int = 24) -> list[dict]:
    """Wrong predictions, most confident first, each with its loss and class names."""
    wrong = [_with_names(it, rep["classes"]) for it in rep["items"] if it["pred"] != it["label"]]
    return sorted(wrong, key=lambda it: -it["confidence"])[:limit]


def top_losses(rep: dict, limit: int = 24, wrong_only: bool = False) -> list[dict]:
    """Items by decreasing loss (fastai's top losses): confidently wrong first, then unsure right ones."""
    items = [_with_names(it, rep["classes"]) for it in rep["items"] if not wrong_only or it["pred"] != it["label"]]
    return sorted(items, key=lambda it: -it["loss"])[:limit]


def cell_items(rep: dict, true_idx: int, pred_idx: int) -> list[dict]:
    """The images behind one confusion-matrix cell (row = true class, column = predicted), most confident first."""
    n = len(rep["classes"])
    for name, v in (("true_idx", true_idx), ("pred_idx", pred_idx)):
        if not (isinstance(v, (int, np.integer)) and 0 <= v < n):
            raise ValueError(_("{name} must be a class index in 0..{n}; got {v!r}").format(name=name, n=n - 1, v=v))
    hits = [_with_names(it, rep["classes"]) for it in rep["items"]
            if it["label"] == true_idx and it["pred"] == pred_idx]
    return sorted(hits, key=lambda it: -it["confidence"])


def evaluate_on(model_path: str | Path, dataset_source: str | Path, progress=None, tta: bool | str = False) -> dict:
    """Evaluate a finished model on another labelled dataset (folder or .zip), matching classes by name, with
    test-time augmentation ``tta`` as ``evaluate_run`` takes it.

    Images of classes the model does not know are left out and listed in ``unknown_classes``; model
    classes with no images are listed in ``missing_classes``. Same keys as ``evaluate_run`` otherwise.
    """
    model = load_model(model_path)
    index = datasets.load_index(dataset_source, progress=progress)
    known = {c: i for i, c in enumerate(model.classes)}
    root = Path(index.root)
    items = [(str(root / it.path), known[it.label]) for it in index.items if it.label in known]
    unknown: dict[str, int] = {}
    for it in index.items:
        if it.label not in known:
            unknown[it.label] = unknown.get(it.label, 0) + 1
    present = {it.label for it in index.items}
    if not items:
        raise ValueError(_("none of the test set's classes ({classes}) is one the model knows ({classes2}); class "
                           "folders must be named like the training classes").format(
                             classes=', '.join(index.classes), classes2=', '.join(model.classes)))
    mode = tta_mode(tta)
    probs = predict_items(model, items, tta=mode)
    labels = np.array([y for _, y in items])
    rep = report(labels, probs, model.classes)
    rep["tta"], rep["tta_mode"] = mode != "none", mode
    rep["items"] = _items(items, probs)
    rep["probs"] = probs.round(6).tolist()
    rep.update({"source": str(dataset_source), "n_evaluated": len(items), "unknown_classes": unknown,
                "n_ignored": sum(unknown.values()), "missing_classes": [c for c in model.classes if c not in present],
                "skipped_files": [s.__dict__ for s in index.skipped]})
    return rep
