"""Is a test set really new to a model? Compare its images, by the sha256 of their bytes, with the run's
training and validation images (split.json lists them), and decide what may be scored.

The rule the Evaluate step states: the run's own dataset is refused; a dataset that shares images with the
run is scored on the images the run never saw, and says how many it left out; one made only of seen images
is refused. Torch-free: the page calls it before anything loads a model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from core.data.records import DatasetIndex, file_sha256
from core.i18n import _

EXAMPLES = 5


def _digest(path: Path) -> str | None:
    try:
        return file_sha256(path)  # cached on (path, size, mtime): a run's files are read once per server
    except OSError:
        return None


def seen_paths(split: dict) -> list[str]:
    """Every image path a run trained or validated on, from its split.json contents."""
    return [str(p) for p, _ in list(split.get("train", [])) + list(split.get("val", []))]


def find(seen: Iterable[str], index: DatasetIndex, examples: int = EXAMPLES) -> dict:
    """Images of ``index`` whose bytes equal one of ``seen``: count, absolute paths, a few (test, seen) pairs."""
    by_hash: dict[str, str] = {}
    for p in seen:
        digest = _digest(Path(p))
        if digest is not None:
            by_hash.setdefault(digest, str(p))
    root = Path(index.root)
    hits = [(str(root / it.path), by_hash[d]) for it in index.items
            if (d := _digest(root / it.path)) is not None and d in by_hash]
    return {"n_total": len(index.items), "n_overlap": len(hits), "overlapping": [t for t, _ in hits],
            "examples": [{"test": t, "seen": s} for t, s in hits[:examples]]}


def same_dataset(split: dict, data: str | Path, dataset_root: str | Path) -> bool:
    """Whether ``dataset_root`` is the folder the run trained on (its config's data, or where its images lie)."""
    root = Path(dataset_root).resolve()
    if data and Path(data).resolve() == root:
        return True
    return any(Path(p).resolve().is_relative_to(root) for p in seen_paths(split)[:50])


def check(split: dict, data: str | Path, index: DatasetIndex, name: str) -> dict:
    """The overlap of test set ``name`` with a run, or ValueError when it must not be scored at all."""
    if same_dataset(split, data, index.root):
        raise ValueError(_("{name} is the dataset this run trained on: its accuracy there is not a test. Upload a "
                           "separate test set (images the run never saw) or pick another dataset.").format(
                             name=repr(name)))
    found = find(seen_paths(split), index)
    if found["n_total"] and found["n_overlap"] == found["n_total"]:
        raise ValueError(_("all {n} images of {name} are copies of images this run trained or validated on, so it "
                           "cannot test the run; upload images the run never saw").format(
                             n=found["n_total"], name=repr(name)))
    return found
