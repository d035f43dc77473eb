"""The command line's text commands (issue 17): a table of texts to train, distill or multitask on, unlabelled
texts to pretrain a text encoder on, texts to predict. core.cli sends a command here when its data is text."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from core import techniques
from core.cli_common import CliError, flag_fields, progress_printer
from core.config import RunConfig
from core.i18n import _


def is_text_data(data: str) -> bool:
    from core.data import text

    return text.looks_like_text(data)


def is_text_corpus(data: str) -> bool:
    from core.data import text_tasks

    return text_tasks.looks_like_corpus(data)


def text_technique_config(a, technique: str, **recipe) -> RunConfig:
    """The config of a text technique (issue 17) from the flags: the default text recipe, then ``recipe``, for
    every field the user did not set."""
    import dataclasses

    base = flag_fields(a)
    if not base.get("data"):
        raise CliError(_("--data is required (a CSV, TSV or JSONL table of texts)"))
    config = techniques.default_text_config(RunConfig.from_dict(base), explicit=set(base))
    return dataclasses.replace(config, technique=technique, **{k: v for k, v in recipe.items() if k not in base})


def text_teacher(teacher: str) -> bool:
    """Whether the teacher (run id, run folder or export) is a text classifier; False when it cannot be read."""
    from core.storage import cards, runs

    try:
        p = Path(teacher) if Path(teacher).exists() else runs.open_run(teacher).path
        return cards.read_card(cards.weights_file(p)).get("modality") == "text"
    except (ValueError, OSError):
        return False  # the image path reports what is wrong with it


def text_distill_config(a) -> RunConfig:
    """The student's config when the teacher is a text classifier."""
    from core.models import text_backbones

    # a head on the frozen student is cheap per epoch (embeddings computed once): enough epochs to match it
    return text_technique_config(a, "text_distill", backbone=text_backbones.TRUNCATED, epochs=30)


def cmd_text_multitask(a, tasks, weights) -> dict:
    from core.techniques import text_multitask

    return text_multitask.fit_text_multitask(text_technique_config(a, "text_multitask"), tasks, weights,
                                             progress_printer())


def cmd_text_pretrain(a) -> dict:
    from core.models import text_backbones
    from core.techniques import text_pretrain

    printer = progress_printer()

    def on_event(ev: dict) -> None:
        if ev["type"] == "epoch":
            sys.stderr.write("\r" + _("epoch {epoch}/{epochs}: MLM loss {loss:.4f} on held-out texts, masked-token "
                                       "accuracy {acc:.1%}").format(epoch=ev["epoch"], epochs=ev["epochs"],
                                                                   loss=ev["val_loss"], acc=ev["val_acc"]) + "\n")
        else:
            printer(ev)
    run = text_pretrain.pretrain(a.backbone or text_backbones.DEFAULT, a.data, epochs=a.epochs,
                                 batch_size=a.batch_size, lr=a.lr or 1e-4, trainable=a.trainable,
                                 max_length=a.max_length, mlm_probability=a.mask_prob, seed=a.seed, device=a.device,
                                 on_event=on_event)
    return run.result() or {"status": run.status(), "run_dir": str(run.path)}


def predict_texts(a, model) -> None:
    """One JSON line per text, in input order: the --text values first, then the lines of --texts-file."""
    from core.results.loading import LoadedMultiTask, LoadedTextModel

    multitask = isinstance(model, LoadedMultiTask) and model.tokenizer is not None  # a head per label column
    if not isinstance(model, LoadedTextModel) and not multitask:
        raise CliError(_("{model} is an image model; --text and --texts-file need a text classifier (trained on a "
                         "CSV/TSV/JSONL of text,label)").format(model=a.model))
    if a.images:
        raise CliError(_("{model} is a text classifier; pass texts with --text or --texts-file, not files to "
                         "open").format(model=a.model))
    texts = list(a.text or [])
    if a.texts_file:
        try:
            lines = Path(a.texts_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(_("cannot read --texts-file {file!r} as UTF-8 text: {error}").format(
                file=a.texts_file, error=e)) from None
        texts += [line for line in lines if line.strip()]
    if not texts:
        raise CliError(_("no text to predict; pass --text \"...\" (repeatable) or --texts-file FILE (one per line)"))
    for i in range(0, len(texts), 64):
        chunk = texts[i:i + 64]
        for t, pred in zip(chunk, model.predict(chunk, top_k=a.top_k)):
            if multitask:
                print(json.dumps({"text": t, "tasks": pred}, ensure_ascii=False))
                continue
            print(json.dumps({"text": t, "label": pred["label"], "confidence": round(pred["confidence"], 6),
                              "top_k": pred["top_k"]}, ensure_ascii=False))
