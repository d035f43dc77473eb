"""Layout detection: class folders, train/val split folders, or a CSV of labels; every image opened once;
the result is a validated `DatasetIndex`. Also the merge of a second upload into a dataset."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


from core.data import labels
from core.storage import owners, paths
from core.data.records import (DatasetIndex, FILENAME_COLUMNS, IngestError, Item, LABEL_COLUMNS, LABEL_EXTENSIONS,
                               MIN_IMAGES_PER_CLASS, Progress, SPLITS, SPLIT_COLUMNS, Skipped, _TEST_NAMES,
                               _TRAIN_NAMES, _VAL_NAMES, file_sha256, _ignored_reason, _not_image_reason, _suffix,
                               _supported_list, _workers)
from core.data.imageio import ImageError, is_image_name, open_image
from core.data.message import Message
from core.i18n import N_, _, ngettext

# --------------------------------------------------------------------------------------------
# Folder scanning


@dataclass
class _Candidate:
    path: str  # relative to the dataset root, POSIX
    label: str
    split: str | None


@dataclass
class _Found:
    """What layout detection produced before any image is opened."""

    layout: str
    candidates: list[_Candidate] = field(default_factory=list)
    declared_classes: set[str] = field(default_factory=set)
    skipped: list[Skipped] = field(default_factory=list)
    loose_images: int = 0
    remedy: str = N_("add images or remove the folder")


def scan_folder(
    root: Path,
    max_pixels: int | None = None,
    verify: bool = True,
    progress: Progress | None = None,
) -> DatasetIndex:
    """Detect the layout under `root`, check every image, and return a validated DatasetIndex."""
    top = Path(root)
    if not top.is_dir():
        raise IngestError(
            _("{folder} is not a folder — pass the folder that holds the class folders (or extract the .zip "
              "first)").format(folder=top)
        )
    base = descend(top)
    base_real = base.resolve()
    found = _detect(base, base_real)

    jobs = [(c, base_real / c.path) for c in found.candidates]
    checked = 0
    total = len(jobs)

    def inspect(job: tuple[_Candidate, Path]) -> tuple[str | None, str | None]:
        return _inspect_file(job[1], verify, max_pixels)

    items: list[Item] = []
    hashes: dict[str, str] = {}
    skipped = list(found.skipped)
    if progress is not None:
        progress(0, total)
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        for (cand, _path), (digest, problem) in zip(jobs, pool.map(inspect, jobs)):
            checked += 1
            if progress is not None:
                progress(checked, total)
            if problem is not None:
                skipped.append(Skipped(cand.path, problem))
                continue
            items.append(Item(cand.path, cand.label, cand.split))
            hashes[cand.path] = digest or ""

    _validate(top, found, items, skipped)

    items.sort(key=lambda it: (it.path, it.label, it.split or ""))
    skipped.sort(key=lambda s: s.path)
    classes = sorted({it.label for it in items})
    digest = _content_hash(items, hashes)
    return DatasetIndex(
        root=str(base_real),
        items=items,
        classes=classes,
        skipped=skipped,
        layout=found.layout,
        content_hash=digest,
    )


VERIFY_SIDE = 32  # the side a verifying decode may shrink a JPEG to


def _inspect_file(path: Path, verify: bool, max_pixels: int | None) -> tuple[str | None, str | None]:
    """(content sha256, None) for a usable image, or (None, reason)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, Message(_UNREADABLE, error=str(exc.strerror or exc))
    if size == 0:
        return None, Message(N_("{name} is empty (0 bytes) — re-export or re-download it"), name=path.name)
    if verify:
        try:
            # every byte is decoded (a truncated file fails), at the smallest scale a JPEG allows
            open_image(path, max_pixels=max_pixels, min_side=VERIFY_SIDE)
        except ImageError as exc:
            return None, exc.message
    try:
        return file_sha256(path), None
    except OSError as exc:
        return None, Message(_UNREADABLE, error=str(exc.strerror or exc))


_UNREADABLE = N_("cannot be read ({error})")
_LINK = N_("symbolic link, not followed (it could point outside the dataset)")


def _content_hash(items: list[Item], hashes: dict[str, str]) -> str:
    rows = sorted([it.path, it.label, it.split or "", hashes.get(it.path, "")] for it in items)
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()


def _visible(folder: Path) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """(dirs, files, [(entry, reason)] for clutter and links), each sorted by name."""
    dirs: list[Path] = []
    files: list[Path] = []
    other: list[tuple[Path, str]] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise IngestError(_("cannot list {folder} ({error}) — check its permissions").format(
            folder=folder, error=exc.strerror or exc)) from None
    for entry in entries:
        path = Path(entry.path)
        if entry.name == owners.FILE and entry.is_file(follow_symlinks=False):
            continue  # the workspace's owner record (core.storage.owners), not part of the data
        if entry.is_symlink():
            other.append((path, Message(_LINK)))
            continue
        ignored = _ignored_reason([entry.name])
        if ignored:
            other.append((path, ignored))
            continue
        if entry.is_dir(follow_symlinks=False):
            dirs.append(path)
        elif entry.is_file(follow_symlinks=False):
            files.append(path)
    return dirs, files, other


def descend(top: Path) -> Path:
    """Step through wrapper folders (a lone folder with sub-folders and no images or labels)."""
    current = top
    for _depth in range(64):  # a bound, not an expectation: nobody nests wrappers this deep
        dirs, files, _ = _visible(current)
        has_data = any(is_image_name(f.name) or _suffix(f.name) in LABEL_EXTENSIONS for f in files)
        if len(dirs) != 1 or has_data:
            return current
        child_dirs, _, _ = _visible(dirs[0])
        if not child_dirs:
            return current  # the lone folder holds images directly: it is a class, not a wrapper
        current = dirs[0]
    return current


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _detect(base: Path, base_real: Path) -> _Found:
    dirs, files, other = _visible(base)
    label_files = [f for f in files if _suffix(f.name) in LABEL_EXTENSIONS]
    clutter = [Skipped(_rel(p, base) + ("/" if p.is_dir() else ""), r) for p, r in other]

    tables: list[tuple[Path, _Table]] = []
    unusable: list[Skipped] = []
    for lf in label_files:
        table, problem = _read_table(lf)
        if table is not None:
            tables.append((lf, table))
        else:
            unusable.append(Skipped(_rel(lf, base), problem or Message(N_("unreadable label file"))))

    if tables:
        found = _from_tables(base, base_real, tables)
        found.skipped = clutter + unusable + found.skipped
        return found

    other_files = [f for f in files if f not in label_files]  # label files are reported above
    splits = _split_folders(dirs)
    if splits is not None:
        found = _from_split_folders(base, dirs, other_files, splits)
    else:
        found = _from_class_folders(base, dirs, other_files, split=None)
    found.skipped = clutter + unusable + found.skipped
    return found


def _split_folders(dirs: list[Path]) -> dict[str, Path] | None:
    """Map "train"/"val"/"test" to folders when the top level is split that way."""
    by_name = {d.name.lower(): d for d in dirs}
    train = next((by_name[n] for n in _TRAIN_NAMES if n in by_name), None)
    val = next((by_name[n] for n in _VAL_NAMES if n in by_name), None)
    test = next((by_name[n] for n in _TEST_NAMES if n in by_name), None)
    if train is None or (val is None and test is None):
        return None
    result = {"train": train}
    if val is not None:
        result["val"] = val
        if test is not None:
            result["test"] = test
    else:
        result["val"] = test  # a lone test folder is what people validate on
    return result


def _from_split_folders(
    base: Path, dirs: list[Path], files: list[Path], splits: dict[str, Path]
) -> _Found:
    found = _Found(layout="split-folders")
    used = {splits["train"], splits["val"]}
    for d in dirs:
        if d in used:
            continue
        if d == splits.get("test"):
            found.skipped.append(Skipped(d.name + "/", Message(
                N_("held-out test folder not used; '{val}/' is the validation set"), val=splits["val"].name)))
        else:
            found.skipped.append(Skipped(d.name + "/", Message(
                N_("not a split folder (expected '{train}/' and '{val}/'); ignored"), train=splits["train"].name,
                val=splits["val"].name)))
    for f in files:
        found.skipped.append(Skipped(_rel(f, base), Message(N_("file outside the train/val folders, ignored"))))
    for split in SPLITS:
        sub_dirs, sub_files, sub_other = _visible(splits[split])
        part = _from_class_folders(base, sub_dirs, sub_files, split=split)
        found.candidates += part.candidates
        found.declared_classes |= part.declared_classes
        found.loose_images += part.loose_images
        found.skipped += [Skipped(_rel(p, base), r) for p, r in sub_other] + part.skipped
    return found


def _from_class_folders(base: Path, dirs: list[Path], files: list[Path], split: str | None) -> _Found:
    found = _Found(layout="class-folders" if split is None else "split-folders")
    for f in files:
        if is_image_name(f.name):
            found.loose_images += 1
            found.skipped.append(Skipped(
                _rel(f, base), Message(N_("image outside any class folder — move it into the folder of its class"))
            ))
        else:
            found.skipped.append(Skipped(_rel(f, base), _not_image_reason(f.name)))
    for class_dir in dirs:
        label = class_dir.name
        bad_label = labels.label_problem(label)
        if bad_label:
            found.skipped.append(Skipped(_rel(class_dir, base) + "/", Message(
                N_("class folder name {name} {problem} — rename the folder (plain text, one line)"),
                name=repr(label[:60]), problem=bad_label)))
            continue
        found.declared_classes.add(label)
        for path, reason in _walk(class_dir):
            rel = _rel(path, base)
            if reason is None:
                found.candidates.append(_Candidate(rel, label, split))
            else:
                found.skipped.append(Skipped(rel, reason))
    return found


def _walk(folder: Path) -> Iterator[tuple[Path, str | None]]:
    """Every file below `folder`: (path, None) for images, (path, reason) for the rest."""
    for current, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(current)
        keep = []
        for d in sorted(dirnames):
            reason = _not_followed(here / d)
            if reason:
                yield here / d, reason
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            path = here / f
            yield path, _not_followed(path) or (None if is_image_name(f) else _not_image_reason(f))


def _not_followed(path: Path) -> str | None:
    """Why the walk leaves this entry out: a symbolic link, or operating-system clutter; None otherwise."""
    return Message(_LINK) if path.is_symlink() else _ignored_reason([path.name])


# ---- CSV / TSV labels


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]
    file_col: int
    label_col: int
    split_col: int | None


def _normalise_header(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().strip('"').lower())


def _read_table(path: Path) -> tuple[_Table | None, str | None]:
    """Parse a label file; return (table, None) or (None, why it cannot be used)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return None, Message(_UNREADABLE, error=str(exc.strerror or exc))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # spreadsheet exports on Windows; every byte decodes
    if _suffix(path.name) == ".tsv":
        delimiter = "\t"
    else:
        # Spreadsheets in some locales export ';'-separated "CSV"; the header line decides.
        first_line = text.split("\n", 1)[0]
        delimiter = max(",;\t|", key=first_line.count) if any(c in first_line for c in ",;\t|") else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return None, Message(N_("empty label file, ignored"))
    header = [_normalise_header(h) for h in rows[0]]
    file_col = next((header.index(c) for c in FILENAME_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    if file_col is None or label_col is None:
        found = ", ".join(rows[0])
        return None, Message(
            N_("label file without the expected header: needs a file column ({files}) and a label column "
               "({labels}); found {found}; ignored") if found else
            N_("label file without the expected header: needs a file column ({files}) and a label column "
               "({labels}); found nothing; ignored"),
            files=", ".join(FILENAME_COLUMNS[:5]), labels=", ".join(LABEL_COLUMNS[:3]), **({"found": found} if found else {}))
    split_col = next((header.index(c) for c in SPLIT_COLUMNS if c in header), None)
    return _Table(rows[0], rows[1:], file_col, label_col, split_col), None


def _split_from_name(stem: str) -> str | None:
    s = stem.lower()
    if s.startswith(_VAL_NAMES):
        return "val"
    if s.startswith(_TRAIN_NAMES):
        return "train"
    if s.startswith(_TEST_NAMES):
        return "test"
    return None


def _from_tables(base: Path, base_real: Path, tables: list[tuple[Path, _Table]]) -> _Found:
    found = _Found(layout="csv", remedy=N_("add images or remove its rows"))
    file_splits: dict[Path, str | None] = {path: None for path, _ in tables}
    if len(tables) > 1:
        named = {path: _split_from_name(path.stem) for path, _ in tables}
        if None in named.values() or "train" not in named.values():
            names = ", ".join(p.name for p, _ in tables)
            raise IngestError(
                _("found {n} label files ({names}); expected one — keep one, or name them train.csv and "
                  "val.csv").format(n=len(tables), names=names)
            )
        file_splits = named
    has_val = any(s == "val" for s in file_splits.values()) or any(
        _row_split(row, t) == "val" for _, t in tables for row in t.rows
    )

    basenames: dict[str, list[Path]] | None = None
    listed: dict[str, tuple[str, int]] = {}

    def skip(name: str, msgid: str, **params) -> None:  # the row being read is left out, with its file and line
        found.skipped.append(Skipped(name, Message(msgid, where=where, line=lineno, **params)))

    for label_path, table in tables:
        where = label_path.name
        for lineno, row in enumerate(table.rows, start=2):
            cell = row[table.file_col].strip() if table.file_col < len(row) else ""
            label = row[table.label_col].strip() if table.label_col < len(row) else ""
            row_name = cell or f"{where} line {lineno}"
            if not cell:
                skip(row_name, N_("{where} line {line}: no file name, row ignored"))
                continue
            if not label:
                skip(cell, N_("{where} line {line}: empty label — fill it in or remove the row"))
                continue
            bad_label = labels.label_problem(label)
            if bad_label:
                skip(cell, N_("{where} line {line}: label {label} {problem} — labels must be plain text on one line; "
                              "fix the cell"), label=repr(label[:60]), problem=bad_label)
                continue
            split = _row_split(row, table) or file_splits[label_path]
            if split == "test":
                if has_val:
                    skip(cell, N_("{where} line {line}: test split not used (a val split exists)"))
                    continue
                split = "val"
            rel_name = cell.replace("\\", "/")
            # Refused before anything is looked up, so the answer never depends on files outside.
            try:
                resolved = paths.contained(base_real, rel_name)
            except paths.OutsideError as exc:
                skip(cell, N_("{where} line {line}: path leaves the dataset folder ({error})"),
                     error=Message(exc.msgid, **exc.params))
                continue
            if not resolved.is_file() and "/" not in rel_name:
                # Many exports list bare file names while the images sit in a sub-folder.
                if basenames is None:
                    basenames = _image_basenames(base)
                matches = basenames.get(rel_name, [])
                if len(matches) == 1:
                    resolved = matches[0].resolve()
            if not resolved.is_file():
                skip(cell, N_("{where} line {line}: file not found — check the name or add the file"))
                continue
            rel = resolved.relative_to(base_real).as_posix()
            ignored = _ignored_reason(rel.split("/"))
            if ignored:
                skip(rel, _ROW, reason=ignored)
                continue
            if not is_image_name(rel):
                skip(rel, _ROW, reason=_not_image_reason(rel))
                continue
            if rel in listed:
                skip(rel, N_("{where} line {line}: listed again (first on {first_where} line {first_line}); kept "
                             "the first"), first_where=listed[rel][0], first_line=listed[rel][1])
                continue
            listed[rel] = (where, lineno)
            found.candidates.append(_Candidate(rel, label, split))
            found.declared_classes.add(label)

    label_names = ", ".join(p.name for p, _ in tables)
    for path, reason in _walk(base):
        if reason is None:
            rel = path.resolve().relative_to(base_real).as_posix()
            if rel not in listed:
                found.skipped.append(Skipped(rel, Message(N_("image not listed in {files}, ignored"),
                                                          files=label_names)))
    return found


_ROW = N_("{where} line {line}: {reason}")


def _row_split(row: list[str], table: _Table) -> str | None:
    if table.split_col is None or table.split_col >= len(row):
        return None
    value = row[table.split_col].strip().lower()
    if value in ("train", "training"):
        return "train"
    if value in _VAL_NAMES:
        return "val"
    if value in _TEST_NAMES:
        return "test"
    return None


def _image_basenames(base: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = defaultdict(list)
    for path, reason in _walk(base):
        if reason is None:
            index[path.name].append(path)
    return index


# ---- validation


def _validate(top: Path, found: _Found, items: list[Item], skipped: list[Skipped]) -> None:
    where = str(top)
    if not items:
        if found.loose_images and not found.declared_classes:
            raise IngestError(_(
                "found {n} image(s) in {folder} but no class folders — put each class's images in its own folder "
                "(e.g. cats/, dogs/) or add a labels.csv").format(n=found.loose_images, folder=where))
        if skipped and found.candidates:
            examples = "; ".join(f"'{s.path}': {s.shown()}" for s in skipped[:2])
            raise IngestError(_(
                "no readable images in {folder}: all {n} image files were skipped (e.g. {examples}) — replace the "
                "damaged files").format(folder=where, n=len(found.candidates), examples=examples))
        raise IngestError(
            _("no images found in {folder} — expected one folder per class (e.g. cats/, dogs/) holding {types} "
              "files, train/ and val/ folders, or a labels.csv").format(folder=where, types=_supported_list())
        )
    counts = Counter(item.label for item in items)
    classes = sorted(found.declared_classes | set(counts))
    if len(classes) < 2:
        only = classes[0]
        raise IngestError(
            (_("found 1 class '{name}'; classification needs at least 2 — add a folder per class")
             if found.layout != "csv"
             else _("found 1 class '{name}'; classification needs at least 2 — label images with at least two "
                    "classes")).format(name=only)
        )
    small = [c for c in classes if counts.get(c, 0) < MIN_IMAGES_PER_CLASS]
    if small:
        parts = [
            ngettext("class '{name}' has {n} image", "class '{name}' has {n} images", counts.get(c, 0)).format(
                name=c, n=counts.get(c, 0))
            for c in small
        ]
        raise IngestError(
            _("{classes}; each class needs at least {min} — {remedy}").format(
                classes="; ".join(parts), min=MIN_IMAGES_PER_CLASS, remedy=_(found.remedy))
        )


# --------------------------------------------------------------------------------------------
# Combining uploads


def merge_into(dest_root: Path, src_root: Path) -> None:
    """Append the images of another upload's class folders into an existing dataset folder."""
    dest_root, src_root = Path(dest_root), Path(src_root)
    if not src_root.is_dir():
        raise IngestError(_("{folder} is not a folder — extract the second upload first").format(folder=src_root))
    src_base = descend(src_root)
    src_layout, src_groups = merge_groups(src_base)
    if src_layout == "csv":
        raise IngestError(
            _("{folder} is labelled by a CSV file; merging CSV-labelled uploads is not supported — combine the "
              "CSV files into one and upload everything together, or use class folders").format(folder=src_root)
        )
    if not src_groups:
        raise IngestError(
            _("{folder} has no class folders to merge — put each class's images in its own folder (e.g. cats/, "
              "dogs/)").format(folder=src_root)
        )

    dest_root.mkdir(parents=True, exist_ok=True)
    dest_real = dest_root.resolve()
    dest_dirs, dest_files, _other = _visible(dest_root)
    if not dest_dirs and not dest_files:
        dest_base, dest_layout = dest_root, src_layout
        dest_groups: dict[str | None, Path] = {}
    else:
        dest_base = descend(dest_root)
        dest_layout, dest_groups = merge_groups(dest_base)
    if dest_layout != src_layout:
        raise IngestError(
            _("cannot merge: the dataset uses {layout} but the new upload uses {new_layout} — upload it with the "
              "same layout").format(layout=dest_layout, new_layout=src_layout)
        )

    for role, src_dir in src_groups.items():
        target_dir = dest_groups.get(role) or (dest_base / src_dir.name if role else dest_base)
        class_dirs, _files, _other = _visible(src_dir)
        existing = {}
        if target_dir.is_dir():
            existing = {d.name.casefold(): d for d in _visible(target_dir)[0]}
        for class_dir in class_dirs:
            # Match class folders case-insensitively so 'Cats' and 'cats' do not become two classes.
            dest_class = existing.get(class_dir.name.casefold(), target_dir / class_dir.name)
            for path, reason in _walk(class_dir):
                if reason is None:
                    _copy_without_clobbering(path, dest_class / path.relative_to(class_dir), dest_real)


def merge_groups(base: Path) -> tuple[str, dict[str | None, Path]]:
    """Layout of `base` and the folders that hold class folders: {None: base} or {"train": .., "val": ..}."""
    dirs, files, _ = _visible(base)
    if any(_suffix(f.name) in LABEL_EXTENSIONS and _read_table(f)[0] is not None for f in files):
        return "csv", {}
    splits = _split_folders(dirs)
    if splits is not None:
        groups: dict[str | None, Path] = {"train": splits["train"], "val": splits["val"]}
        return "split-folders", groups
    return "class-folders", ({None: base} if dirs else {})


def _copy_without_clobbering(src: Path, target: Path, dest_real: Path) -> None:
    stem, ext = target.stem, target.suffix
    n = 0
    while target.exists():
        n += 1
        target = target.with_name(f"{stem}_{n}{ext}")
    if not paths.within(target, dest_real):
        raise IngestError(_("refusing to write {file} outside {folder} — check for symbolic links").format(
            file=target, folder=dest_real))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
