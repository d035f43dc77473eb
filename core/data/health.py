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
                               Skipped, TINY_SIDE, _GRAY_MODES, _file_sha256, _workers)
from core.data.imageio import ImageError, open_image

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
        return _file_sha256(path)
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
            missing.append(Skipped(item.path, "file is missing or unreadable — scan the folder again"))
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
        "unreadable": [s.to_dict() for s in unreadable + missing],
        "skipped": [s.to_dict() for s in index.skipped],
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


def _look(path: Path) -> tuple[int, int, bool] | str:
    """(width, height, grayscale) of an image, or the reason it cannot be opened."""
    try:
        image = open_image(path)
    except ImageError as exc:
        return str(exc)
    mode = image.info.get("source_mode", "RGB")
    if mode in _GRAY_MODES:
        return image.width, image.height, True
    pixels = np.asarray(image)
    is_gray = bool(
        np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    )
    return image.width, image.height, is_gray


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


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
    out: list[str] = []
    for name, n in counts.items():
        if n < RECOMMENDED_IMAGES_PER_CLASS:
            out.append(
                f"class '{name}' has {_plural(n, 'image')}; {RECOMMENDED_IMAGES_PER_CLASS} or more are recommended"
            )
    if ratio is not None and ratio >= IMBALANCE_WARNING_RATIO:
        smallest = min(counts, key=lambda c: counts[c])
        out.append(
            f"imbalance ratio {ratio:.1f}: consider class-weighted loss or collecting more of '{smallest}'"
        )
    if duplicate_copies:
        out.append(
            f"{_plural(duplicate_copies, 'exact duplicate image')} — remove them so validation is honest"
        )
    if conflicting:
        verb = "carries" if len(conflicting) == 1 else "carry"
        out.append(
            f"{_plural(len(conflicting), 'group')} of identical images {verb} different labels "
            f"— keep one copy under the right class"
        )
    if leaks:
        n_val = sum(len(g["val"]) for g in leaks)
        verb = "appears" if n_val == 1 else "appear"
        out.append(
            f"{_plural(n_val, 'validation image')} also {verb} in train — remove the copies from "
            f"one side so validation is honest"
        )
    if split_counts is not None:
        for name, n in split_counts["val"].items():
            if n == 0:
                out.append(f"class '{name}' has no validation images — add some to the val folder")
    if tiny:
        verb = "is" if len(tiny) == 1 else "are"
        out.append(
            f"{_plural(len(tiny), 'image')} {verb} smaller than {TINY_SIDE} px on a side — "
            f"upscaling may make them unrecognisable; replace them with larger ones"
        )
    if gray and colour:
        out.append(
            f"{gray} of {gray + colour} checked images are grayscale — make sure colour is not "
            f"a shortcut to the label (mix grayscale and colour in every class, or convert all)"
        )
    if unreadable:
        out.append(
            f"{_plural(len(unreadable), 'image')} could not be read now — scan the folder again"
        )
    if skipped:
        out.append(
            f"{_plural(len(skipped), 'file')} left out of the dataset — see 'skipped' for the reasons"
        )
    return out
