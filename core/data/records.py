"""The records of an upload (items, skipped files, the dataset index), its limits, and helpers shared by
archive extraction, layout detection and the health report."""
from __future__ import annotations

import functools
import hashlib
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence, Union


from core.data.imageio import IMAGE_EXTENSIONS
from core.data.message import Message, shown, stored
from core.i18n import N_, _

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
    """An upload that cannot become a dataset; the message says what was expected and what to do.

    str(error) is in the language of the thread that raised it; ``message`` keeps the English Message."""

    def __init__(self, message: str):
        super().__init__(shown(message))
        self.message = message


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
    """A file or archive member left out, with the reason a person can act on (English; a Message when it
    was made here, so ``shown()`` gives it in the reader's language)."""

    path: str
    reason: str

    def shown(self) -> str:
        """The reason in the current language."""
        return shown(self.reason)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON: the English reason, and its msgid and values where known."""
        d = {"path": self.path, "reason": str(self.reason)}
        if isinstance(self.reason, Message):
            d["message"] = self.reason.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Skipped":
        """Inverse of to_dict (records without a message keep their English reason)."""
        return cls(path=str(data["path"]), reason=stored(str(data["reason"]), data.get("message")))


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
        return Message(N_("macOS archive metadata (__MACOSX), ignored"))
    last = parts[-1]
    if last.startswith("._"):
        return Message(N_("macOS resource-fork file (._*), ignored"))
    if last.lower() in SYSTEM_FILE_NAMES:
        return Message(N_("system file ({name}), ignored"), name=last)
    if any(p.startswith(".") for p in parts):
        return Message(N_("hidden file or folder, ignored"))
    return None


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _supported_list() -> str:
    return ", ".join(sorted(IMAGE_EXTENSIONS))


def _not_image_reason(name: str) -> str:
    ext = _suffix(name)
    if not ext:
        return Message(N_("not an image (no extension); supported types are {types}"), types=_supported_list())
    return Message(N_("not an image ({ext}); supported types are {types}"), ext=ext, types=_supported_list())


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
        raise ValueError(_("{env} must be a whole number of threads (1-32), got {value}").format(
            env=WORKERS_ENV, value=repr(raw))) from None
    return max(1, min(wanted, 32, os.cpu_count() or 1))


@functools.lru_cache(maxsize=262_144)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_sha256(path: Path) -> str:
    # Keyed on size and mtime so that scan, health report and leakage checks hash each file once.
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)
