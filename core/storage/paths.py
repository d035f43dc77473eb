"""Paths named by user data (a CSV row, an archive member) stay inside the folder they belong to.

One rule for every reader: ``contained(base, name)`` refuses a name before anything on disk is
looked at, so whether a file outside the folder exists never changes an answer (no oracle).
"""
from __future__ import annotations

import re
from pathlib import Path

from core.i18n import N_, _

_DRIVE = re.compile(r"^[A-Za-z]:")


class OutsideError(ValueError):
    """A user-supplied path that would leave its folder; ``kind`` names the rule it broke
    ("empty", "nul", "absolute", "parent", "link"). str(error) is in the raising thread's language; ``msgid`` and
    ``params`` let a stored record keep it in English (core.data.message)."""

    def __init__(self, msgid: str, kind: str, **params):
        super().__init__(_(msgid).format(**params))
        self.kind, self.msgid, self.params = kind, msgid, params


def relative_parts(name: str) -> list[str]:
    """The components of a relative path written by a user, or OutsideError (no disk access).

    Refused: empty names, NUL bytes, absolute paths (``/x``, ``C:\\x``, ``\\\\server\\x``) and any
    ``..`` part. Backslashes count as separators, since tools on Windows write them.
    """
    if not isinstance(name, str) or not name.strip():
        raise OutsideError(N_("empty path — name a file inside the folder"), "empty")
    if "\x00" in name:
        raise OutsideError(N_("path {name} contains a NUL byte — remove it"), "nul", name=repr(name))
    posix = name.replace("\\", "/")
    if posix.startswith("/") or _DRIVE.match(posix):
        raise OutsideError(N_("absolute path {name} — use a path relative to the folder"), "absolute", name=repr(name))
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OutsideError(N_("path {name} goes up with '..' — use a path inside the folder"), "parent",
                           name=repr(name))
    if not parts:
        raise OutsideError(N_("path {name} names the folder itself, not a file in it"), "empty", name=repr(name))
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
        raise OutsideError(N_("path {name} cannot be resolved (a symbolic link loop?)"), "link",
                           name=repr(name)) from None
    if not target.is_relative_to(root):
        raise OutsideError(N_("path {name} leads outside the folder through a symbolic link"), "link",
                           name=repr(name))
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
