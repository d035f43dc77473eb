"""Paths named by user data (a CSV row, an archive member) stay inside the folder they belong to.

One rule for every reader: ``contained(base, name)`` refuses a name before anything on disk is
looked at, so whether a file outside the folder exists never changes an answer (no oracle).
"""
from __future__ import annotations

import re
from pathlib import Path

_DRIVE = re.compile(r"^[A-Za-z]:")


class OutsideError(ValueError):
    """A user-supplied path that would leave its folder; ``kind`` names the rule it broke
    ("empty", "nul", "absolute", "parent", "link")."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def relative_parts(name: str) -> list[str]:
    """The components of a relative path written by a user, or OutsideError (no disk access).

    Refused: empty names, NUL bytes, absolute paths (``/x``, ``C:\\x``, ``\\\\server\\x``) and any
    ``..`` part. Backslashes count as separators, since tools on Windows write them.
    """
    if not isinstance(name, str) or not name.strip():
        raise OutsideError("empty path — name a file inside the folder", "empty")
    if "\x00" in name:
        raise OutsideError(f"path {name!r} contains a NUL byte — remove it", "nul")
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise OutsideError(f"absolute path {name!r} — use a path relative to the folder", "absolute")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OutsideError(f"path {name!r} goes up with '..' — use a path inside the folder", "parent")
    if not parts:
        raise OutsideError(f"path {name!r} names the folder itself, not a file in it", "empty")
    return parts


def contained(base: str | Path, name: str) -> Path:
    """``base / name`` with every link resolved, or OutsideError when ``name`` leaves ``base``.

    The rules of relative_parts, then: the resolved target (through symbolic links, existing or
    not) must lie inside ``base``.
    """
    parts = relative_parts(name)
    root = Path(base).resolve()
    try:
        target = root.joinpath(*parts).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        raise OutsideError(f"path {name!r} cannot be resolved (a symbolic link loop?)", "link") from None
    if not target.is_relative_to(root):
        raise OutsideError(f"path {name!r} leads outside the folder through a symbolic link", "link")
    return target


def within(path: str | Path, base: str | Path) -> bool:
    """Whether ``path`` (a path this program built), with every link resolved, lies inside ``base``."""
    try:
        return Path(path).resolve().is_relative_to(Path(base).resolve())
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False


def is_contained(base: str | Path, name: str) -> bool:
    """Whether contained(base, name) accepts the name."""
    try:
        contained(base, name)
        return True
    except OutsideError:
        return False
