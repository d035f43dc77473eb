"""Derived files (decoded-image caches, scan indexes, teacher logits) pruned least-recently-used first.

Everything under ``cache/`` and ``index-cache/`` can be rebuilt from a dataset, so the folders are
held under ``TRANSFER_STUDIO_CACHE_MB`` megabytes together (default 10240; 0 turns pruning off).
A cache file is marked as used (its mtime set to now) whenever it is read, so the oldest mtime is
the least recently used. Files being written (``*.tmp*``) are left alone for a day.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from core.storage import workspace
from core.i18n import N_

CACHE_ENV = "TRANSFER_STUDIO_CACHE_MB"
DEFAULT_CACHE_MB = 10 * 1024
FOLDERS = ("cache", "index-cache")
_WRITING_GRACE_S = 24 * 3600


def limit_bytes() -> int | None:
    """The cache size cap in bytes, or None when pruning is off (TRANSFER_STUDIO_CACHE_MB=0)."""
    return workspace.megabytes_env(CACHE_ENV, DEFAULT_CACHE_MB, N_("turns pruning off"))


def touch(path: str | Path) -> None:
    """Mark a cache file as just used (pruning removes the least recently used first)."""
    try:
        os.utime(path)
    except OSError:
        pass  # pruned or read-only: the next build recreates it


def _entries() -> list[tuple[float, int, Path]]:
    now = time.time()
    out = []
    for name in FOLDERS:
        for e in os.scandir(workspace.sub(name)):
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if not e.is_file(follow_symlinks=False):
                continue
            if ".tmp" in e.name and now - st.st_mtime < _WRITING_GRACE_S:
                continue  # another thread or process is writing it
            out.append((st.st_mtime, st.st_size, Path(e.path)))
    return out


def prune(limit: int | None = None, keep: tuple[str | Path, ...] = ()) -> int:
    """Delete least recently used cache files until they fit ``limit`` (default: the env cap); bytes freed.

    ``keep`` names files that must stay (the one just built, for instance).
    """
    limit = limit_bytes() if limit is None else limit
    if limit is None:
        return 0
    entries = sorted(_entries())
    total = sum(size for _, size, _ in entries)
    kept = {str(Path(k)) for k in keep}
    freed = 0
    for _, size, path in entries:
        if total - freed <= limit:
            break
        if str(path) in kept:
            continue
        try:
            path.unlink()  # a process that has it memory-mapped keeps reading it (POSIX)
            freed += size
        except OSError:
            continue
    return freed
