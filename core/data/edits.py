"""Datasets in the workspace: import uploads and samples, and edit classes as plain folder operations.

Every dataset is a folder under ``<workspace>/datasets/<name>``. Names typed by a person (dataset
and class names) are checked before they touch the disk, so nothing is ever written outside that
folder. Torch-free at import time: the Streamlit pages call this module directly.
"""
from __future__ import annotations

import hashlib
import json
import io
import os
import re
import secrets
import shutil
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from core.data import ingest, labels, layouts
from core.storage import owners, quota, workspace
from core.data.imageio import is_image_name
from core.data.message import shown
from core.i18n import N_, _

_FORBIDDEN = re.compile(r"[/\\\x00-\x1f:*?\"<>|]")
MAX_NAME = 80
GALLERY_PER_CLASS = 4


_WHAT = {"class": N_("class"), "dataset": N_("dataset")}  # what check_name's messages call the name


def check_name(name: str, what: str = "class") -> str:
    """Return ``name`` stripped if it is a safe single folder name; ValueError saying why otherwise."""
    kind = _(_WHAT.get(what, what))
    if not isinstance(name, str):
        raise ValueError(_("the {what} name must be text, got {type}").format(what=kind, type=type(name).__name__))
    clean = name.strip()
    if not clean:
        raise ValueError(_("the {what} name is empty; type a name such as 'cats'").format(what=kind))
    problem = labels.label_problem(clean)
    if problem:
        raise ValueError(_("the {what} name {name} {problem}; use plain text on one line").format(
            what=kind, name=repr(name[:60]), problem=shown(problem)))
    if clean in (".", "..") or ".." in clean:
        raise ValueError(_("the {what} name {name} contains '..'; use letters, digits, spaces, '-' or '_'").format(
            what=kind, name=repr(name)))
    if _FORBIDDEN.search(clean):
        raise ValueError(_("the {what} name {name} contains a path separator or a reserved character "
                           "(/ \\ : * ? \" < > |); use letters, digits, spaces, '-' or '_'").format(
            what=kind, name=repr(name)))
    if clean.startswith("."):
        raise ValueError(_("the {what} name {name} starts with '.', which hides the folder; remove the dot").format(
            what=kind, name=repr(name)))
    if len(clean) > MAX_NAME:
        raise ValueError(_("the {what} name is {n} characters long; keep it under {max}").format(
            what=kind, n=len(clean), max=MAX_NAME))
    return clean


def slug(text: str, fallback: str = "dataset") -> str:
    """A safe dataset name derived from free text (an upload's file name)."""
    stem = re.sub(r"\.(zip)$", "", Path(str(text)).name, flags=re.I)
    out = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")[:MAX_NAME]
    return out or fallback


# --- datasets ------------------------------------------------------------------------------------

def root() -> Path:
    """The folder that holds every dataset."""
    return workspace.sub("datasets")


def list_datasets() -> list[str]:
    """Dataset folder names, alphabetical; half-finished imports are left out."""
    return sorted(p.name for p in root().iterdir()
                  if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".partial"))


def dataset_dir(name: str) -> Path:
    """The folder of an existing dataset; ValueError naming the datasets that do exist otherwise."""
    path = root() / check_name(name, "dataset")
    if not path.is_dir():
        have = ", ".join(list_datasets()) or _("none yet")
        raise ValueError(_("dataset {name} does not exist (datasets: {have}); upload one or pick a sample").format(
            name=repr(name), have=have))
    return path


def unique_name(base: str) -> str:
    """``base`` if no dataset has that name yet, else ``base-2``, ``base-3``, ..."""
    base = check_name(slug(base), "dataset")
    taken = set(list_datasets())
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def import_sample(sample: str, per_class: int = 40, owner: str | None = None) -> str:
    """Write a built-in sample ('digits' or 'shapes') as dataset ``sample-<name>``; returns the name.

    Each owner gets a copy of their own (``sample-digits-2`` when another owner has ``sample-digits``),
    so one user's class edits never change another's sample.
    """
    from core.data.datasets import SAMPLES, make_sample  # late import: core.data.datasets brings in torch

    if sample not in SAMPLES:
        raise ValueError(_("unknown sample {name}; choose one of {choices}").format(name=repr(sample),
                                                                                   choices=", ".join(SAMPLES)))
    base, n = f"sample-{sample}", 1
    name = base
    while (root() / name).exists() and not owners.visible(root() / name, owner):
        n += 1
        name = f"{base}-{n}"
    dest = root() / name
    if not dest.is_dir():
        tmp = root() / f".{name}.{secrets.token_hex(4)}.partial"
        make_sample(sample, tmp, per_class=per_class)
        owners.record(tmp, owner)
        tmp.rename(dest)
    return name


def import_zip(src: str | Path | BinaryIO, name: str, append: bool = False,
               progress: Callable[[str, int, int], None] | None = None,
               owner: str | None = None) -> tuple[str, list[ingest.Skipped]]:
    """Extract a zip into dataset ``name`` (or merge it into the existing one); returns (name, skipped).

    ``progress(stage, done, total)`` is called while extracting and while checking the images.
    The upload is extracted and validated in a scratch folder first, so a bad upload never damages
    a dataset that already exists.
    """
    name = check_name(name, "dataset")
    dest = root() / name
    if dest.exists() and not append:
        raise ValueError(_("dataset {name} already exists; choose another name or tick 'append'").format(
            name=repr(name)))
    if dest.exists():
        owners.check(dest, owner, "dataset")  # append only to a dataset of one's own
    scratch = workspace.sub("uploads") / f"extract-{secrets.token_hex(8)}"
    room = quota.room(owner)  # the extraction itself stops where the owner's quota ends
    limits = ingest.Limits()
    if room is not None and room < limits.max_total_bytes:
        limits = ingest.Limits(max_total_bytes=max(room, 1))
    try:
        stage = (lambda name: (lambda d, t: progress(name, d, t))) if progress else (lambda name: None)
        try:
            skipped = ingest.extract_archive(src, scratch, limits=limits, progress=stage(N_("extracting")))
        except ingest.ArchiveTooLarge as e:
            if limits.max_total_bytes == ingest.Limits().max_total_bytes:
                raise
            raise quota.QuotaExceeded(quota.message(owner, quota.usage(owner), quota.limit_bytes(), e.total,
                                                    _("this upload"))) from None
        ingest.scan_folder(scratch, progress=stage(N_("checking images")))  # raises IngestError with what to fix
        if dest.exists():
            ingest.merge_into(dest, scratch)
        else:
            owners.record(scratch, owner)  # the dataset appears with its owner, never without
            shutil.move(str(scratch), str(dest))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return name, skipped


def import_files(files: Iterable[tuple[str, bytes | BinaryIO]], name: str, append: bool = False, progress=None,
                 owner: str | None = None):
    """Import (relative path, bytes or binary file) pairs from a folder upload; returns (name, skipped).

    The browser sends relative paths that nobody has sanitised, so they are packed into a zip and go
    through the same guarded extraction as a zip upload. The zip is spooled on disk (stored, not
    compressed) one file at a time: pass the uploaded file objects, not their bytes, and nothing is
    held in memory a second time.
    """
    spool = workspace.sub("uploads") / f"folder-{secrets.token_hex(8)}.zip"
    try:
        n = 0
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as z:
            for rel, payload in files:
                with z.open(zipfile.ZipInfo(str(rel).replace("\\", "/")), "w", force_zip64=True) as out:
                    if isinstance(payload, (bytes, bytearray, memoryview)):
                        out.write(payload)
                    else:
                        payload.seek(0)
                        shutil.copyfileobj(payload, out, 1 << 20)
                n += 1
        if n == 0:
            raise ValueError(_("the folder upload holds no files; pick a folder that contains class folders"))
        return import_zip(spool, name, append=append, progress=progress, owner=owner)
    finally:
        spool.unlink(missing_ok=True)


def _size_of(fileobj: BinaryIO) -> int | None:
    try:
        here = fileobj.tell()
        end = fileobj.seek(0, os.SEEK_END)
        fileobj.seek(here)
        return end - here
    except (AttributeError, OSError, ValueError):
        return None


def add_upload(fileobj: BinaryIO, filename: str, owner: str | None = None, dataset: str | None = None) -> Path:
    """Keep a copy of an uploaded file under ``<workspace>/uploads/<dataset>--<id>/`` (the original is never lost).

    The copy counts towards the owner's disk quota (QuotaExceeded when it does not fit) and goes
    when its dataset is deleted.
    """
    size = _size_of(fileobj)
    quota.check(owner, size or 0)
    folder = workspace.sub("uploads") / f"{check_name(dataset, 'dataset') if dataset else 'upload'}--{secrets.token_hex(8)}"
    folder.mkdir()
    owners.record(folder, owner)
    dest = folder / f"{slug(filename, 'upload')}.zip"
    try:
        with open(dest, "wb") as f:
            shutil.copyfileobj(fileobj, f, 1 << 20)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return dest


def import_upload(fileobj: BinaryIO, filename: str, name: str, append: bool = False,
                  progress: Callable[[str, int, int], None] | None = None,
                  owner: str | None = None) -> tuple[str, list[ingest.Skipped]]:
    """Keep a copy of an uploaded .zip and import it (import_zip); a rejected upload's copy is deleted at once."""
    kept = add_upload(fileobj, filename, owner=owner, dataset=name)
    try:
        return import_zip(kept, name, append=append, progress=progress, owner=owner)
    except BaseException:
        shutil.rmtree(kept.parent, ignore_errors=True)
        raise


def delete_dataset(name: str) -> None:
    """Remove a dataset folder for good; refused while a run trains on it. Runs are never touched.

    Whether the caller may delete it is the caller's question (core.app.services checks the owner).
    """
    from core.storage import locks, runs  # storage only: no torch

    path = dataset_dir(name)
    real = path.resolve()
    for run in runs.list_runs():
        held = locks.holder(run.path)
        if held is None:
            continue
        try:
            data = Path(json.loads((run.path / "config.json").read_text(encoding="utf-8")).get("data", ""))
        except (OSError, ValueError, AttributeError):
            continue
        if data.name and (data.resolve() == real or real in data.resolve().parents):
            raise ValueError(_("dataset {name} is in use: run {run} is training on it ({holder}); stop that run "
                               "first, then delete the dataset").format(name=repr(name), run=run.id,
                                                                       holder=locks.describe(held)))
    doomed = root() / f".{path.name}.{secrets.token_hex(4)}.deleting"
    path.rename(doomed)  # disappears from listings at once, even if removing the files takes a while
    shutil.rmtree(doomed, ignore_errors=True)
    for kept in workspace.sub("uploads").iterdir():  # the uploads it was made from (see add_upload)
        if kept.is_dir() and kept.name.rsplit("--", 1)[0] == path.name:
            shutil.rmtree(kept, ignore_errors=True)


# --- classes -------------------------------------------------------------------------------------

def _base(ds: Path) -> Path:
    # Same rule the scanner uses to skip a single wrapper folder, so both agree on where classes live.
    return layouts.descend(ds)


def class_parents(ds_name: str) -> list[Path]:
    """Folders that hold class folders: the dataset itself, or its train/ and val/ folders."""
    base = _base(dataset_dir(ds_name))
    layout, groups = layouts.merge_groups(base)
    if layout == "csv":
        raise ValueError(_("this dataset is labelled by a CSV file; edit the CSV to change classes "
                           "(class folder operations work on folder-per-class datasets)"))
    return list(groups.values()) or [base]


def class_counts(ds_name: str) -> dict[str, int]:
    """Images per class folder, counted on disk without validation (works while a class is still empty)."""
    counts: dict[str, int] = {}
    for parent in class_parents(ds_name):
        for d in sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")):
            n = sum(1 for f in d.rglob("*") if f.is_file() and is_image_name(f.name))
            counts[d.name] = counts.get(d.name, 0) + n
    return counts


def _class_folders(ds_name: str, cls: str) -> list[Path]:
    # Only names read back from the dataset's own folders are trusted: a caller's '../x' never
    # reaches the disk (delete_class would otherwise remove whatever it names).
    have = class_counts(ds_name)
    if not isinstance(cls, str) or cls not in have:
        raise ValueError(_("class {name} does not exist in {dataset} (classes: {have})").format(
            name=repr(cls), dataset=ds_name, have=", ".join(have) or _("none")))
    return [p / cls for p in class_parents(ds_name) if (p / cls).is_dir()]


def add_class(ds_name: str, cls: str) -> Path:
    """Create an empty class folder (in train/ for split datasets); add two or more images next."""
    cls = check_name(cls)
    if cls in class_counts(ds_name):
        raise ValueError(_("class {name} already exists in {dataset}; pick another name").format(
            name=repr(cls), dataset=ds_name))
    folder = class_parents(ds_name)[0] / cls
    folder.mkdir(parents=True)
    return folder


def rename_class(ds_name: str, old: str, new: str) -> None:
    """Rename a class everywhere it appears (train and val alike)."""
    new = check_name(new)
    _class_folders(ds_name, old)  # the class must exist before anything is renamed
    if new == old:
        return
    if new in class_counts(ds_name):
        raise ValueError(_("class {new} already exists; merge {old} into it instead of renaming").format(
            new=repr(new), old=repr(old)))
    for folder in _class_folders(ds_name, old):
        folder.rename(folder.with_name(new))


def _move_files(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dest / f.name
        stem, ext, n = target.stem, target.suffix, 0
        while target.exists():  # never overwrite an image of the class we merge into
            n += 1
            target = dest / f"{stem}_{n}{ext}"
        shutil.move(str(f), str(target))
    shutil.rmtree(src)


def merge_classes(ds_name: str, sources: list[str], target: str) -> None:
    """Move every image of ``sources`` into class ``target`` (created if new) and drop the sources."""
    target = check_name(target)
    sources = [s for s in sources if s != target]
    if not sources:
        raise ValueError(_("choose at least one class to merge that differs from the target class"))
    for s in sources:
        _class_folders(ds_name, s)  # every source checked before the first image moves
    for s in sources:
        for folder in _class_folders(ds_name, s):
            _move_files(folder, folder.parent / target)


def delete_class(ds_name: str, cls: str) -> int:
    """Delete a class folder and its images; returns how many images went with it."""
    n = 0
    for folder in _class_folders(ds_name, cls):
        n += sum(1 for f in folder.rglob("*") if f.is_file())
        shutil.rmtree(folder)
    return n


def add_image(ds_name: str, cls: str, payload: bytes, filename: str = "snapshot.jpg") -> Path:
    """Save one image (a camera snapshot, say) into a class after checking that it decodes."""
    from core.data.imageio import open_image

    folder = _class_folders(ds_name, cls)[0]
    ext = Path(filename).suffix.lower() if is_image_name(filename) else ".jpg"
    open_image(io.BytesIO(payload))  # raises ImageError saying what is wrong with the bytes
    dest = folder / f"added-{secrets.token_hex(4)}{ext}"
    dest.write_bytes(payload)
    return dest


# --- looking at a dataset ------------------------------------------------------------------------

def signature(ds_name: str) -> str:
    """Changes whenever a file under the dataset is added, removed, resized or touched (reads no image)."""
    h = hashlib.sha256()
    top = dataset_dir(ds_name)
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for f in sorted(filenames):
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            h.update(f"{os.path.relpath(dirpath, top)}/{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(
                "utf-8", "surrogateescape"))
    return h.hexdigest()[:24]


def scan(ds_name: str) -> ingest.DatasetIndex:
    """Scan and validate a dataset (IngestError says what to fix)."""
    return ingest.scan_folder(dataset_dir(ds_name))


def gallery(index: ingest.DatasetIndex, per_class: int = GALLERY_PER_CLASS) -> dict[str, list[str]]:
    """A few image paths per class, spread through the class so the thumbnails are not all alike."""
    by_class: dict[str, list[str]] = {c: [] for c in index.classes}
    for it in index.items:
        by_class[it.label].append(str(Path(index.root) / it.path))
    out = {}
    for c, paths in by_class.items():
        step = max(len(paths) // per_class, 1)
        out[c] = paths[::step][:per_class]
    return out


def split_summary(index: ingest.DatasetIndex, val_fraction: float) -> dict:
    """How the data will be split: its own val folder, or a stratified random fraction."""
    own = any(it.split == "val" for it in index.items) and any(it.split == "train" for it in index.items)
    n = len(index.items)
    if own:
        n_val = sum(1 for it in index.items if it.split == "val")
        return {"own_val": True, "n_train": n - n_val, "n_val": n_val}
    n_val = max(len(index.classes), int(round(n * val_fraction)))
    return {"own_val": False, "n_train": n - n_val, "n_val": n_val}
