"""Turn an upload (a .zip or a folder) into a validated dataset index, and report on its health.

Three stages, each usable on its own:

* `extract_archive` streams a zip into a folder, refusing anything that could escape the folder
  or exhaust the disk (limits are enforced on the bytes that actually come out, not on headers).
* `scan_folder` recognises the layout (class folders, train/val split folders, or a CSV of labels),
  opens every image once, and returns a `DatasetIndex` whose `content_hash` identifies the data.
* `health_report` / `leakage` look for what silently spoils a model: duplicates, train/val
  leakage, imbalance, tiny or grayscale images.

Problems with single files never sink an upload: they are listed as `Skipped` with a reason, and
the rest stays usable. Problems with the upload as a whole raise `IngestError`.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence, Union

import numpy as np

from core.data import labels
from core.storage import owners, paths
from core.data.imageio import IMAGE_EXTENSIONS, ImageError, display_name, is_image_name, open_image

__all__ = [
    "DatasetIndex",
    "IngestError",
    "Item",
    "LAYOUTS",
    "Limits",
    "Skipped",
    "extract_archive",
    "health_report",
    "leakage",
    "merge_into",
    "scan_folder",
]

LAYOUTS = ("class-folders", "split-folders", "csv")
SPLITS = ("train", "val")

LABEL_EXTENSIONS = frozenset({".csv", ".tsv"})
ARCHIVE_EXTENSIONS = frozenset(
    {".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz", ".tbz", ".tbz2", ".txz", ".zst"}
)
SYSTEM_FILE_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db"})

# Header names are matched after lower-casing and turning spaces/dashes into underscores.
FILENAME_COLUMNS = (
    "filename", "file", "image", "path", "image_path",
    "file_name", "filepath", "file_path", "image_name", "image_file",
)
LABEL_COLUMNS = ("label", "class", "category", "class_name")
SPLIT_COLUMNS = ("split", "subset")

_TRAIN_NAMES = ("train",)
_VAL_NAMES = ("val", "valid", "validation")
_TEST_NAMES = ("test",)

MIN_IMAGES_PER_CLASS = 2
RECOMMENDED_IMAGES_PER_CLASS = 20
IMBALANCE_WARNING_RATIO = 3.0
TINY_SIDE = 32

_CHUNK = 1 << 20
# The ratio is checked on every member and on the archive as a whole; the compressed side counts
# as at least this many bytes, so a tiny flat icon or a short text file (which compress far beyond any
# sensible ratio) are not mistaken for bombs: such a member can write at most max_ratio KiB.
_RATIO_MIN_COMPRESSED = 1024
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

ZipSource = Union[str, os.PathLike, BinaryIO]
Progress = Callable[[int, int], None]


class IngestError(ValueError):
    """An upload that cannot become a dataset; the message says what was expected and what to do."""


class ArchiveTooLarge(IngestError):
    """An archive that expands beyond Limits.max_total_bytes; ``total`` is how far it got."""

    def __init__(self, message: str, total: int):
        super().__init__(message)
        self.total = total


# --------------------------------------------------------------------------------------------
# Records


@dataclass
class Item:
    """One labelled image: path relative to the dataset root (POSIX), label, optional split."""

    path: str
    label: str
    split: str | None = None  # "train", "val", or None (the caller splits randomly)

    def __post_init__(self) -> None:
        if self.split not in (None, *SPLITS):
            raise ValueError(
                f"Item.split must be one of None, 'train', 'val'; got {self.split!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Item":
        """Inverse of to_dict."""
        return cls(path=str(data["path"]), label=str(data["label"]), split=data.get("split"))


@dataclass
class Skipped:
    """A file or archive member left out, with the reason a person can act on."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Skipped":
        """Inverse of to_dict."""
        return cls(path=str(data["path"]), reason=str(data["reason"]))


@dataclass
class DatasetIndex:
    """Everything known about a scanned dataset; `content_hash` changes only when the data does."""

    root: str
    items: list[Item]
    classes: list[str]
    skipped: list[Skipped]
    layout: str  # one of LAYOUTS
    content_hash: str

    def counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        tally = Counter(item.label for item in self.items)
        return {name: tally.get(name, 0) for name in self.classes}

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return {
            "root": self.root,
            "items": [item.to_dict() for item in self.items],
            "classes": list(self.classes),
            "skipped": [s.to_dict() for s in self.skipped],
            "layout": self.layout,
            "content_hash": self.content_hash,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DatasetIndex":
        """Inverse of to_dict."""
        return cls(
            root=str(data["root"]),
            items=[Item.from_dict(d) for d in data.get("items", [])],
            classes=[str(c) for c in data.get("classes", [])],
            skipped=[Skipped.from_dict(d) for d in data.get("skipped", [])],
            layout=str(data["layout"]),
            content_hash=str(data["content_hash"]),
        )


# Frozen so that the shared default instance in extract_archive's signature cannot be mutated.
@dataclass(frozen=True)
class Limits:
    """Ceilings for archive extraction, enforced on the bytes actually decompressed."""

    max_total_bytes: int = 4 * 1024**3
    max_members: int = 200_000
    max_ratio: float = 200.0  # decompressed bytes / compressed bytes, per member and for the archive
    max_member_bytes: int = 512 * 1024**2

    def __post_init__(self) -> None:
        for name in ("max_total_bytes", "max_members", "max_ratio", "max_member_bytes"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Limits":
        """Inverse of to_dict; missing keys keep their defaults."""
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        return cls(**known)


# --------------------------------------------------------------------------------------------
# Shared helpers


def _ignored_reason(parts: Sequence[str]) -> str | None:
    """Why a path made of these components is operating-system clutter, or None if it is not."""
    if any(p == "__MACOSX" for p in parts):
        return "macOS archive metadata (__MACOSX), ignored"
    last = parts[-1]
    if last.startswith("._"):
        return "macOS resource-fork file (._*), ignored"
    if last.lower() in SYSTEM_FILE_NAMES:
        return f"system file ({last}), ignored"
    if any(p.startswith(".") for p in parts):
        return "hidden file or folder, ignored"
    return None


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _supported_list() -> str:
    return ", ".join(sorted(IMAGE_EXTENSIONS))


def _not_image_reason(name: str) -> str:
    ext = _suffix(name) or "no extension"
    return f"not an image ({ext}); supported types are {_supported_list()}"


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


WORKERS_ENV = "TRANSFER_STUDIO_DECODE_WORKERS"
DEFAULT_WORKERS = 2


def _workers() -> int:
    # Scans run inside the server process, next to every other user's requests: a few threads keep
    # the CPU and the decode memory (core.data.imageio's budget) shared fairly. Operators may raise it.
    raw = os.environ.get(WORKERS_ENV, "").strip()
    try:
        wanted = int(raw) if raw else DEFAULT_WORKERS
    except ValueError:
        raise ValueError(f"{WORKERS_ENV} must be a whole number of threads (1-32), got {raw!r}") from None
    return max(1, min(wanted, 32, os.cpu_count() or 1))


@functools.lru_cache(maxsize=262_144)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _file_sha256(path: Path) -> str:
    # Keyed on size and mtime so that scan, health report and leakage checks hash each file once.
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


# --------------------------------------------------------------------------------------------
# Archive extraction


def extract_archive(
    src: ZipSource,
    dest: Path,
    limits: Limits = Limits(),
    progress: Progress | None = None,
) -> list[Skipped]:
    """Safely stream a .zip (path or binary file) into `dest`; return the members left out.

    On IngestError, `dest` may already hold files from earlier members; discard it.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest_real = dest.resolve()
    name = display_name(src, "the upload")

    with _open_zip(src, name) as zf:
        infos = zf.infolist()
        if not infos:
            raise IngestError(
                f"{name} is an empty zip archive — add your class folders to it and upload again"
            )
        if len(infos) > limits.max_members:
            raise IngestError(
                f"{name} has {len(infos):,} members, above the limit of {limits.max_members:,} "
                f"(max_members) — split the dataset into several smaller uploads"
            )
        encrypted = [i for i in infos if i.flag_bits & 0x1]
        if encrypted:
            raise IngestError(
                f"{name}: encrypted zip archives are not supported ('{encrypted[0].filename}' is "
                f"password-protected); re-create it without a password"
            )

        skipped: list[Skipped] = []
        plan: list[tuple[zipfile.ZipInfo, list[str]]] = []
        seen: set[str] = set()
        for info in infos:
            parts, reason = _classify_member(info)
            display = _member_name(info)
            if reason is not None:
                skipped.append(Skipped(display, reason))
                continue
            if parts is None:
                continue  # plain directory entry: folders are created as files land in them
            key = "/".join(parts)
            if key in seen:
                skipped.append(Skipped(display, "duplicate name in the archive; the first copy was kept"))
                continue
            seen.add(key)
            if info.file_size > limits.max_member_bytes:
                skipped.append(Skipped(display, _member_too_big(info.file_size, limits)))
                continue
            _check_ratio(display, info.file_size, info.compress_size, limits)
            plan.append((info, parts))

        _check_declared_total(name, plan, limits)

        total_members = len(plan)
        state = _Budget(limits, sum(info.compress_size for info, _ in plan))
        images = 0
        if progress is not None:
            progress(0, total_members)
        for done, (info, parts) in enumerate(plan, start=1):
            display = _member_name(info)
            reason = _extract_member(zf, info, parts, dest, dest_real, state, name, display)
            if reason is not None:
                skipped.append(Skipped(display, reason))
            elif is_image_name(parts[-1]):
                images += 1
            if progress is not None:
                progress(done, total_members)

    if images == 0:
        examples = "; ".join(f"'{s.path}': {s.reason}" for s in skipped[:3])
        hint = f" Left out: {examples}." if examples else ""
        raise IngestError(
            f"{name} contains no images — expected {_supported_list()} files in one folder per "
            f"class (or with a labels .csv).{hint}"
        )
    return skipped


class _Budget:
    """Running total of decompressed bytes across the archive, and the compressed bytes they come from."""

    def __init__(self, limits: Limits, compressed: int) -> None:
        self.limits = limits
        self.compressed = compressed
        self.total = 0


@contextmanager
def _open_zip(src: ZipSource, name: str) -> Iterator[zipfile.ZipFile]:
    with _seekable(src, name) as fp:
        head = fp.read(300)
        fp.seek(0, os.SEEK_END)
        size = fp.tell()
        fp.seek(0)
        if size == 0:
            raise IngestError(f"{name} is empty (0 bytes) — upload the .zip file again")
        if not zipfile.is_zipfile(fp):
            if head.startswith(b"PK\x03\x04"):
                raise IngestError(
                    f"{name} is a truncated or corrupt zip archive (its table of contents is "
                    f"missing) — the upload was probably cut off; re-create the zip and upload again"
                )
            raise IngestError(f"{name} is not a zip archive ({_sniff(head)}) — upload a .zip file")
        fp.seek(0)
        try:
            zf = zipfile.ZipFile(fp)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as exc:
            raise IngestError(
                f"{name} is a truncated or corrupt zip archive ({exc}) — re-create the zip and "
                f"upload again"
            ) from None
        with zf:
            yield zf


@contextmanager
def _seekable(src: ZipSource, name: str) -> Iterator[BinaryIO]:
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise IngestError(f"{name} does not exist or is not a file — check the path to the .zip")
        with open(path, "rb") as fh:
            yield fh
        return
    if not hasattr(src, "read"):
        raise IngestError(
            f"expected a path or a binary file object for the archive, got {type(src).__name__} "
            f"— pass the .zip's path or the uploaded file"
        )
    seekable = getattr(src, "seekable", None)
    if callable(seekable) and seekable():
        src.seek(0)
        yield src
        return
    # zipfile needs random access; a one-way stream is spooled (to disk once it grows) in chunks.
    with tempfile.SpooledTemporaryFile(max_size=64 * 1024**2) as spool:
        while chunk := src.read(_CHUNK):
            spool.write(chunk)
        spool.seek(0)
        yield spool  # type: ignore[misc]


def _sniff(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "it looks like a gzip / .tar.gz file"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "it looks like a 7-Zip file"
    if head.startswith(b"Rar!"):
        return "it looks like a RAR file"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "it looks like a .tar file"
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")) or head[8:12] == b"WEBP":
        return "it looks like a single image; put the images in class folders and zip them"
    return "unrecognised content"


def _member_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    if info.flag_bits & 0x800:
        return name
    # Without the UTF-8 flag zipfile decodes as cp437, but many tools write UTF-8 names and forget
    # the flag. Undo the cp437 decoding and try UTF-8; genuine cp437 names rarely form valid UTF-8.
    try:
        return name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def _classify_member(info: zipfile.ZipInfo) -> tuple[list[str] | None, str | None]:
    """(path components to extract, None), (None, reason to report), or (None, None) to pass over."""
    raw = _member_name(info)
    normalized = raw.replace("\\", "/")  # archives made on Windows sometimes use backslashes
    is_dir = info.is_dir() or normalized.endswith("/")
    try:
        parts = paths.relative_parts(normalized)
    except paths.OutsideError as exc:
        if exc.kind == "empty":
            return None, None  # the archive's own root entry
        return None, _MEMBER_REFUSALS.get(exc.kind, f"{exc}, not extracted")
    if is_dir:
        return None, None
    if stat.S_ISLNK(info.external_attr >> 16):
        return None, "symbolic link, not extracted (links could point outside the dataset)"
    ignored = _ignored_reason(parts)
    if ignored:
        return None, ignored
    if _suffix(parts[-1]) in ARCHIVE_EXTENSIONS:
        return None, "nested archives are not opened — extract it and add its folders to the upload"
    if _suffix(parts[-1]) in LABEL_EXTENSIONS or is_image_name(parts[-1]):
        return parts, None
    return None, _not_image_reason(parts[-1])


_MEMBER_REFUSALS = {
    "absolute": "absolute path in the archive, not extracted (possible path-traversal attack)",
    "parent": "path leaves the archive folder ('..'), not extracted (possible path-traversal attack)",
    "nul": "name contains a NUL byte, not extracted (possible path-traversal attack)",
}


def _member_too_big(size: int, limits: Limits) -> str:
    return (
        f"member is larger than {_fmt_bytes(limits.max_member_bytes)} (max_member_bytes; it holds "
        f"at least {_fmt_bytes(size)}) — downscale or remove it"
    )


def _total_too_big(name: str, total: int, limits: Limits) -> str:
    return (
        f"{name} expands to more than {_fmt_bytes(limits.max_total_bytes)} (max_total_bytes; "
        f"reached {_fmt_bytes(total)}) — split the dataset into smaller uploads or downscale images"
    )


def _check_declared_total(name: str, plan: list[tuple[zipfile.ZipInfo, list[str]]], limits: Limits) -> None:
    # An early, cheap rejection based on headers; the binding check counts bytes as they flow.
    declared = sum(info.file_size for info, _ in plan)
    if declared > limits.max_total_bytes:
        raise ArchiveTooLarge(_total_too_big(name, declared, limits), declared)
    _check_ratio(f"the archive {name}", declared, sum(info.compress_size for info, _ in plan), limits)


def _check_ratio(display: str, produced: int, compressed: int, limits: Limits) -> None:
    ratio = produced / max(compressed, _RATIO_MIN_COMPRESSED)
    if ratio > limits.max_ratio:
        shown = display if display.startswith("the archive") else f"'{display}'"
        raise IngestError(
            f"{shown} expands {ratio:,.0f}x (compression ratio limit max_ratio = "
            f"{limits.max_ratio:g}) — this looks like a zip bomb; re-create the archive from "
            f"ordinary image files (flat bitmaps: save them as PNG)"
        )


def _extract_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    parts: list[str],
    dest: Path,
    dest_real: Path,
    state: _Budget,
    archive_name: str,
    display: str,
) -> str | None:
    """Write one member under dest; return a skip reason, None on success, or raise IngestError."""
    limits = state.limits
    rel = "/".join(parts)
    if not paths.is_contained(dest_real, rel):
        return "would be written outside the destination folder, not extracted"
    target = dest_real.joinpath(*parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create its folder ({exc.strerror or exc}) — a file and a folder share a name"
    if not paths.is_contained(dest_real, rel):  # re-check now that the parents exist
        return "would be written outside the destination folder, not extracted"
    try:
        out = open(target, "xb")
    except FileExistsError:
        return "a file with this name already exists in the destination; kept the existing one"
    except (OSError, ValueError) as exc:
        return f"cannot be written ({getattr(exc, 'strerror', None) or exc}) — rename it"

    written = 0
    reason: str | None = None
    try:
        with out, zf.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                written += len(chunk)
                state.total += len(chunk)
                if state.total > limits.max_total_bytes:
                    raise ArchiveTooLarge(_total_too_big(archive_name, state.total, limits), state.total)
                _check_ratio(display, written, info.compress_size, limits)
                _check_ratio(f"the archive {archive_name}", state.total, state.compressed, limits)
                if written > info.file_size:
                    reason = (
                        f"holds more data than its header declares ({_fmt_bytes(info.file_size)}) "
                        f"— the archive is damaged or crafted; re-create it"
                    )
                    break
                if written > limits.max_member_bytes:
                    reason = _member_too_big(written, limits)
                    break
                out.write(chunk)
    except NotImplementedError as exc:
        reason = f"uses an unsupported compression method ({exc}) — re-create the zip with standard compression"
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        reason = f"corrupt data in the archive ({exc}) — re-create the zip and upload again"
    except OSError as exc:
        reason = f"cannot be written ({exc.strerror or exc})"
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if reason is not None:
        target.unlink(missing_ok=True)
    return reason


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
    remedy: str = "add images or remove the folder"


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
            f"{top} is not a folder — pass the folder that holds the class folders (or extract the .zip first)"
        )
    base = _descend(top)
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
        for (cand, _), (digest, problem) in zip(jobs, pool.map(inspect, jobs)):
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


def _inspect_file(path: Path, verify: bool, max_pixels: int | None) -> tuple[str | None, str | None]:
    """(content sha256, None) for a usable image, or (None, reason)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if size == 0:
        return None, f"{path.name} is empty (0 bytes) — re-export or re-download it"
    if verify:
        try:
            open_image(path, max_pixels=max_pixels)
        except ImageError as exc:
            return None, str(exc)
    try:
        return _file_sha256(path), None
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"


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
        raise IngestError(f"cannot list {folder} ({exc.strerror or exc}) — check its permissions") from None
    for entry in entries:
        path = Path(entry.path)
        if entry.name == owners.FILE and entry.is_file(follow_symlinks=False):
            continue  # the workspace's owner record (core.storage.owners), not part of the data
        if entry.is_symlink():
            other.append((path, "symbolic link, not followed (it could point outside the dataset)"))
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


def _descend(top: Path) -> Path:
    """Step through wrapper folders (a lone folder with sub-folders and no images or labels)."""
    current = top
    for _ in range(64):  # a bound, not an expectation: nobody nests wrappers this deep
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
            unusable.append(Skipped(_rel(lf, base), problem or "unreadable label file"))

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
            found.skipped.append(Skipped(
                d.name + "/", f"held-out test folder not used; '{splits['val'].name}/' is the validation set"
            ))
        else:
            found.skipped.append(Skipped(
                d.name + "/", f"not a split folder (expected '{splits['train'].name}/' and '{splits['val'].name}/'); ignored"
            ))
    for f in files:
        found.skipped.append(Skipped(_rel(f, base), "file outside the train/val folders, ignored"))
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
                _rel(f, base), "image outside any class folder — move it into the folder of its class"
            ))
        else:
            found.skipped.append(Skipped(_rel(f, base), _not_image_reason(f.name)))
    for class_dir in dirs:
        label = class_dir.name
        bad_label = labels.label_problem(label)
        if bad_label:
            found.skipped.append(Skipped(_rel(class_dir, base) + "/", f"class folder name {label[:60]!r} "
                                         f"{bad_label} — rename the folder (plain text, one line)"))
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
            sub = here / d
            if sub.is_symlink():
                yield sub, "symbolic link, not followed (it could point outside the dataset)"
            elif reason := _ignored_reason([d]):
                yield sub, reason
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            path = here / f
            if path.is_symlink():
                yield path, "symbolic link, not followed (it could point outside the dataset)"
            elif reason := _ignored_reason([f]):
                yield path, reason
            elif not is_image_name(f):
                yield path, _not_image_reason(f)
            else:
                yield path, None


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
        return None, f"cannot be read ({exc.strerror or exc})"
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
        return None, "empty label file, ignored"
    header = [_normalise_header(h) for h in rows[0]]
    file_col = next((header.index(c) for c in FILENAME_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    if file_col is None or label_col is None:
        return None, (
            f"label file without the expected header: needs a file column ({', '.join(FILENAME_COLUMNS[:5])}) "
            f"and a label column ({', '.join(LABEL_COLUMNS[:3])}); found {', '.join(rows[0]) or 'nothing'}; ignored"
        )
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
    found = _Found(layout="csv", remedy="add images or remove its rows")
    file_splits: dict[Path, str | None] = {path: None for path, _ in tables}
    if len(tables) > 1:
        named = {path: _split_from_name(path.stem) for path, _ in tables}
        if None in named.values() or "train" not in named.values():
            names = ", ".join(p.name for p, _ in tables)
            raise IngestError(
                f"found {len(tables)} label files ({names}); expected one — keep one, or name them "
                f"train.csv and val.csv"
            )
        file_splits = named
    has_val = any(s == "val" for s in file_splits.values()) or any(
        _row_split(row, t) == "val" for _, t in tables for row in t.rows
    )

    basenames: dict[str, list[Path]] | None = None
    listed: dict[str, str] = {}
    for label_path, table in tables:
        where = label_path.name
        for lineno, row in enumerate(table.rows, start=2):
            cell = row[table.file_col].strip() if table.file_col < len(row) else ""
            label = row[table.label_col].strip() if table.label_col < len(row) else ""
            row_name = cell or f"{where} line {lineno}"
            if not cell:
                found.skipped.append(Skipped(row_name, f"{where} line {lineno}: no file name, row ignored"))
                continue
            if not label:
                found.skipped.append(Skipped(cell, f"{where} line {lineno}: empty label — fill it in or remove the row"))
                continue
            bad_label = labels.label_problem(label)
            if bad_label:
                found.skipped.append(Skipped(cell, f"{where} line {lineno}: label {label[:60]!r} {bad_label} — "
                                                   f"labels must be plain text on one line; fix the cell"))
                continue
            split = _row_split(row, table) or file_splits[label_path]
            if split == "test":
                if has_val:
                    found.skipped.append(Skipped(cell, f"{where} line {lineno}: test split not used (a val split exists)"))
                    continue
                split = "val"
            rel_name = cell.replace("\\", "/")
            # Refused before anything is looked up, so the answer never depends on files outside.
            try:
                resolved = paths.contained(base_real, rel_name)
            except paths.OutsideError as exc:
                found.skipped.append(Skipped(
                    cell, f"{where} line {lineno}: path leaves the dataset folder ({exc})"
                ))
                continue
            if not resolved.is_file() and "/" not in rel_name:
                # Many exports list bare file names while the images sit in a sub-folder.
                if basenames is None:
                    basenames = _image_basenames(base)
                matches = basenames.get(rel_name, [])
                if len(matches) == 1:
                    resolved = matches[0].resolve()
            if not resolved.is_file():
                found.skipped.append(Skipped(
                    cell, f"{where} line {lineno}: file not found — check the name or add the file"
                ))
                continue
            rel = resolved.relative_to(base_real).as_posix()
            ignored = _ignored_reason(rel.split("/"))
            if ignored:
                found.skipped.append(Skipped(rel, f"{where} line {lineno}: {ignored}"))
                continue
            if not is_image_name(rel):
                found.skipped.append(Skipped(rel, f"{where} line {lineno}: {_not_image_reason(rel)}"))
                continue
            if rel in listed:
                found.skipped.append(Skipped(rel, f"{where} line {lineno}: listed again (first on {listed[rel]}); kept the first"))
                continue
            listed[rel] = f"{where} line {lineno}"
            found.candidates.append(_Candidate(rel, label, split))
            found.declared_classes.add(label)

    label_names = ", ".join(p.name for p, _ in tables)
    for path, reason in _walk(base):
        if reason is None:
            rel = path.resolve().relative_to(base_real).as_posix()
            if rel not in listed:
                found.skipped.append(Skipped(rel, f"image not listed in {label_names}, ignored"))
    return found


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
            raise IngestError(
                f"found {found.loose_images} image(s) in {where} but no class folders — put each "
                f"class's images in its own folder (e.g. cats/, dogs/) or add a labels.csv"
            )
        if skipped and found.candidates:
            examples = "; ".join(f"'{s.path}': {s.reason}" for s in skipped[:2])
            raise IngestError(
                f"no readable images in {where}: all {len(found.candidates)} image files were "
                f"skipped (e.g. {examples}) — replace the damaged files"
            )
        raise IngestError(
            f"no images found in {where} — expected one folder per class (e.g. cats/, dogs/) "
            f"holding {_supported_list()} files, train/ and val/ folders, or a labels.csv"
        )
    counts = Counter(item.label for item in items)
    classes = sorted(found.declared_classes | set(counts))
    if len(classes) < 2:
        only = classes[0]
        raise IngestError(
            f"found 1 class '{only}'; classification needs at least 2 — add a folder per class"
            if found.layout != "csv"
            else f"found 1 class '{only}'; classification needs at least 2 — label images with at least two classes"
        )
    small = [c for c in classes if counts.get(c, 0) < MIN_IMAGES_PER_CLASS]
    if small:
        parts = [
            f"class '{c}' has {counts.get(c, 0)} image{'' if counts.get(c, 0) == 1 else 's'}"
            for c in small
        ]
        raise IngestError(
            f"{'; '.join(parts)}; each class needs at least {MIN_IMAGES_PER_CLASS} — {found.remedy}"
        )


# --------------------------------------------------------------------------------------------
# Combining uploads


def merge_into(dest_root: Path, src_root: Path) -> None:
    """Append the images of another upload's class folders into an existing dataset folder."""
    dest_root, src_root = Path(dest_root), Path(src_root)
    if not src_root.is_dir():
        raise IngestError(f"{src_root} is not a folder — extract the second upload first")
    src_base = _descend(src_root)
    src_layout, src_groups = _merge_groups(src_base)
    if src_layout == "csv":
        raise IngestError(
            f"{src_root} is labelled by a CSV file; merging CSV-labelled uploads is not supported "
            f"— combine the CSV files into one and upload everything together, or use class folders"
        )
    if not src_groups:
        raise IngestError(
            f"{src_root} has no class folders to merge — put each class's images in its own folder "
            f"(e.g. cats/, dogs/)"
        )

    dest_root.mkdir(parents=True, exist_ok=True)
    dest_real = dest_root.resolve()
    dest_dirs, dest_files, _ = _visible(dest_root)
    if not dest_dirs and not dest_files:
        dest_base, dest_layout = dest_root, src_layout
        dest_groups: dict[str | None, Path] = {}
    else:
        dest_base = _descend(dest_root)
        dest_layout, dest_groups = _merge_groups(dest_base)
    if dest_layout != src_layout:
        raise IngestError(
            f"cannot merge: the dataset uses {dest_layout} but the new upload uses {src_layout} "
            f"— upload it with the same layout"
        )

    for role, src_dir in src_groups.items():
        target_dir = dest_groups.get(role) or (dest_base / src_dir.name if role else dest_base)
        class_dirs, _, _ = _visible(src_dir)
        existing = {}
        if target_dir.is_dir():
            existing = {d.name.casefold(): d for d in _visible(target_dir)[0]}
        for class_dir in class_dirs:
            # Match class folders case-insensitively so 'Cats' and 'cats' do not become two classes.
            dest_class = existing.get(class_dir.name.casefold(), target_dir / class_dir.name)
            for path, reason in _walk(class_dir):
                if reason is None:
                    _copy_without_clobbering(path, dest_class / path.relative_to(class_dir), dest_real)


def _merge_groups(base: Path) -> tuple[str, dict[str | None, Path]]:
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
        raise IngestError(f"refusing to write {target} outside {dest_real} — check for symbolic links")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)


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
