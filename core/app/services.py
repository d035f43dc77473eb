"""The app's working state off the page: config drafts that survive a reload, and lazy engine calls.

A draft is the set of choices a person made in the guided flow (backbone, layers, training knobs).
It lives in ``st.session_state`` and is mirrored here to ``<workspace>/drafts/<sid>.json`` so a
reloaded tab (same ``sid`` query parameter) gets every choice back.

Streamlit pages must stay torch-free at import time; this module is too. The functions in the
second half import the engine (and so torch) only when they are called.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import secrets
from pathlib import Path

from core.storage import owners
from core.storage import runs
from core.storage import workspace
from core.storage.cards import read_card  # header only: no tensor, no torch
from core.config import RunConfig
from core.i18n import N_, _, ngettext

_SID_RE = re.compile(r"^[0-9a-f]{32}$")
# Fields the guided flow edits; everything else keeps RunConfig's defaults.
EDITABLE = ("backbone", "pretrained", "image_size", "trainable", "trainable_groups", "epochs", "batch_size",
            "lr", "lr_decay", "optimizer", "weight_decay", "scheduler", "augment", "label_smoothing",
            "class_weights", "grad_clip", "val_fraction", "seed", "deterministic", "early_stopping_patience",
            "name")
# Settings added to RunConfig by other parts of the engine travel with the draft when present.
_OPTIONAL = ("early_stopping_metric", "unfreeze_after", "unfreeze_mode", "unfreeze_lr_factor", "tensorboard",
             "mlflow_uri", "mlflow_experiment", "preset", "probe_init", "time_budget_s", "cache_features", "body_eval",
             "max_length", "wise_ft")
EDITABLE += tuple(f.name for f in dataclasses.fields(RunConfig) if f.name.startswith("aug_") or f.name in _OPTIONAL)


def new_sid() -> str:
    """A fresh draft id (128 random bits, hex)."""
    return secrets.token_hex(16)


def valid_sid(sid: object) -> bool:
    """Whether ``sid`` looks like an id from new_sid (so it is safe as a file name)."""
    return isinstance(sid, str) and bool(_SID_RE.match(sid))


def defaults() -> dict:
    """The draft a new session starts from."""
    base = RunConfig().to_dict()
    return {k: base[k] for k in EDITABLE}


def _path(sid: str) -> Path:
    if not valid_sid(sid):
        raise ValueError(_("draft id must be 32 hex characters (from new_sid()); got {value}").format(value=repr(sid)))
    return workspace.sub("drafts") / f"{sid}.json"


def _saved(sid: str):
    """The parsed draft file: None when there is none, {} when it is damaged (ValueError for a bad id)."""
    path = _path(sid)
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def owns_draft(sid: str, owner: str | None = None) -> bool:
    """Whether ``owner`` may use draft ``sid``: nothing saved under it yet, or saved by that owner."""
    saved = _saved(sid)
    return saved is None or saved.get("owner") == owner


def load(sid: str, owner: str | None = None) -> dict:
    """The saved draft for ``sid`` over the defaults; unknown or damaged entries, and another owner's draft,
    are dropped."""
    draft = defaults()
    saved = _saved(sid)
    if saved and saved.get("owner") == owner:
        draft.update({k: v for k, v in saved.items() if k in EDITABLE})
    return draft


def save(sid: str, draft: dict, owner: str | None = None) -> None:
    """Write the draft atomically (only the editable fields, and its owner when sign-in is on)."""
    if not owns_draft(sid, owner):
        raise ValueError(_("draft {draft}… was not found in your workspace; start a new one").format(draft=sid[:8]))
    data = {k: draft[k] for k in EDITABLE if k in draft} | ({"owner": owner} if owner is not None else {})
    runs.atomic_write_text(_path(sid), json.dumps(data, indent=2))


def to_config(draft: dict, data: str | Path, owner: str | None = None, **overrides) -> RunConfig:
    """A RunConfig from a draft and a dataset folder (the owner goes into the run folder when the job starts)."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    fields = {k: v for k, v in draft.items() if k in known}
    fields.update(overrides)
    _source(data, owner)  # another user's dataset or upload is "not found", before anything reads it
    if str(fields.get("backbone", "")).startswith(("adapted:", "adapted-text:")):  # <base>:<run id>, a run of its own
        owners.check(runs.root() / str(fields["backbone"]).rsplit(":", 1)[-1], owner, "adapted backbone")
    cfg = RunConfig(**{**fields, "data": str(data)})
    cfg.dataset = cfg.dataset or Path(str(data)).name
    return cfg


def recommend(counts: dict[str, int], sides: list[int] | None = None) -> dict:
    """Default layers, augmentation, image size and epochs derived from the data (class counts; the images'
    shorter sides when known), each with its reason in one sentence: the presets' own logic (core.train.presets)."""
    from core.train import presets  # torch-free at import

    return presets.suggest(counts, sides)


def trainable_preset(groups: list[str], preset: str, n: int = 2) -> list[str]:
    """Trainable group names for a preset: 'head', 'last' (last ``n`` body groups + head) or 'all'."""
    if preset == "head":
        return ["head"]
    if preset == "all":
        return list(groups)
    if preset == "last":
        body = groups[:-1]
        return body[max(len(body) - n, 0):] + ["head"]
    raise ValueError(_("preset must be one of head, last, all; got {value}").format(value=repr(preset)))


# The one vocabulary for layer choices (Backbone, Layers, Train, messages): choice -> (label, one sentence), in
# English (N_): show them with _().
LAYER_CHOICES = {
    "head": (N_("head only"), N_("Only the new classifier learns your classes; the pretrained backbone is used as it "
                                 "is. Best with few images (under about 100 per class).")),
    "last": (N_("last 2 groups + head"), N_("The new classifier and the backbone's last 2 layer groups (the ones "
                                            "that recognise object parts) adapt to your images; earlier layers stay "
                                            "as they are.")),
    "all": (N_("everything"), N_("Every layer adapts to your images. Needs hundreds of images per class, else the "
                                 "pretrained features are overwritten by noise.")),
    "custom": (N_("custom"), N_("You pick which layer groups learn; the new classifier always does.")),
}


def layer_choice(trainable: str, trainable_groups: list[str] | None = None) -> str:
    """The LAYER_CHOICES key of a config's layer setting ('last-2' is 'last'; any other last-N is 'custom')."""
    if trainable_groups is not None:
        return "custom"
    return {"head": "head", "last-2": "last", "all": "all"}.get(str(trainable), "custom")


def layer_label(trainable: str, trainable_groups: list[str] | None = None) -> str:
    """The words for a layer setting in the current language, torch-free: 'head only', 'last 2 groups + head',
    'everything', 'custom (…)'."""
    choice = layer_choice(trainable, trainable_groups)
    if choice != "custom":
        return _(LAYER_CHOICES[choice][0])
    if trainable_groups:
        return _("custom ({groups})").format(groups=", ".join(trainable_groups))
    m = re.fullmatch(r"last-(\d+)", str(trainable))
    return _("custom (last {n} groups + head)").format(n=m[1]) if m else _("custom")


def describe_layers(backbone: str, trainable: str, trainable_groups: list[str] | None = None,
                    num_classes: int = 2) -> dict:
    """Label, sentence, groups that learn, and the share of weights that learn (parameters of the backbone without
    its ImageNet classifier, which the app replaces, plus the new head for ``num_classes`` classes)."""
    from core.models import freezing

    choice = layer_choice(trainable, trainable_groups)
    groups = freezing.plan(backbone, trainable, trainable_groups)
    sizes = group_param_counts(backbone, max(num_classes, 2))
    learn, total = sum(sizes[g] for g in groups), sum(sizes.values())
    label = _("custom ({groups})").format(groups=", ".join(groups)) if choice == "custom" else _(LAYER_CHOICES[choice][0])
    return {"choice": choice, "label": label, "sentence": _(LAYER_CHOICES[choice][1]), "groups": groups, "trainable": learn,
            "total": total, "share": learn / total if total else 0.0}


# --- lazy doorway into the engine (torch is imported on first call, never at import) ------------

def new_job_manager():
    """A process-wide JobManager (the app holds one in st.cache_resource)."""
    from core.jobs.manager import JobManager

    return JobManager()


def gpu_count() -> int:
    """CUDA devices visible to this process (several allow a torchrun job)."""
    from core.train.ddp import visible_gpus

    return visible_gpus()


def start_job(manager, config: RunConfig, owner: str | None = None, nproc: int = 1):
    """Start a job: a thread in this process, or a torchrun job over ``nproc`` GPUs when nproc > 1."""
    if nproc > 1:
        from core.jobs.supervisor import submit

        return submit(manager, config, nproc, owner=owner)
    return manager.start(config, owner=owner)


def preset_plan(dataset_dir: str | Path, preset: str = "balanced", time_budget_s: float | None = None,
                owner: str | None = None, overrides: dict | None = None) -> dict:
    """A preset's plan for a dataset (core.train.presets.plan): {preset, fields, reasons, expected_s, budget_s}.
    ``fields`` are RunConfig fields; a form's own choices go on top (``to_config(plan["fields"] | draft, data)``)."""
    from core.train import presets

    src = dataset_dir if str(dataset_dir).startswith("sample:") else _source(dataset_dir, owner)
    from core.data import text  # torch-free

    if text.is_stored(src):  # the Train step gives a text dataset the text recipe (core.app.text_services)
        raise ValueError(_("the image recipes measure image backbones and do not apply to text dataset '{name}'; "
                           "the Train step uses the text recipe for it").format(name=Path(str(src)).name))
    return presets.plan(str(src), preset, time_budget_s, overrides=overrides).to_dict()


def lr_find(config: RunConfig, on_progress=None) -> dict:
    """core.train.lr_finder.lr_find with a short sweep suited to an interactive page."""
    from core.train.lr_finder import lr_find as _find

    return _find(config, on_progress=on_progress, num_iter=60)


def device_label() -> str:
    """The device training will use with device='auto', e.g. 'cpu' or 'cuda (NVIDIA H200)'."""
    import torch

    from core.train.loop import pick_device

    dev = pick_device("auto")
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return dev.type


def backbone_table(owner: str | None = None) -> list[dict]:
    """One row per registered backbone (core.models.backbones.table), then the backbones ``owner`` adapted by SimCLR."""
    from core.models import backbones

    rows = backbones.table()
    for row in rows:  # the count every page uses: the backbone without its ImageNet classifier (the app replaces it)
        try:
            sizes = group_param_counts(row["name"])
            row["params (M)"] = round((sum(sizes.values()) - sizes["head"]) / 1e6, 2)
        except (ValueError, RuntimeError, KeyError):
            pass  # keep the registry's figure rather than lose the row
    try:
        # the run folder's owner record decides, not the card's: the card travels with every export
        adapted = [a for a in backbones.list_adapted() if owners.visible(a["run_dir"], owner)]
    except (OSError, ValueError):
        adapted = []  # an unreadable runs folder must not cost the chooser the registry's own rows
    base = {r["name"]: r for r in rows}
    for a in adapted:
        b = base.get(a["base"], {})
        title = _("{title}, adapted on {dataset}").format(title=_(b["title"]) if b.get("title") else a["base"],
                                                          dataset=a["dataset"])
        rows.append({"name": a["name"], "title": title, "params (M)": b.get("params (M)"),
                     "input": b.get("input"), "ImageNet top-1 (%)": None, "weights": "adapted",
                     "groups": b.get("groups"),
                     "note": ngettext("{base} after self-supervised pretraining on {dataset} ({n} epoch).",
                                      "{base} after self-supervised pretraining on {dataset} ({n} epochs).",
                                      a["epochs"]).format(base=a["base"], dataset=a["dataset"], n=a["epochs"])})
    return rows


def backbone_groups(name: str) -> list[str]:
    """Ordered layer groups of a backbone, ending with 'head'."""
    from core.models import backbones

    return backbones.group_names(name)


@functools.lru_cache(maxsize=32)
def group_param_counts(name: str, num_classes: int = 2) -> dict[str, int]:
    """Parameters per layer group, counted on a weightless model (meta device: no memory, no download)."""
    import torch

    from core.models import backbones

    from core.models import text_backbones

    build = text_backbones.build_model if text_backbones.is_text(name) else backbones.build_model
    with torch.device("meta"):
        model = build(name, num_classes, pretrained=False)
    return backbones.param_counts(name, model)


def augment_preview(path: str, backbone: str, image_size: int, augment: str, n: int = 8, seed: int = 0,
                    aug: dict | None = None) -> list:
    """``n`` augmented versions of one image, as PIL images, exactly as training would see them."""
    import torch
    from PIL import Image

    from core.data import datasets
    from core.models import backbones

    cfg = RunConfig(backbone=backbone, image_size=image_size, augment=augment, **(aug or {}))
    pre = backbones.preprocessing_for(cfg)
    try:
        from core.data.augment import augment_preview as preview  # custom settings live there when present
    except ImportError:
        preview = None
    if preview is not None:
        return preview(path, pre, cfg, n=n, seed=seed)
    transform = datasets.train_transform(pre, augment)
    square = torch.from_numpy(datasets.square_from_file(path, pre)).permute(2, 0, 1).contiguous()
    with torch.random.fork_rng(devices=[]):  # the preview must not shift a training run's random stream
        torch.manual_seed(seed)
        return [Image.fromarray(transform(square).permute(1, 2, 0).numpy()) for _ in range(n)]


def evaluate_run(run_dir: str | Path, owner: str | None = None, tta: bool | str = False) -> dict:
    """core.results.metrics.evaluate_run, behind a lazy import (only ``owner``'s runs); ``tta``: "none", "flip" (or
    True: each image with its mirror), "multicrop" (centre + 4 corners), probabilities averaged."""
    from core.results import metrics

    return metrics.evaluate_run(open_run(run_dir, owner).require_intact(action="evaluated").path, tta=tta)


def test_set_overlap(run_dir: str | Path, dataset_dir: str | Path, owner: str | None = None) -> dict:
    """How a test dataset overlaps a run's training and validation images by content (core.data.overlap.check);
    ValueError when it is the run's own dataset or holds nothing but images the run saw."""
    from core.data import ingest, overlap

    run = open_run(run_dir, owner)
    src = _source(dataset_dir, owner)
    split = json.loads((run.path / "split.json").read_text())
    return overlap.check(split, run.config().data, ingest.scan_folder(src), src.name)


def evaluate_on(run_dir: str | Path, dataset_dir: str | Path, owner: str | None = None,
                tta: bool | str = False) -> dict:
    """Score a run's best checkpoint on another labelled dataset (core.results.metrics.evaluate_on, with test-time
    augmentation ``tta``), counting only the images the run never trained or validated on; ``n_overlap`` and
    ``overlap_examples`` say what was left out."""
    from core.results import metrics

    run = open_run(run_dir, owner).require_intact(action="evaluated")
    found = test_set_overlap(run.path, dataset_dir, owner)
    rep = metrics.evaluate_on(run.path, _source(dataset_dir, owner), tta=tta)
    seen = {str(Path(p).resolve()) for p in found["overlapping"]}
    keep = [i for i, it in enumerate(rep["items"]) if str(Path(it["path"]).resolve()) not in seen]
    if not keep:
        raise ValueError(_("every image of {name} in a class the model knows is a copy of an image this run trained "
                           "or validated on; upload images the run never saw").format(
                             name=repr(Path(str(dataset_dir)).name)))
    if len(keep) < len(rep["items"]):
        import numpy as np

        probs = np.array(rep["probs"]).reshape(-1, len(rep["classes"]))[keep]
        labels = np.array([rep["items"][i]["label"] for i in keep], dtype=int)
        rep.update(metrics.report(labels, probs, rep["classes"]), items=[rep["items"][i] for i in keep],
                   probs=probs.tolist(), n_evaluated=len(keep))
    return rep | {"n_overlap": found["n_overlap"], "overlap_examples": found["examples"]}


def top_losses(rep: dict, limit: int = 24, wrong_only: bool = True) -> list[dict]:
    """Validation items the model got most wrong (core.results.metrics.top_losses)."""
    from core.results import metrics

    return metrics.top_losses(rep, limit=limit, wrong_only=wrong_only)


def cell_items(rep: dict, true_idx: int, pred_idx: int) -> list[dict]:
    """Validation items in one confusion-matrix cell (core.results.metrics.cell_items)."""
    from core.results import metrics

    return metrics.cell_items(rep, true_idx, pred_idx)


def confusion_cells(matrix: list[list[int]]) -> list[tuple[int, int]]:
    """Non-empty confusion-matrix cells (true, predicted): errors first, largest first; then the diagonal in class
    order."""
    cells = [(i, j) for i, row in enumerate(matrix) for j, v in enumerate(row) if v]
    return sorted(cells, key=lambda c: (c[0] == c[1], 0 if c[0] == c[1] else -matrix[c[0]][c[1]], c))


def curves(rep: dict) -> dict:
    """ROC, precision-recall and calibration for an evaluation (core.results.interpret.curves_for)."""
    from core.results import interpret

    return interpret.curves_for(rep)


def explain(loaded, image, top_k: int = 3):
    """Grad-CAM explanation of one prediction (core.results.interpret.explain)."""
    from core.results import interpret

    return interpret.explain(loaded, image, top_k=top_k)


def load_model(path: str | Path):
    """core.results.loading.load_model, behind a lazy import."""
    from core.results.loading import load_model as _load

    return _load(path)


def export_formats() -> tuple[str, ...]:
    """Formats core.results.formats can write (safetensors, pt, torchscript, onnx, int8, bundle)."""
    from core.results.formats import FORMATS

    return FORMATS


def export_ready(run_dir: str | Path, fmt: str, owner: str | None = None, tta: bool | str = False) -> Path | None:
    """The existing export of a run in ``fmt`` (with test-time augmentation ``tta`` in its graph) when it is newer
    than the weights, else None."""
    from core.results import formats

    return formats.ready(open_run(run_dir, owner).path, fmt, tta)


def export_format(run_dir: str | Path, fmt: str, owner: str | None = None, tta: bool | str = False) -> Path:
    """Write (or reuse) an export of a run in ``fmt``, ``tta`` ("none", "flip", "multicrop") baked into torchscript
    and onnx graphs; returns the file (core.results.formats.export)."""
    from core.results import formats

    return formats.export(open_run(run_dir, owner).require_intact(action="exported").path, fmt, tta=tta)


def int8_summary(int8_path: str | Path) -> dict | None:
    """What an int8 export cost: fp32 and int8 validation accuracy and the method used (core.results.formats)."""
    from core.results import formats

    return formats.int8_summary(int8_path)


def card_markdown(run_dir: str | Path, owner: str | None = None) -> str:
    """The model card as Markdown (core.results.model_card; the card comes from the weights file's header)."""
    from core.results import model_card

    return model_card.card_markdown(model_card.full_card(open_run(run_dir, owner).require_intact(action="shown").path))


def export_files(run_dir: str | Path, owner: str | None = None) -> dict:
    """What the Export step offers: the weight files on disk (read only when a download is clicked, so a
    VGG-size model is never held in memory several times over) and the small card and config texts."""
    from core.results import formats

    run = open_run(run_dir, owner).require_intact(action="exported")
    if not run.best_weights.exists():
        raise ValueError(_("run {run} has no checkpoint yet; train at least one epoch first").format(run=run.id))
    card = read_card(run.path)
    return {"safetensors": run.best_weights, "bundle": formats.export(run.path, "pt"),
            "card": json.dumps(card, indent=2).encode(), "config": run.config().to_json().encode()}


def distill_compare(teacher: str | Path, students: dict, owner: str | None = None) -> list[dict]:
    """Teacher and student rows: accuracy, agreement, parameters, size, CPU latency (core.techniques.distill.compare)."""
    from core.techniques import distill

    students = {label: open_run(rid, owner).path for label, rid in students.items()}
    return distill.compare(open_run(teacher, owner).path, students, latency_repeats=5)


def task_table(source: str | Path, tasks: list[str] | None = None, owner: str | None = None) -> dict:
    """A multi-label CSV's tasks (task -> classes), usable row count and skipped rows (core.techniques.multitask.read_table)."""
    from core.techniques import multitask

    table = multitask.read_table(str(_source(source, owner)), tasks)
    return {"tasks": table.tasks, "rows": len(table.files), "skipped": table.skipped}


# --- ownership: every run, dataset and upload is listed, opened, changed and deleted by its owner only ---
# (core.storage.owners holds the rule; owner None is the single-user app, which sees what has no owner)

def open_run(run_id_or_path: str | Path, owner: str | None = None) -> runs.Run:
    """A run ``owner`` may use; another user's run is 'not found', exactly like one that does not exist."""
    try:
        run = runs.open_run(run_id_or_path)
    except ValueError:
        run = None
    if run is None or not owners.visible(run.path, owner):
        raise ValueError(_("run {run} was not found in your workspace; pick one on the Runs page").format(
            run=repr(Path(str(run_id_or_path)).name)))
    return run


def my_runs(owner: str | None = None) -> list[runs.Run]:
    """The runs ``owner`` may see, newest first (damaged ones included: ask each its problem())."""
    return owners.mine(runs.list_runs(), owner)


def delete_run(run_id: str, owner: str | None = None, active_ids=frozenset()) -> None:
    """Delete one of ``owner``'s runs; refused while any process trains it (core.storage.locks) or a job is active."""
    open_run(run_id, owner)
    runs.delete(run_id, set(active_ids))


def resume_run(manager, run_id: str, owner: str | None = None):
    """Continue one of ``owner``'s runs from its last.pt; refused while another process holds the run."""
    from core.storage import locks

    run = open_run(run_id, owner)
    held = locks.holder(run.path)
    if held is not None:
        raise ValueError(_("run {run} is still being trained ({holder}); stop it first or wait for it to "
                           "finish").format(run=run.id[:15], holder=locks.describe(held)))
    return manager.resume_run(run.id, owner=owner)


def unfinished(run_dir: str | Path, owner: str | None = None) -> dict | None:
    """Whether a finished run stopped while still improving (core.train.presets.unfinished): {message, more_epochs}."""
    from core.train import presets  # torch-free at import

    return presets.unfinished(open_run(run_dir, owner).events())


def train_more(manager, run_id: str, more_epochs: int, owner: str | None = None):
    """Resume a finished run with its epochs raised by ``more_epochs`` (the schedule restarts over the new epochs)."""
    if not (isinstance(more_epochs, int) and 1 <= more_epochs <= 500):
        raise ValueError(_("more epochs must be a whole number in 1..500; got {value}").format(value=repr(more_epochs)))
    run = open_run(run_id, owner)
    config = run.config()
    # from the last epoch run: one stopped at its time budget ran fewer than its config's epochs
    config.epochs = int((run.result() or {}).get("epochs_run") or config.epochs) + more_epochs
    runs.atomic_write_text(run.path / "config.json", config.to_json())
    return resume_run(manager, run.id, owner)


def _source(path: str | Path, owner: str | None) -> Path:
    """A data source (dataset folder, uploaded file) ``owner`` may read; another user's is 'not found'."""
    p = Path(path).resolve()
    home = workspace.home().resolve()
    for area in ("datasets", "uploads"):
        top = home / area
        if p.is_relative_to(top) and p != top:
            folder = top / p.relative_to(top).parts[0]  # the owned folder: a dataset, an upload
            owners.check(folder, owner, "dataset")
            return p
    if owner is not None:  # a signed-in user names data of the workspace only, never a server path
        raise ValueError(_("{name} was not found in your workspace; upload it on the Data step").format(
            name=repr(Path(str(path)).name)))
    return p


def my_datasets(owner: str | None = None) -> list[str]:
    """Names of the datasets ``owner`` may see, alphabetical."""
    from core.data import edits

    return [n for n in edits.list_datasets() if owners.visible(edits.root() / n, owner)]


def dataset_dir(name: str, owner: str | None = None) -> Path:
    """The folder of one of ``owner``'s datasets; another user's is 'not found'."""
    from core.data import edits

    if name not in my_datasets(owner):
        raise ValueError(_("dataset {name} was not found in your workspace; upload one or pick a sample").format(
            name=repr(name)))
    return edits.dataset_dir(name)


# core.data.edits functions that take a dataset name first; the pages reach them through dataset_action
_DATASET_ACTIONS = ("class_counts", "signature", "scan", "add_class", "rename_class", "merge_classes",
                    "delete_class", "add_image", "delete_dataset")


def dataset_action(action: str, name: str, *args, owner: str | None = None):
    """core.data.edits.<action>(name, *args) on one of ``owner``'s datasets (read, add_class, rename_class, ...)."""
    from core.data import edits

    if action not in _DATASET_ACTIONS or not hasattr(edits, action):
        raise ValueError(_("dataset action must be one of {choices}; got {value}").format(
            choices=", ".join(_DATASET_ACTIONS), value=repr(action)))
    dataset_dir(name, owner)
    return getattr(edits, action)(name, *args)


# --- text classification (issue 17): the pages' text doorways are in core/app/text_services.py (which builds on
# this module, never the other way round); these two stay here for the callers that use them

def is_text_data(path: str | Path) -> bool:
    """Whether an upload is a text dataset (a table of text,label or class folders of .txt files)."""
    from core.data import text

    return text.looks_like_text(path)


def text_health(path: str | Path, val_fraction: float = 0.2, seed: int = 0, max_length: int = 128,
                backbone: str = "") -> dict:
    """The text health report (counts, lengths in the encoder's tokens, empties, duplicates, leakage, encoding
    problems per row); lengths in words when the encoder's tokenizer cannot be loaded."""
    from core.data import text

    table = text.read(path)
    count = None
    try:
        from core.models import text_backbones

        tok = text_backbones.tokenizer(backbone or text_backbones.DEFAULT)
        count = lambda s: len(tok(s, add_special_tokens=True)["input_ids"])  # noqa: E731
    except (ImportError, OSError, RuntimeError):
        pass
    return text.health(table, val_fraction, seed, count_tokens=count, max_length=max_length)
