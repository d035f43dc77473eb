"""Where Transfer Studio keeps datasets, caches and runs on disk."""
from __future__ import annotations

import os
from pathlib import Path

from core.i18n import _

_DEFAULT = Path(__file__).resolve().parents[2] / "workspace"


def home() -> Path:
    """The workspace root: $TRANSFER_STUDIO_HOME, else ./workspace next to the code."""
    root = Path(os.environ.get("TRANSFER_STUDIO_HOME") or _DEFAULT)
    root.mkdir(parents=True, exist_ok=True)
    return root


def sub(name: str) -> Path:
    """A sub-folder of the workspace (datasets, cache, runs, uploads), created on demand."""
    p = home() / name
    p.mkdir(parents=True, exist_ok=True)
    return p


def megabytes_env(name: str, default_mb: float, zero_means: str) -> int | None:
    """A size limit read from environment variable ``name`` in megabytes: bytes, or None when set to 0."""
    raw = os.environ.get(name, "").strip()
    try:
        mb = float(raw.replace("_", "")) if raw else default_mb
    except ValueError:
        mb = -1
    if mb < 0:
        raise ValueError(_("{name} must be a number of megabytes (0 {zero_means}), got {value}").format(
            name=name, zero_means=_(zero_means), value=repr(raw)))
    return None if mb == 0 else int(mb * 1024**2)
