"""Datasets for training: built-in samples, ingestion, splits, a decode-once image cache, transforms."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

from core.data import ingest
from core.i18n import _
from core.storage import cache, workspace
from core.data.preprocess import Preprocessing, to_square  # noqa: F401 (to_square: part of this API)
from core.data.imageio import open_image

SAMPLES = ("digits", "shapes")


# --- built-in sample datasets (made offline) -----------------------------------------------------

def make_sample(name: str, dest: Path, per_class: int = 40, seed: int = 0, skip: int = 0) -> Path:
    """Write a sample dataset as class folders of PNGs: 'digits' (scikit-learn) or 'shapes' (Pillow).

    ``skip``: digits leave out the first ``skip`` images of each class, so a set made with ``skip >= n`` shares no
    image with one made with ``per_class=n`` (a held-out test set); shapes differ by ``seed`` instead."""
    if name not in SAMPLES:
        raise ValueError(_("unknown sample {name}; choose one of {choices}").format(name=repr(name),
                                                                                   choices=", ".join(SAMPLES)))
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    rng = random.Random(seed)
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        seen: dict[int, int] = {}
        for img, y in zip(d.images, d.target):
            y = int(y)
            seen[y] = seen.get(y, 0) + 1
            if not skip < seen[y] <= skip + per_class:
                continue
            arr = (img / 16.0 * 255).astype(np.uint8)
            (dest / str(y)).mkdir(exist_ok=True)
            Image.fromarray(arr, "L").resize((64, 64), Image.NEAREST).save(dest / str(y) / f"{y}_{seen[y]:04d}.png")
    else:
        for cls in ("circle", "square", "triangle"):
            (dest / cls).mkdir()
            for i in range(per_class):
                im = Image.new("RGB", (96, 96), tuple(rng.randrange(160, 256) for _ in range(3)))
                dr = ImageDraw.Draw(im)
                r = rng.randrange(18, 36)
                cx, cy = rng.randrange(r + 2, 96 - r - 2), rng.randrange(r + 2, 96 - r - 2)
                colour = tuple(rng.randrange(0, 120) for _ in range(3))
                if cls == "circle":
                    dr.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
                elif cls == "square":
                    dr.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
                else:
                    dr.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
                im.save(dest / cls / f"{cls}_{i:04d}.png")
    return dest


# --- ingestion -----------------------------------------------------------------------------------

def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def resolve(source: str | Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """A dataset folder for ``source``: a folder is used in place, a .zip is extracted once into the workspace."""
    src = Path(source)
    if str(source).startswith("sample:"):
        name = str(source).split(":", 1)[1]
        dest = workspace.sub("datasets") / f"sample-{name}"
        if not dest.is_dir():
            make_sample(name, dest)
        return dest
    if src.is_dir():
        return src
    if not src.is_file():
        raise ValueError(_("dataset {name} does not exist; give a folder of class folders, a .zip, "
                           "or sample:digits / sample:shapes").format(name=repr(str(source))))
    dest = workspace.sub("datasets") / f"zip-{_file_digest(src)}"
    if not (dest / ".complete").exists():
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            skipped = ingest.extract_archive(src, tmp, progress=progress)
        except Exception:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (tmp / ".skipped.json").write_text(json.dumps([s.to_dict() for s in skipped]))
        (tmp / ".complete").write_text("")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest


_INDEX_CACHE_VERSION = 2  # 2: skip reasons keep their msgid (shown in the reader's language)
# Bookkeeping that resolve() writes next to extracted data; not part of the user's dataset.
_OWN_FILES = frozenset({".complete", ".skipped.json"})


def _folder_signature(root: Path) -> str:
    """A digest of every path, size and mtime under ``root``: it changes when any file does, and reads no file."""
    from core.data.imageio import max_pixels_limit

    h = hashlib.sha256(json.dumps([_INDEX_CACHE_VERSION, str(root.resolve()), max_pixels_limit()]).encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            h.update(f"{rel_dir}/{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def _scan_cached(root: Path) -> ingest.DatasetIndex:
    # Verifying every image is the slow part of ingestion; an unchanged folder (same upload, same
    # files, same sizes and mtimes) gets its earlier index back instead of being scanned again.
    cache_file = workspace.sub("index-cache") / f"{_folder_signature(root)}.json"
    try:
        index = ingest.DatasetIndex.from_dict(json.loads(cache_file.read_text(encoding="utf-8")))
        cache.touch(cache_file)
        return index
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or unreadable cache: scan
    index = ingest.scan_folder(root)
    index.skipped = [s for s in index.skipped if Path(s.path).name not in _OWN_FILES]
    tmp = cache_file.with_name(f"{cache_file.stem}.{os.getpid()}.{id(index)}.tmp")
    tmp.write_text(json.dumps(index.to_dict(), ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, cache_file)
    cache.prune(keep=(cache_file,))
    return index


def load_index(source: str | Path, progress=None) -> ingest.DatasetIndex:
    """Resolve ``source`` and scan it into a DatasetIndex (reused while the folder's files are unchanged)."""
    root = resolve(source, progress)
    index = _scan_cached(root)
    extra = root / ".skipped.json"
    if extra.exists():
        index.skipped.extend(ingest.Skipped.from_dict(s) for s in json.loads(extra.read_text()))
    return index


@dataclass
class Split:
    """Train and validation items with integer labels."""

    classes: list[str]
    train: list[tuple[str, int]]   # (absolute path, class index)
    val: list[tuple[str, int]]

    def to_dict(self) -> dict:
        return {"classes": self.classes, "train": self.train, "val": self.val}

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        return cls(list(d["classes"]), [tuple(x) for x in d["train"]], [tuple(x) for x in d["val"]])


def split(index: ingest.DatasetIndex, val_fraction: float, seed: int) -> Split:
    """The data's own train/val folders when present, else a stratified random split."""
    from sklearn.model_selection import train_test_split

    cls_idx = {c: i for i, c in enumerate(index.classes)}
    root = Path(index.root)
    rows = [(str(root / it.path), cls_idx[it.label], it.split) for it in index.items]
    if any(s == "val" for *_, s in rows) and any(s == "train" for *_, s in rows):
        train = [(p, y) for p, y, s in rows if s != "val"]
        val = [(p, y) for p, y, s in rows if s == "val"]
        return Split(list(index.classes), train, val)
    rows.sort()
    labels = [y for _, y, _ in rows]
    n_val = max(len(index.classes), int(round(len(rows) * val_fraction)))
    if len(rows) - n_val < len(index.classes):
        # stratification needs one image of every class on each side
        raise ValueError(_("{n} images are too few to hold out {n_val} for validation and still train on "
                           "every one of the {n_classes} classes; add images or lower val_fraction").format(
                             n=len(rows), n_val=n_val, n_classes=len(index.classes)))
    tr, va = train_test_split(rows, test_size=n_val, random_state=seed, stratify=labels)
    return Split(list(index.classes), [(p, y) for p, y, _ in tr], [(p, y) for p, y, _ in va])


# --- decode once: square uint8 images at the preprocessing's resize size ------------------------

def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1  # open_image will raise the clear error for a missing file
    return st.st_size, st.st_mtime_ns


def square_from_file(source, pre: Preprocessing) -> np.ndarray:
    """An image file as ``to_square`` makes it, decoded as every path that feeds the network decodes it (this
    cache, predictions, calibration, label checks): a large JPEG at a reduced scale (core.data.imageio, min_side)."""
    return to_square(open_image(source, min_side=pre.resize_size), pre)


class ImageCache:
    """Every image decoded and resized once into a uint8 memmap on disk (bounded memory)."""

    def __init__(self, paths: list[str], pre: Preprocessing, progress: Callable[[int, int], None] | None = None):
        self.pre = pre
        # size and mtime in the key: an image edited in place under the same path is decoded afresh
        stamps = [(p, *_stamp(p)) for p in paths]
        key = hashlib.sha256(json.dumps([stamps, pre.to_dict()]).encode()).hexdigest()[:20]
        self.file = workspace.sub("cache") / f"{key}.npy"
        if not self.file.exists():
            tmp = self.file.with_name(f"{key}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
            s = pre.resize_size
            square = lambda p: square_from_file(p, pre)  # noqa: E731
            # Plain writes instead of a writable memmap: dirty mapped pages would count in this
            # process's RSS until the end (1.2 GB for 20,000 images at 96 px); written pages don't.
            # Decoding runs on a few threads (Pillow releases the GIL) in bounded chunks.
            try:
                with open(tmp, "wb") as f, ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                                             "fortran_order": False, "shape": (len(paths), s, s, 3)})
                    for start in range(0, len(paths), 64):
                        for arr in pool.map(square, paths[start:start + 64]):
                            f.write(np.ascontiguousarray(arr, dtype=np.uint8).tobytes())
                        if progress:
                            progress(min(start + 64, len(paths)), len(paths))
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, self.file)  # the finished file appears atomically: its existence means "complete"
            cache.prune(keep=(self.file,))  # least recently used caches go once the folder is over its cap
        else:
            cache.touch(self.file)
        self.array = np.load(self.file, mmap_mode="r")
        self.index = {p: i for i, p in enumerate(paths)}

    def get(self, path: str) -> torch.Tensor:
        """CHW uint8 tensor of one image."""
        return torch.from_numpy(np.array(self.array[self.index[path]])).permute(2, 0, 1)


# --- transforms on uint8 CHW tensors; normalisation happens on the device in batches ------------

def train_transform(pre: Preprocessing, augment):
    """Training augmentation for a preset name ('none', 'light', 'strong'), a RunConfig or AugmentSettings.

    Pass the RunConfig for augment='custom', so that its aug_* fields are used (see core.data.augment).
    """
    from core.data import augment as _augment

    return _augment.build(pre, augment)


def eval_transform(pre: Preprocessing):
    """Deterministic centre crop."""
    from torchvision.transforms import v2

    return v2.CenterCrop(pre.crop_size)


def normalize(batch_u8: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 NCHW -> float normalised with the backbone's mean and std."""
    mean = torch.tensor(pre.mean, device=batch_u8.device).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, device=batch_u8.device).view(1, 3, 1, 1)
    return (batch_u8.float() / 255.0 - mean) / std


def preprocess_images(images: list[Image.Image], pre: Preprocessing) -> torch.Tensor:
    """PIL images -> the normalised batch the network sees (same path as training's validation)."""
    crop = eval_transform(pre)
    u8 = torch.stack([crop(torch.from_numpy(to_square(im, pre)).permute(2, 0, 1)) for im in images])
    return normalize(u8, pre)


class CachedDataset(torch.utils.data.Dataset):
    """(uint8 CHW image, label) pairs read from an ImageCache, with a transform."""

    def __init__(self, items: list[tuple[str, int]], cache: ImageCache, transform):
        self.items, self.cache, self.transform = items, cache, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, y = self.items[i]
        return self.transform(self.cache.get(path)), y
