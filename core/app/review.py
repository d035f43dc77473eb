"""The Review labels page's doorway: find suspects, apply decisions as a new dataset version, list and restore versions.

Every call checks that ``owner`` may use the dataset (another user's is "not found"). Torch stays behind the
late import in ``find``: importing this module is cheap, as pages need.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

from core.app import services
from core.data import versions as dv
from core.data.message import shown
from core.i18n import _


def find(name: str, owner: str | None = None, image_size: int = 0,
         progress: Callable[[int, int], None] | None = None) -> dict:
    """Suspected images of dataset ``name``, most suspicious first, with absolute files for thumbnails; their
    ``reasons`` in the current language."""
    from core.results import label_issues  # torch: only when detection runs

    folder = services.dataset_dir(name, owner)
    report = label_issues.detect(str(folder), image_size=image_size, progress=progress)
    root = Path(report.root)
    suspects = [{**s.to_dict(), "reasons": [shown(r) for r in s.reasons], "file": str(root / s.path),
                 "neighbour_files": [str(root / p) for p in s.neighbours]} for s in report.suspects]
    return {"dataset": name, "classes": report.classes, "suspects": suspects, "summary": report.summary()}


def apply(name: str, decisions: dict[str, tuple[str, str | None]], owner: str | None = None) -> str:
    """Write ``decisions`` ({path: (action, label)}) as a new version of ``name``; returns its dataset name."""
    services.dataset_dir(name, owner)
    chosen = [dv.Decision(p, a, lab) for p, (a, lab) in decisions.items() if a != "keep"]
    if not chosen:
        raise ValueError(_("every decision is 'keep': there is nothing to change, so no new version was written"))
    return dv.apply(name, chosen)


def versions(name: str, owner: str | None = None) -> list[dict]:
    """Versions of ``name``'s dataset that ``owner`` may see, oldest first."""
    services.dataset_dir(name, owner)
    mine = set(services.my_datasets(owner))
    return [v for v in dv.list_versions(name) if v["name"] in mine]


def restore(name: str, version: str, owner: str | None = None) -> str:
    """Make an older version current (a new version equal to it); returns the new dataset name."""
    services.dataset_dir(version, owner)
    return dv.restore(name, version)


def edit_log(name: str, owner: str | None = None) -> dict:
    """The edit log of one version ({} for an original upload)."""
    services.dataset_dir(name, owner)
    return dv.read_log(name)


def decisions_csv(decisions: dict[str, tuple[str, str | None]]) -> str:
    """Decisions as the CSV `python -m core clean --apply` reads (path,action,label)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("path", "action", "label"))
    for path, (action, label) in sorted(decisions.items()):
        w.writerow((path, action, label or ""))
    return buf.getvalue()
