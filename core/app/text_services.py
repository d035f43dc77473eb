"""The text pages' doorway to the engine (issue 17): text datasets, their health, text backbones, text runs.

A text dataset is a workspace dataset folder holding one normalised ``text.csv`` (core.data.text: STORED);
``is_text_dataset`` tells it from an image dataset. Like core.app.services, this module is torch-free at
import; torch and ``transformers`` load on the first call that needs them.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from core.app import services
from core.config import RunConfig
from core.data import edits
from core.data import text as text_data
from core.i18n import N_, _

TABLE_SUFFIXES = text_data.TABLE_SUFFIXES


is_text_data = services.is_text_data  # a table of text,label or class folders of .txt files


def is_text_dataset(name: str | None, owner: str | None = None) -> bool:
    """Whether workspace dataset ``name`` (one of ``owner``'s) is a text dataset; False for none or another's."""
    if not name:
        return False
    try:
        return text_data.is_stored(services.dataset_dir(name, owner))
    except ValueError:
        return False


def is_text_upload(fileobj, filename: str) -> bool:
    """Whether an uploaded file is text: a .csv/.tsv/.jsonl table, or a .zip of class folders of .txt files."""
    suffix = Path(filename).suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return True
    return suffix == ".zip" and text_data.zip_holds_text(fileobj)


def import_upload(fileobj, filename: str, owner: str | None = None) -> tuple[str, dict]:
    """Keep a copy of a text upload and store it as a new text dataset named after the file: (name, summary).

    The copy sits under uploads/ like an image upload's (it goes with the dataset); a rejected upload's copy is
    deleted at once. ``summary``: rows, classes, encoding problems and rows left out."""
    name = edits.unique_name(Path(filename).stem)
    kept = edits.add_upload(fileobj, filename, owner=owner, dataset=name)
    try:
        kept = kept.rename(kept.with_suffix(Path(filename).suffix.lower()))  # read() goes by the suffix
        name, table = text_data.import_table(kept, name, owner, Path(filename).name)
    except BaseException:
        shutil.rmtree(kept.parent, ignore_errors=True)
        raise
    return name, {"rows": len(table.rows), "classes": len(table.classes),
                  "encoding_problems": len(table.encoding_problems), "skipped": len(table.skipped)}


def import_sample(owner: str | None = None) -> str:
    """The built-in "topics" sample (4 classes of topic sentences) as a text dataset; its name."""
    return text_data.import_sample(owner)


def signature(name: str, owner: str | None = None) -> str:
    """Changes whenever one of ``owner``'s text datasets is rewritten (a cache key for its health report)."""
    st = (services.dataset_dir(name, owner) / text_data.STORED).stat()
    return f"{st.st_mtime_ns}-{st.st_size}"


def class_counts(name: str, owner: str | None = None) -> dict[str, int]:
    """Texts per class of one of ``owner``'s text datasets."""
    table = text_data.read(services.dataset_dir(name, owner))
    return {c: sum(r.label == c for r in table.rows) for c in table.classes}


text_health = services.text_health  # the report, lengths per text included (core.data.text.health)


def dataset_health(name: str, owner: str | None = None, **kw) -> dict:
    """text_health of one of ``owner``'s text datasets (keywords as text_health)."""
    from core.models import text_backbones

    if not text_backbones.is_text(kw.get("backbone", "")):
        kw["backbone"] = ""  # a draft still on an image backbone: count in the default encoder's tokens
    return text_health(services.dataset_dir(name, owner), **kw)


def problem_message(problem: dict) -> str:
    """An encoding problem of the health report in the current language (stored ones were written in English)."""
    if "n" in problem and "bytes" in problem:
        return text_data.encoding_message(int(problem["n"]), str(problem["bytes"]))
    return str(problem.get("message", ""))


def text_backbone_table() -> list[dict]:
    """One row per text backbone for the chooser (weights: bundled, cached or download)."""
    from core.models import text_backbones

    return text_backbones.table()


def default_backbone() -> str:
    """The bundled text backbone (works offline)."""
    return "all_minilm_l6_v2"  # core.models.text_backbones.DEFAULT, named here so pages need no torch


# The text recipe (core.techniques.default_text_config) with a reason per choice; the image recipes measure
# image throughput and choose image backbones, so a text dataset falls back to this one.
TEXT_RECIPE = {
    "backbone": N_("all-MiniLM-L6-v2: a sentence encoder that ships with the app and works offline"),
    "trainable": N_("head only: each text is encoded once and the new classifier learns on those embeddings, "
                    "fast on a CPU"),
    "lr": N_("0.01: a linear head on fixed sentence embeddings takes large steps"),
    "epochs": N_("10: epochs on embeddings computed once cost almost nothing"),
    "early_stopping_metric": N_("validation loss: on small text sets accuracy stops moving early while the "
                                "model's confidence still improves"),
    "augment": N_("none: augmentation transforms images; texts are tokenised as they are"),
    "max_length": N_("128 tokens: longer texts are cut; the Data step says how many that affects"),
}


def text_fields() -> dict:
    """Draft fields for a text dataset: the text recipe (core.techniques.default_text_config) with head-only
    layers and no image-only settings."""
    from core import techniques

    cfg = techniques.default_text_config(RunConfig()).to_dict()  # what `python -m core train --data x.csv` trains
    same = ("backbone", "pretrained", "augment", "image_size", "lr", "lr_decay", "epochs", "optimizer", "scheduler",
            "label_smoothing", "early_stopping_metric", "unfreeze_after", "probe_init", "body_eval",
            "cache_features", "max_length", "time_budget_s")
    return {k: cfg[k] for k in same if k in cfg} | {"trainable": "head", "trainable_groups": None,
                                                    "preset": "custom"}


def image_fields(draft: dict) -> dict:
    """Draft fields that undo text_fields when an image dataset is chosen after a text one ({} when the draft
    holds no text choice)."""
    if str(draft.get("backbone")) not in {r["name"] for r in _text_names()}:
        return {}
    base = services.defaults()
    return {k: base[k] for k in ("backbone", "augment", "image_size", "lr", "epochs", "early_stopping_metric",
                                 "preset", "probe_init") if k in base}


def _text_names() -> list[dict]:
    from core.models import text_backbones

    return [{"name": n} for n in text_backbones.names()]


def text_plan(dataset_dir: str | Path) -> dict:
    """services.preset_plan's answer for a text dataset: the text recipe, its reasons, no time estimate."""
    fields = text_fields()
    return {"preset": "text", "fields": fields, "reasons": {k: _(v) for k, v in TEXT_RECIPE.items()},
            "expected_s": None, "budget_s": 0.0}


def to_config(draft: dict, name: str, owner: str | None = None, **overrides) -> RunConfig:
    """A text run's RunConfig from the draft and one of ``owner``'s text datasets (technique "text");
    ValueError that says what to change when the draft holds image-only choices."""
    from core import techniques

    cfg = services.to_config(draft, services.dataset_dir(name, owner), owner, technique="text", **overrides)
    return techniques.check(cfg)


def text_evaluate_run(run_dir: str | Path, owner: str | None = None) -> dict:
    """A text run on its validation split (core.results.text_eval): the image report's keys, items with texts."""
    from core.results import text_eval

    return text_eval.evaluate_text_run(services.open_run(run_dir, owner).require_intact(action="evaluated").path)


def text_explain(loaded, text: str, target: int | None = None) -> dict:
    """Per-token integrated-gradients scores of one text toward a class (core.results.text_eval.explain_text)."""
    from core.results import text_eval

    return text_eval.explain_text(loaded, text, target)


# --- Export step for a text run (helper T2): core.results.text_export behind lazy imports ---------------------

def text_export(run_dir: str | Path, fmt: str, owner: str | None = None) -> Path:
    """Write (or reuse) a text run's export in ``fmt`` (safetensors, pt, onnx, bundle); returns the file."""
    from core.results import text_export as tx

    return tx.export(services.open_run(run_dir, owner).require_intact(action="exported").path, fmt)


def text_export_ready(run_dir: str | Path, fmt: str, owner: str | None = None) -> Path | None:
    """A text run's export in ``fmt`` when it is on disk and current with the weights, else None."""
    from core.results import text_export as tx

    return tx.ready(services.open_run(run_dir, owner).path, fmt)


def text_tokenizer_zip(run_dir: str | Path, owner: str | None = None) -> Path:
    """The tokenizer/ folder of a text run's safetensors export as a zip, to unzip beside the .safetensors."""
    from core.results import text_export as tx

    return tx.tokenizer_zip(services.open_run(run_dir, owner).require_intact(action="exported").path)


def text_onnx_check(onnx_path: str | Path) -> dict | None:
    """The onnxruntime-vs-torch check of a text ONNX export ({max_abs_diff, batches}), None when not recorded."""
    from core.results import text_export as tx

    return tx.onnx_check(onnx_path)


def text_export_files(run_dir: str | Path, owner: str | None = None) -> dict:
    """The small texts of a text run's Export step: {"card": JSON bytes, "config": JSON bytes}."""
    import json

    from core.storage.cards import read_card

    run = services.open_run(run_dir, owner).require_intact(action="exported")
    if not run.best_weights.exists():
        raise ValueError(_("run {run} has no checkpoint yet; train at least one epoch first").format(run=run.id))
    return {"card": json.dumps(read_card(run.path), indent=2).encode(), "config": run.config().to_json().encode()}


def text_card_markdown(run_dir: str | Path, owner: str | None = None) -> str:
    """A text run's model card as Markdown (the bundle's MODEL_CARD.md), from the weights file's header."""
    from core.results import text_export as tx
    from core.storage.cards import read_card

    return tx.card_markdown(read_card(services.open_run(run_dir, owner).require_intact(action="shown").path))
