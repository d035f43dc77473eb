"""Where Transfer Studio keeps datasets, caches and runs on disk."""
from __future__ import annotations

import os
from pathlib import Path

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
