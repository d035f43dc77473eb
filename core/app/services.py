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

_SID_RE = re.compile(r"^[0-9a-f]{32}$")
# Fields the guided flow edits; everything else keeps RunConfig's defaults.
EDITABLE = ("backbone", "pretrained", "image_size", "trainable", "trainable_groups", "epochs", "batch_size",
            "lr", "lr_decay", "optimizer", "weight_decay", "scheduler", "augment", "label_smoothing",
            "class_weights", "grad_clip", "val_fraction", "seed", "deterministic", "early_stopping_patience",
            "name")
# Settings added to RunConfig by other parts of the engine travel with the draft when present.
_OPTIONAL = ("early_stopping_metric", "unfreeze_after", "unfreeze_mode", "unfreeze_lr_factor", "tensorboard",
             "mlflow_uri", "mlflow_experiment")
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
        raise ValueError(f"draft id must be 32 hex characters (from new_sid()); got {sid!r}")
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
        raise ValueError(f"draft {sid[:8]}… was not found in your workspace; start a new one")
    data = {k: draft[k] for k in EDITABLE if k in draft} | ({"owner": owner} if owner is not None else {})
    runs.atomic_write_text(_path(sid), json.dumps(data, indent=2))


def to_config(draft: dict, data: str | Path, owner: str | None = None, **overrides) -> RunConfig:
    """A RunConfig from a draft and a dataset folder (the owner goes into the run folder when the job starts)."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    fields = {k: v for k, v in draft.items() if k in known}
    fields.update(overrides)
    _source(data, owner)  # another user's dataset or upload is "not found", before anything reads it
    if str(fields.get("backbone", "")).startswith("adapted:"):  # adapted:<base>:<run id>, a run of its own
        owners.check(runs.root() / str(fields["backbone"]).rsplit(":", 1)[-1], owner, "adapted backbone")
    cfg = RunConfig(**{**fields, "data": str(data)})
    cfg.dataset = cfg.dataset or Path(str(data)).name
    return cfg


def recommend(counts: dict[str, int]) -> dict:
    """Default layer choice derived from the data, with the reason in one sentence."""
    if not counts:
        return {"trainable": "head", "augment": "light", "reason": "no data yet: start with the head only"}
    smallest = min(counts.values())
    if smallest < 100:
        return {"trainable": "head", "augment": "light",
                "reason": f"the smallest class has {smallest} images: with so few, train the head only "
                          f"(feature extractor) so the pretrained features are not overwritten"}
    if smallest < 500:
        return {"trainable": "last-2", "augment": "light",
                "reason": f"the smallest class has {smallest} images: fine-tune the last two groups "
                          f"and the head"}
    return {"trainable": "all", "augment": "strong",
            "reason": f"the smallest class has {smallest} images: enough to fine-tune everything"}


def trainable_preset(groups: list[str], preset: str, n: int = 2) -> list[str]:
    """Trainable group names for a preset: 'head', 'last' (last ``n`` body groups + head) or 'all'."""
    if preset == "head":
        return ["head"]
    if preset == "all":
        return list(groups)
    if preset == "last":
        body = groups[:-1]
        return body[max(len(body) - n, 0):] + ["head"]
    raise ValueError(f"preset must be one of head, last, all; got {preset!r}")


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
    try:
        # the run folder's owner record decides, not the card's: the card travels with every export
        adapted = [a for a in backbones.list_adapted() if owners.visible(a["run_dir"], owner)]
    except (OSError, ValueError):
        adapted = []  # an unreadable runs folder must not cost the chooser the registry's own rows
    base = {r["name"]: r for r in rows}
    for a in adapted:
        b = base.get(a["base"], {})
        rows.append({"name": a["name"], "title": a["title"], "params (M)": b.get("params (M)"),
                     "input": b.get("input"), "ImageNet top-1 (%)": None, "weights": "adapted",
                     "groups": b.get("groups"), "note": f"{a['base']} after self-supervised pretraining on "
                                                        f"{a['dataset']} ({a['epochs']} epochs)."})
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

    with torch.device("meta"):
        model = backbones.build_model(name, num_classes, pretrained=False)
    return backbones.param_counts(name, model)


def augment_preview(path: str, backbone: str, image_size: int, augment: str, n: int = 8, seed: int = 0,
                    aug: dict | None = None) -> list:
    """``n`` augmented versions of one image, as PIL images, exactly as training would see them."""
    import torch
    from PIL import Image

    from core.data import datasets
    from core.data.imageio import open_image
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
    square = torch.from_numpy(datasets.to_square(open_image(path), pre)).permute(2, 0, 1).contiguous()
    with torch.random.fork_rng(devices=[]):  # the preview must not shift a training run's random stream
        torch.manual_seed(seed)
        return [Image.fromarray(transform(square).permute(1, 2, 0).numpy()) for _ in range(n)]


def evaluate_run(run_dir: str | Path, owner: str | None = None) -> dict:
    """core.results.metrics.evaluate_run, behind a lazy import (only ``owner``'s runs)."""
    from core.results import metrics

    return metrics.evaluate_run(open_run(run_dir, owner).require_intact(action="evaluated").path)


def evaluate_on(run_dir: str | Path, dataset_dir: str | Path, owner: str | None = None) -> dict:
    """Score a run's best checkpoint on another labelled dataset (core.results.metrics.evaluate_on)."""
    from core.results import metrics

    return metrics.evaluate_on(open_run(run_dir, owner).require_intact(action="evaluated").path,
                               _source(dataset_dir, owner))


def top_losses(rep: dict, limit: int = 24, wrong_only: bool = True) -> list[dict]:
    """Validation items the model got most wrong (core.results.metrics.top_losses)."""
    from core.results import metrics

    return metrics.top_losses(rep, limit=limit, wrong_only=wrong_only)


def cell_items(rep: dict, true_idx: int, pred_idx: int) -> list[dict]:
    """Validation items in one confusion-matrix cell (core.results.metrics.cell_items)."""
    from core.results import metrics

    return metrics.cell_items(rep, true_idx, pred_idx)


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


def export_ready(run_dir: str | Path, fmt: str, owner: str | None = None) -> Path | None:
    """The existing export of a run in ``fmt`` when it is newer than the weights, else None."""
    from core.results import formats

    return formats.ready(open_run(run_dir, owner).path, fmt)


def export_format(run_dir: str | Path, fmt: str, owner: str | None = None) -> Path:
    """Write (or reuse) an export of a run in ``fmt``; returns the file (core.results.formats.export)."""
    from core.results import formats

    return formats.export(open_run(run_dir, owner).require_intact(action="exported").path, fmt)


def card_markdown(run_dir: str | Path, owner: str | None = None) -> str:
    """The model card as Markdown (core.results.formats; the card comes from the weights file's header)."""
    from core.results import formats

    return formats.card_markdown(formats.full_card(open_run(run_dir, owner).require_intact(action="shown").path))


def export_files(run_dir: str | Path, owner: str | None = None) -> dict:
    """What the Export step offers: the weight files on disk (read only when a download is clicked, so a
    VGG-size model is never held in memory several times over) and the small card and config texts."""
    from core.results import formats

    run = open_run(run_dir, owner).require_intact(action="exported")
    if not run.best_weights.exists():
        raise ValueError(f"run {run.id} has no checkpoint yet; train at least one epoch first")
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
        raise ValueError(f"run {Path(str(run_id_or_path)).name!r} was not found in your workspace; "
                         f"pick one on the Runs page")
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
        raise ValueError(f"run {run.id[:15]} is still being trained ({locks.describe(held)}); stop it first or "
                         f"wait for it to finish")
    return manager.resume_run(run.id, owner=owner)


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
        raise ValueError(f"{Path(str(path)).name!r} was not found in your workspace; upload it on the Data step")
    return p


def my_datasets(owner: str | None = None) -> list[str]:
    """Names of the datasets ``owner`` may see, alphabetical."""
    from core.data import edits

    return [n for n in edits.list_datasets() if owners.visible(edits.root() / n, owner)]


def dataset_dir(name: str, owner: str | None = None) -> Path:
    """The folder of one of ``owner``'s datasets; another user's is 'not found'."""
    from core.data import edits

    if name not in my_datasets(owner):
        raise ValueError(f"dataset {name!r} was not found in your workspace; upload one or pick a sample")
    return edits.dataset_dir(name)


# core.data.edits functions that take a dataset name first; the pages reach them through dataset_action
_DATASET_ACTIONS = ("class_counts", "signature", "scan", "add_class", "rename_class", "merge_classes",
                    "delete_class", "add_image", "delete_dataset")


def dataset_action(action: str, name: str, *args, owner: str | None = None):
    """core.data.edits.<action>(name, *args) on one of ``owner``'s datasets (read, add_class, rename_class, ...)."""
    from core.data import edits

    if action not in _DATASET_ACTIONS or not hasattr(edits, action):
        raise ValueError(f"dataset action must be one of {', '.join(_DATASET_ACTIONS)}; got {action!r}")
    dataset_dir(name, owner)
    return getattr(edits, action)(name, *args)
