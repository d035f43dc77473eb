"""Disk quota per owner: datasets, kept uploads and runs count; a clear message when it is full.

The limit is ``TRANSFER_STUDIO_QUOTA_MB`` megabytes per owner (default 20480, i.e. 20 GiB; ``0`` turns
the quota off). Usage is measured on disk when something is about to be added, so it is right after
any deletion. What counts for an owner is what ``core.storage.owners.visible`` shows them: the
folders recorded with their key (single-user mode, owner None: everything without a record, and
loose files). Shared caches are not counted here; core.storage.cache caps them.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.storage import owners, workspace
from core.i18n import N_, _

QUOTA_ENV = "TRANSFER_STUDIO_QUOTA_MB"
DEFAULT_QUOTA_MB = 20 * 1024
AREAS = ("datasets", "uploads", "runs")


class QuotaExceeded(ValueError):
    """Adding this would take an owner past the quota; the message says used, limit and what to delete."""


def limit_bytes() -> int | None:
    """The quota per owner in bytes, or None when it is turned off (TRANSFER_STUDIO_QUOTA_MB=0)."""
    return workspace.megabytes_env(QUOTA_ENV, DEFAULT_QUOTA_MB, N_("turns the quota off"))


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (or of the file itself); links are not followed."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except OSError:
        return 0
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                else:
                    total += e.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # removed while we looked
    return total


def _mine(path: Path, owner: str | None) -> bool:
    # The same rule as listings (core.storage.owners.visible): what an owner sees is what they pay for.
    return owners.visible(path, owner) if path.is_dir() else owner is None


def usage(owner: str | None = None) -> dict[str, int]:
    """Bytes per area (datasets, uploads, runs) held by ``owner`` (everything when owner is None)."""
    out = {}
    for area in AREAS:
        folder = workspace.sub(area)
        try:
            entries = [folder / name for name in os.listdir(folder)]
        except OSError:
            entries = []
        out[area] = sum(tree_bytes(p) for p in entries if _mine(p, owner))
    return out


def _mb(n: float) -> str:
    return f"{n / 1024**2:,.1f} MB" if n < 1024**3 else f"{n / 1024**3:,.2f} GB"


def room(owner: str | None = None) -> int | None:
    """Bytes ``owner`` may still add, or None without a quota."""
    limit = limit_bytes()
    return None if limit is None else max(0, limit - sum(usage(owner).values()))


def check(owner: str | None = None, incoming: int = 0, what: str | None = None) -> None:
    """QuotaExceeded when ``incoming`` more bytes would take ``owner`` past the quota (``what``: default "this
    upload", in the current language)."""
    limit = limit_bytes()
    if limit is None:
        return
    used = usage(owner)
    if sum(used.values()) + incoming > limit:
        raise QuotaExceeded(message(owner, used, limit, incoming, what or _("this upload")))


def message(owner: str | None, used: dict[str, int], limit: int, incoming: int, what: str) -> str:
    """What the owner uses, the limit, what the addition needs, and what to delete."""
    parts = ", ".join(f"{_(_AREA_NAMES.get(area, area))} {_mb(n)}" for area, n in used.items())
    need = (_("{what} needs {size} more").format(what=what, size=_mb(incoming)) if incoming
            else _("{what} does not fit").format(what=what))
    text = (_("disk quota reached: you use {used} of {limit} ({parts}); {need} — delete datasets (Data page) or "
              "runs (Runs page) you no longer need, or ask the operator to raise {env}") if owner is not None else
            _("disk quota reached: the workspace uses {used} of {limit} ({parts}); {need} — delete datasets (Data "
              "page) or runs (Runs page) you no longer need, or ask the operator to raise {env}"))
    return text.format(used=_mb(sum(used.values())), limit=_mb(limit), parts=parts, need=need, env=QUOTA_ENV)


_AREA_NAMES = {"datasets": N_("datasets"), "uploads": N_("uploads"), "runs": N_("runs")}  # the areas of usage()
