"""Evaluation and explanation of a text classifier (issue 17): the image report's shape, texts in place of paths.

``evaluate_text_run`` returns what ``core.results.metrics.evaluate_run`` returns (accuracy, per-class P/R/F1,
confusion, items), each item carrying its ``text``, so ``metrics.top_losses`` and ``metrics.cell_items`` serve both
modalities. ``explain_text`` scores every token of a text by integrated gradients over the token embeddings.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from core.data.text import TextSplit
from core.i18n import _
from core.models import text_backbones
from core.results import metrics
from core.results.loading import LoadedTextModel, load_model
from core.storage import runs


@torch.no_grad()
def predict_texts(model: LoadedTextModel, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Class probabilities (n, classes) for texts, in batches."""
    out = [model.predict_proba(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.classes)))


def evaluate_text_run(run_dir: str | Path, refresh: bool = False) -> dict:
    """A text run's best checkpoint on its validation split, cached in ``evaluation.json``."""
    run = runs.open_run(run_dir)
    out_file = run.path / "evaluation.json"
    if not run.best_weights.exists():
        raise ValueError(_("run {run} has no checkpoint yet; train at least one epoch").format(run=run.id))
    if out_file.exists() and not refresh and out_file.stat().st_mtime >= run.best_weights.stat().st_mtime:
        return json.loads(out_file.read_text())
    split = TextSplit.from_dict(json.loads((run.path / "split.json").read_text()))
    probs = predict_texts(load_model(run.path), [t for t, _ in split.val])
    labels = np.array([y for _, y in split.val], dtype=int)
    rep = metrics.report(labels, probs, split.classes)
    rep["modality"] = "text"
    rep["items"] = [{**it, "text": t} for it, (t, _) in zip(metrics._items(split.val, probs), split.val)]
    rep["probs"] = probs.round(6).tolist()
    runs.atomic_write_text(out_file, json.dumps(rep))
    return rep


def explain_text(model: LoadedTextModel, text: str, target: int | None = None, steps: int = 32) -> dict:
    """Integrated gradients per token toward class ``target`` (the prediction when None), from an all-padding
    baseline: {"tokens", "scores", "target", "label", "gap", "special"}; scores sum to f(text) - f(baseline) up to
    ``gap``; ``special`` flags tokens such as [CLS] that are not words of the text."""
    net = model.model
    encoder, pad = net.body.model, net.body.pad_id
    ids = text_backbones.tokenize(model.tokenizer, [text], model.max_length)
    mask = (ids != pad).long()
    table = encoder.get_input_embeddings()
    with torch.no_grad():
        emb, base = table(ids), table(torch.full_like(ids, pad))

    def logits(x: torch.Tensor) -> torch.Tensor:
        hidden = encoder(inputs_embeds=x, attention_mask=mask.expand(len(x), -1)).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return net.head((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9))

    with torch.no_grad():
        ends = logits(torch.cat([emb, base]))
    target = int(ends[0].argmax()) if target is None else int(target)
    alphas = (torch.arange(steps, dtype=emb.dtype) + 0.5) / steps  # midpoint rule along the straight path
    path = (base + alphas.view(-1, 1, 1) * (emb - base)).requires_grad_(True)
    grads = torch.autograd.grad(logits(path)[:, target].sum(), path)[0].mean(0, keepdim=True)
    scores = ((emb - base) * grads).sum(-1)[0].detach()
    gap = float(ends[0, target] - ends[1, target] - scores.sum())
    tokens = model.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    special = set(model.tokenizer.all_special_tokens)  # [CLS], [SEP]: scored, but not words of the text
    return {"tokens": tokens, "scores": scores.tolist(), "target": target, "label": model.classes[target],
            "gap": gap, "special": [t in special for t in tokens]}
