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

from core.storage import runs
from core.storage import workspace
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


def load(sid: str) -> dict:
    """The saved draft for ``sid`` over the defaults; unknown or damaged entries are dropped."""
    draft = defaults()
    p = _path(sid)
    if p.exists():
        try:
            saved = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            saved = {}
        if isinstance(saved, dict):
            draft.update({k: v for k, v in saved.items() if k in EDITABLE})
    return draft


def save(sid: str, draft: dict) -> None:
    """Write the draft atomically (only the editable fields)."""
    runs.atomic_write_text(_path(sid), json.dumps({k: draft[k] for k in EDITABLE if k in draft}, indent=2))


def to_config(draft: dict, data: str | Path, owner: str | None = None, **overrides) -> RunConfig:
    """A RunConfig from a draft and a dataset folder (owner recorded for multi-user listings)."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    fields = {k: v for k, v in draft.items() if k in known}
    fields.update(overrides)
    cfg = RunConfig(**{**fields, "data": str(data)})
    cfg.extra = {**cfg.extra, "dataset": Path(str(data)).name, **({"owner": owner} if owner else {})}
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


def backbone_table() -> list[dict]:
    """One row per registered backbone (core.models.backbones.table), then backbones adapted by SimCLR (core.techniques.simclr)."""
    from core.models import backbones

    rows = backbones.table()
    try:
        from core.techniques import simclr

        adapted = backbones.list_adapted()
    except (ImportError, OSError, ValueError):
        adapted = []  # pretraining is optional: the registry alone is a complete table
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


def evaluate_run(run_dir: str | Path) -> dict:
    """core.results.metrics.evaluate_run, behind a lazy import."""
    from core.results import metrics

    return metrics.evaluate_run(run_dir)


def evaluate_on(run_dir: str | Path, dataset_dir: str | Path) -> dict:
    """Score a run's best checkpoint on another labelled dataset (core.results.metrics.evaluate_on)."""
    from core.results import metrics

    return metrics.evaluate_on(run_dir, dataset_dir)


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


def export_ready(run_dir: str | Path, fmt: str) -> Path | None:
    """The existing export of a run in ``fmt`` when it is newer than the weights, else None."""
    from core.results import formats

    target = formats.default_path(run_dir, fmt)
    weights = runs.open_run(run_dir).best_weights
    if target.exists() and weights.exists() and target.stat().st_mtime >= weights.stat().st_mtime:
        return target
    return None


def export_format(run_dir: str | Path, fmt: str) -> Path:
    """Write (or reuse) an export of a run in ``fmt``; returns the file (core.results.formats.export)."""
    from core.results import formats

    return formats.export(run_dir, fmt)


def card_markdown(run_dir: str | Path) -> str:
    """The model card as Markdown (core.results.formats)."""
    from core.results import formats

    return formats.card_markdown(formats.full_card(run_dir))


def export_files(run_dir: str | Path) -> dict:
    """What the Export step offers: the weight files on disk (read only when a download is clicked, so a
    VGG-size model is never held in memory several times over) and the small card and config texts."""
    from core.results import formats
    from core.results.loading import read_card

    run = runs.open_run(run_dir)
    if not run.best_weights.exists():
        raise ValueError(f"run {run.id} has no checkpoint yet; train at least one epoch first")
    card = read_card(run.path)
    return {"safetensors": run.best_weights, "bundle": formats.export(run.path, "pt"),
            "card": json.dumps(card, indent=2).encode(), "config": run.config().to_json().encode()}


def distill_compare(teacher: str | Path, students: dict) -> list[dict]:
    """Teacher and student rows: accuracy, agreement, parameters, size, CPU latency (core.techniques.distill.compare)."""
    from core.techniques import distill

    return distill.compare(teacher, students, latency_repeats=5)


def task_table(source: str | Path, tasks: list[str] | None = None) -> dict:
    """A multi-label CSV's tasks (task -> classes), usable row count and skipped rows (core.techniques.multitask.read_table)."""
    from core.techniques import multitask

    table = multitask.read_table(str(source), tasks)
    return {"tasks": table.tasks, "rows": len(table.files), "skipped": table.skipped}
