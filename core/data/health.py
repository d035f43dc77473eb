"""The health report: what silently spoils a model (duplicates, train/val leakage, imbalance, tiny or
grayscale images), with advice."""
from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.data.records import (DatasetIndex, IMBALANCE_WARNING_RATIO, Item, RECOMMENDED_IMAGES_PER_CLASS, SPLITS,
                               Skipped, TINY_SIDE, _GRAY_MODES, file_sha256, _workers)
from core.data.imageio import ImageError, open_image
from core.data.message import Message
from core.i18n import N_, _, ngettext

# --------------------------------------------------------------------------------------------
# Health report


def leakage(index: DatasetIndex, train_paths: Sequence[str], val_paths: Sequence[str]) -> list[dict[str, Any]]:
    """Groups of byte-identical images present in both the train and the val path lists."""
    root = Path(index.root)
    by_hash: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"train": [], "val": []})
    for side, listed in (("train", train_paths), ("val", val_paths)):
        for p in listed:
            digest = _safe_hash(root, str(p))
            if digest is not None:
                by_hash[digest][side].append(str(p))
    groups = [
        {"sha256": h, "train": sorted(g["train"]), "val": sorted(g["val"])}
        for h, g in by_hash.items()
        if g["train"] and g["val"]
    ]
    return sorted(groups, key=lambda g: (g["train"][0], g["val"][0]))


def _safe_hash(root: Path, rel: str) -> str | None:
    path = Path(rel) if os.path.isabs(rel) else root / rel
    try:
        return file_sha256(path)
    except OSError:
        return None


def health_report(index: DatasetIndex, sample_limit: int | None = None) -> dict[str, Any]:
    """JSON-friendly dataset diagnosis; every warning says what to do about it.

    All files are hashed (duplicates, leakage); only `sample_limit` evenly spread images are
    decoded for sizes and colour (None decodes all).
    """
    root = Path(index.root)
    counts = index.counts()
    items = list(index.items)

    hashes: dict[str, str] = {}
    missing: list[Skipped] = []
    for item in items:
        digest = _safe_hash(root, item.path)
        if digest is None:
            missing.append(Skipped(item.path, Message(N_("file is missing or unreadable — scan the folder again"))))
        else:
            hashes[item.path] = digest

    groups_by_hash: dict[str, list[str]] = defaultdict(list)
    for path, digest in hashes.items():
        groups_by_hash[digest].append(path)
    duplicate_groups = sorted(sorted(g) for g in groups_by_hash.values() if len(g) > 1)
    duplicate_copies = sum(len(g) - 1 for g in duplicate_groups)
    label_of = {item.path: item.label for item in items}
    conflicting = [g for g in duplicate_groups if len({label_of[p] for p in g}) > 1]

    split_counts: dict[str, dict[str, int]] | None = None
    leaks: list[dict[str, Any]] = []
    if any(item.split for item in items):
        split_counts = {s: {c: 0 for c in index.classes} for s in SPLITS}
        for item in items:
            if item.split in split_counts:
                split_counts[item.split][item.label] += 1
        leaks = leakage(
            index,
            [i.path for i in items if i.split == "train"],
            [i.path for i in items if i.split == "val"],
        )

    sample = _even_sample(items, sample_limit)
    sizes: list[list[int]] = []
    tiny: list[dict[str, Any]] = []
    gray = colour = 0
    unreadable: list[Skipped] = []
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        for item, result in zip(sample, pool.map(lambda it: _look(root / it.path), sample)):
            if isinstance(result, str):
                unreadable.append(Skipped(item.path, result))
                continue
            width, height, is_gray = result
            sizes.append([width, height])
            if min(width, height) < TINY_SIDE:
                tiny.append({"path": item.path, "width": width, "height": height})
            if is_gray:
                gray += 1
            else:
                colour += 1

    nonzero = [n for n in counts.values() if n > 0]
    ratio = (max(nonzero) / min(nonzero)) if nonzero else None

    warnings = _warnings(
        counts, ratio, duplicate_copies, conflicting, leaks, tiny, gray, colour,
        index.skipped, unreadable + missing, split_counts,
    )
    return {
        "root": index.root,
        "layout": index.layout,
        "content_hash": index.content_hash,
        "total_images": len(items),
        "class_counts": counts,
        "split_counts": split_counts,
        "imbalance_ratio": round(ratio, 3) if ratio is not None else None,
        "sampled": len(sample),
        "image_sizes": sizes,
        "duplicates": duplicate_groups,
        "duplicate_images": duplicate_copies,
        "conflicting_labels": conflicting,
        "leakage": leaks,
        "grayscale": gray,
        "colour": colour,
        "tiny_images": tiny,
        "unreadable": [_shown(s) for s in unreadable + missing],
        "skipped": [_shown(s) for s in index.skipped],
        "warnings": warnings,
    }


def _even_sample(items: list[Item], limit: int | None) -> list[Item]:
    # Evenly spaced rather than random so that the same index always yields the same report.
    if limit is None or limit >= len(items):
        return items
    if limit <= 0:
        return []
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _shown(s: Skipped) -> dict[str, str]:
    """A skipped file as the report shows it: its path and the reason in the current language."""
    return {"path": s.path, "reason": s.shown()}


def _look(path: Path) -> tuple[int, int, bool] | str:
    """(width, height, grayscale) of an image, or the reason it cannot be opened."""
    try:
        image = open_image(path, min_side=TINY_SIDE)  # the size from the header; pixels only for the grey check
    except ImageError as exc:
        return exc.message
    width, height = image.info["source_size"]
    mode = image.info.get("source_mode", "RGB")
    if mode in _GRAY_MODES:
        return width, height, True
    pixels = np.asarray(image)
    is_gray = bool(
        np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    )
    return width, height, is_gray


def _warnings(
    counts: dict[str, int],
    ratio: float | None,
    duplicate_copies: int,
    conflicting: list[list[str]],
    leaks: list[dict[str, Any]],
    tiny: list[dict[str, Any]],
    gray: int,
    colour: int,
    skipped: list[Skipped],
    unreadable: list[Skipped],
    split_counts: dict[str, dict[str, int]] | None,
) -> list[str]:
    # in the current language: the report is made for the person looking at it (the page caches it per language)
    out: list[str] = []
    for name, n in counts.items():
        if n < RECOMMENDED_IMAGES_PER_CLASS:
            out.append(ngettext("class '{name}' has {n} image; {min} or more are recommended",
                                "class '{name}' has {n} images; {min} or more are recommended", n).format(
                name=name, n=n, min=RECOMMENDED_IMAGES_PER_CLASS))
    if ratio is not None and ratio >= IMBALANCE_WARNING_RATIO:
        smallest = min(counts, key=lambda c: counts[c])
        out.append(_("imbalance ratio {ratio}: consider class-weighted loss or collecting more of '{name}'").format(
            ratio=f"{ratio:.1f}", name=smallest))
    if duplicate_copies:
        out.append(ngettext("{n} exact duplicate image — remove them so validation is honest",
                            "{n} exact duplicate images — remove them so validation is honest",
                            duplicate_copies).format(n=duplicate_copies))
    if conflicting:
        out.append(ngettext("{n} group of identical images carries different labels — keep one copy under the "
                            "right class",
                            "{n} groups of identical images carry different labels — keep one copy under the "
                            "right class", len(conflicting)).format(n=len(conflicting)))
    if leaks:
        n_val = sum(len(g["val"]) for g in leaks)
        out.append(ngettext("{n} validation image also appears in train — remove the copies from one side so "
                            "validation is honest",
                            "{n} validation images also appear in train — remove the copies from one side so "
                            "validation is honest", n_val).format(n=n_val))
    if split_counts is not None:
        for name, n in split_counts["val"].items():
            if n == 0:
                out.append(_("class '{name}' has no validation images — add some to the val folder").format(
                    name=name))
    if tiny:
        out.append(ngettext("{n} image is smaller than {side} px on a side — upscaling may make them "
                            "unrecognisable; replace them with larger ones",
                            "{n} images are smaller than {side} px on a side — upscaling may make them "
                            "unrecognisable; replace them with larger ones", len(tiny)).format(
            n=len(tiny), side=TINY_SIDE))
    if gray and colour:
        out.append(_("{gray} of {checked} checked images are grayscale — make sure colour is not a shortcut to the "
                     "label (mix grayscale and colour in every class, or convert all)").format(
            gray=gray, checked=gray + colour))
    if unreadable:
        out.append(ngettext("{n} image could not be read now — scan the folder again",
                            "{n} images could not be read now — scan the folder again",
                            len(unreadable)).format(n=len(unreadable)))
    if skipped:
        out.append(ngettext("{n} file left out of the dataset — see 'skipped' for the reasons",
                            "{n} files left out of the dataset — see 'skipped' for the reasons",
                            len(skipped)).format(n=len(skipped)))
    return out
