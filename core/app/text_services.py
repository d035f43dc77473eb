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
from core.data import text_tasks
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


# --- the technique pages with text (helper X2): 8 · Distill, 9 · Multi-task, 10 · Pretrain -------------------

TEXT_RUNS = ("text", "text_distill")  # techniques whose checkpoint is one text classifier (a teacher, Evaluate)


def is_text_classifier_run(run_dir: str | Path, owner: str | None = None) -> bool:
    """Whether one of ``owner``'s runs trained a text classifier (technique text or text_distill)."""
    try:
        return services.open_run(run_dir, owner).config().technique in TEXT_RUNS
    except (OSError, ValueError, TypeError):
        return False


def student_names() -> list[str]:
    """Text backbones a text student may use, the small default student (MiniLM-L3) first."""
    from core.models import text_backbones

    names = text_backbones.names()
    return [text_backbones.TRUNCATED] + [n for n in names if n != text_backbones.TRUNCATED]


def _text_base(draft: dict) -> dict:
    """The draft when it holds text choices, else the text recipe (a text technique on an image draft)."""
    from core.models import text_backbones

    return dict(draft) if text_backbones.is_text(str(draft.get("backbone"))) else {**draft, **text_fields()}


def distill_config(draft: dict, teacher: str, student: str, alpha: float, temperature: float, epochs: int,
                   max_length: int | None = None, owner: str | None = None) -> RunConfig:
    """A text student's config (technique text_distill) on the text teacher's data, with the draft's layers."""
    from core import techniques

    tcfg = services.open_run(teacher, owner).config()
    if tcfg.technique not in TEXT_RUNS:
        raise ValueError(_("run {run} is not a text classifier; a text student needs a finished text run as its "
                           "teacher").format(run=teacher))
    fields = _text_base(draft)
    cfg = services.to_config(fields, tcfg.data, owner, backbone=student, augment="none", trainable_groups=None,
                             epochs=int(epochs), max_length=int(max_length or tcfg.max_length or 128),
                             probe_init=False, name=f"{student} distilled from {tcfg.backbone}",
                             technique="text_distill",
                             teacher=services.open_run(teacher, owner).id, distill_alpha=float(alpha),
                             distill_temperature=float(temperature))
    cfg.dataset = tcfg.dataset or cfg.dataset
    return techniques.check(cfg)


def distill_compare(teacher: str, students: dict, owner: str | None = None) -> list[dict]:
    """Teacher and text student rows: accuracy, agreement, parameters, size, CPU latency
    (core.techniques.text_distill.compare; services.distill_compare is the image one)."""
    from core.techniques import text_distill

    students = {label: services.open_run(rid, owner).path for label, rid in students.items()}
    return text_distill.compare(services.open_run(teacher, owner).path, students, latency_repeats=5)


def dataset_table(name: str, owner: str | None = None) -> Path:
    """The table behind one of ``owner``'s text datasets: the uploaded .csv/.tsv/.jsonl kept with it (all its
    columns), else the stored text.csv (text and label only)."""
    from core.storage import owners, workspace

    kept = sorted(p for p in workspace.sub("uploads").glob(f"{name}--*/*")
                  if p.suffix.lower() in TABLE_SUFFIXES and owners.visible(p.parent, owner))
    return kept[-1] if kept else services.dataset_dir(name, owner) / text_data.STORED


def task_table(source: str | Path, tasks: list[str] | None = None, owner: str | None = None) -> dict:
    """A text table's label columns (task -> classes), labelled rows, rows left out and its text column
    (core.data.text_tasks.read_tasks)."""
    path = services._source(source, owner)
    table = text_tasks.read_tasks(path, tasks)
    return {"tasks": table.tasks, "rows": len(table.texts), "text_column": table.text_column,
            "skipped": [f"row {s['row']}: {s['message']}" for s in table.skipped]}


def multitask_config(draft: dict, source: str | Path, tasks: list[str], weights: list[float], epochs: int,
                     max_length: int | None = None, owner: str | None = None) -> RunConfig:
    """One text encoder, one head per chosen label column of ``source`` (technique text_multitask)."""
    from core import techniques

    fields = _text_base(draft)
    cfg = services.to_config(fields, source, owner, augment="none", trainable_groups=None, epochs=int(epochs),
                             max_length=int(max_length or fields.get("max_length") or 128), probe_init=False,
                             cache_features=False, name=f"multi-task: {', '.join(tasks)}",
                             technique="text_multitask", tasks=list(tasks), task_weights=[float(w) for w in weights])
    return techniques.check(cfg)


def pretrain_bases() -> list[str]:
    """Text backbones masked-language-model pretraining can start from (registry entries, not adapted ones)."""
    from core.models import text_backbones

    return text_backbones.names()


def pretrain_config(source: str | Path, base: str, epochs: int, batch_size: int, max_length: int = 128,
                    trainable: str = "all", owner: str | None = None) -> RunConfig:
    """Masked-language-model pretraining of text encoder ``base`` on the texts of ``source`` (a text dataset
    folder or an uploaded .txt/.csv; labels are ignored), technique text_pretrain."""
    from core import techniques

    folder = services._source(source, owner)
    dataset = folder.name if folder.is_dir() else folder.stem
    cfg = RunConfig(data=str(folder), backbone=base, image_size=0, trainable=trainable, epochs=int(epochs),
                    batch_size=int(batch_size), lr=1e-4, scheduler="cosine", augment="none",
                    technique="text_pretrain", sources=[str(folder)], dataset=dataset, max_length=int(max_length),
                    cache_features=False, early_stopping_metric="val_loss", name=f"MLM on {dataset}")
    return techniques.check(cfg)


def adapted_rows(owner: str | None = None) -> list[dict]:
    """``owner``'s adapted text encoders (core.models.text_backbones.list_adapted) as rows of the Backbone step's
    text table, each with its note (base, run, dataset, validation MLM loss)."""
    from core.models import text_backbones

    rows = []
    for a in text_backbones.list_adapted():
        try:
            services.open_run(a["run_dir"], owner)
            spec = text_backbones.get(a["name"])
        except ValueError:
            continue  # another user's run, or an encoder whose base left the registry
        loss = a.get("metrics", {}).get("mlm_loss")
        note = _("{base} adapted to {dataset} by masked-language-model pretraining in run {run}").format(
            base=a["base"], dataset=a.get("dataset") or "?", run=Path(a["run_dir"]).name[:15])
        if isinstance(loss, (int, float)):
            note += _("; validation MLM loss {loss}").format(loss=f"{loss:.3g}")
        rows.append({"name": a["name"], "title": spec.title, "params (M)": spec.params_m, "dim": spec.dim,
                     "blocks": spec.n_layers, "weights": "adapted", "groups": len(spec.groups) + 1, "note": note})
    return rows


def is_text_backbone(name) -> bool:
    """Whether ``name`` is a text backbone (a registry entry or an adapted text encoder)."""
    from core.models import text_backbones

    return text_backbones.is_text(name)
