"""Dataset versions: review decisions (keep, relabel, remove) make a new dataset folder; nothing is edited in place.

A dataset ``cats`` is version 1; applying decisions writes ``cats@v2``, then ``cats@v3``, ... each an
ordinary dataset folder (so every page, the trainer and the CLI use it as they use any other), with:

- its image files hard-linked to the parent's where the file system allows (else copied), so a version
  costs almost no disk and the parent's bytes are never opened for writing;
- a hidden ``.version.json`` edit log: parent, base, number, time, each decision, the resulting counts;
- the parent's owner record, so a version belongs to whoever owned the dataset.

The current version is the highest number: a version is never changed after it is written. Restoring an
older one writes a new version equal to it (its log says ``restored_from``), so history only grows and a
run that trained on ``cats@v3`` (RunConfig.data, RunConfig.dataset, the start event's dataset_hash)
still finds exactly those files. Torch-free.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core.data import edits, ingest, labels
from core.storage import owners, paths
from core.i18n import _

LOG = ".version.json"  # hidden: the scanner skips it, and it travels with its folder
ACTIONS = ("keep", "relabel", "remove")
_VERSION = re.compile(r"^(?P<base>.+)@v(?P<n>\d+)$")


@dataclass(frozen=True)
class Decision:
    """What to do with one image: ``path`` relative to the dataset (as the index lists it), an action, a class."""

    path: str
    action: str  # one of ACTIONS
    label: str | None = None  # the new class, for "relabel" only

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return {"path": self.path, "action": self.action, "label": self.label}


def split_name(name: str) -> tuple[str, int]:
    """(base name, version number) of a dataset name: ``cats@v3`` -> ("cats", 3), ``cats`` -> ("cats", 1)."""
    m = _VERSION.match(name)
    return (m["base"], int(m["n"])) if m else (name, 1)


def version_name(base: str, n: int) -> str:
    """The dataset name of version ``n`` of ``base`` (1 is the original upload itself)."""
    return base if n == 1 else f"{base}@v{n}"


def list_versions(name: str) -> list[dict]:
    """Every version of ``name``'s dataset, oldest first: name, number, parent, time, counts of its decisions."""
    base, _ = split_name(name)
    found = []
    for ds in edits.list_datasets():
        b, n = split_name(ds)
        if b != base:
            continue
        log = read_log(ds)
        acts = [d.get("action") for d in log.get("decisions", [])]
        found.append({"name": ds, "number": n, "parent": log.get("parent"), "time": log.get("time"),
                      "restored_from": log.get("restored_from"),
                      "relabelled": acts.count("relabel"), "removed": acts.count("remove")})
    return sorted(found, key=lambda v: v["number"])


def current(name: str) -> str:
    """The current version of ``name``'s dataset: the one with the highest number."""
    return list_versions(name)[-1]["name"]


def read_log(name: str) -> dict:
    """The edit log of a version ({} for an original upload or an unreadable log)."""
    try:
        data = json.loads((edits.dataset_dir(name) / LOG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def parse_decisions(text: str) -> list[Decision]:
    """Decisions from CSV text with the header ``path,action,label`` (label only for relabel)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError(_("the decisions file has no rows; expected a header path,action,label and one row per "
                           "image"))
    missing = {"path", "action"} - set(rows[0])
    if missing:
        raise ValueError(_("the decisions file lacks the column(s) {missing}; expected the header path,action,label "
                           "(got {got})").format(missing=", ".join(sorted(missing)),
                                                 got=", ".join(k for k in rows[0] if k)))
    return [Decision(str(r.get("path") or "").strip(), str(r.get("action") or "").strip().lower(),
                     (r.get("label") or "").strip() or None) for r in rows]


def _checked(decisions: list[Decision], index: ingest.DatasetIndex) -> dict[str, Decision]:
    """Decisions by path, each refused with its reason before anything is written."""
    known = {it.path for it in index.items}
    out: dict[str, Decision] = {}
    for d in decisions:
        rel = "/".join(paths.relative_parts(d.path))  # absolute, '..', NUL: refused without touching the disk
        paths.contained(index.root, rel)  # and no link may lead outside either
        if rel not in known:
            raise ValueError(_("decision for {path}: no such image in the dataset; use the paths that "
                               "`python -m core clean` prints").format(path=repr(d.path)))
        if d.action not in ACTIONS:
            raise ValueError(_("decision for {path}: action {action} is not one of {choices}").format(
                path=repr(d.path), action=repr(d.action), choices=", ".join(ACTIONS)))
        label = d.label
        if d.action == "relabel" and d.label not in index.classes:  # a new class becomes a folder: name rules
            label = edits.check_name(labels.check_label(d.label, _("new label for {path}").format(path=repr(d.path))), "class")
        out[rel] = Decision(rel, d.action, label if d.action == "relabel" else None)
    return out


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)  # shares the bytes; nothing ever opens a dataset image for writing
    except OSError:
        shutil.copy2(src, dest)  # another file system, or links not allowed


def _free(path: Path, taken: set[str]) -> Path:
    """``path``, or ``name_1.ext``, ``name_2.ext``, ... when an image of the target class already has its name."""
    out, n = path, 0
    while out.as_posix() in taken:
        n += 1
        out = path.with_name(f"{path.stem}_{n}{path.suffix}")
    taken.add(out.as_posix())
    return out


def _class_part(layout: str) -> int:
    return 1 if layout == "split-folders" else 0  # train/<class>/... or <class>/...


def _write_tree(index: ingest.DatasetIndex, top: Path, chosen: dict[str, Decision], dest: Path) -> None:
    """Link the kept images into ``dest`` (relabelled ones into their new class), keeping the parent's layout."""
    base = Path(index.root)
    prefix = base.relative_to(top.resolve())  # wrapper folders the scanner stepped through
    if index.layout == "csv":
        _write_csv_tree(index, base, prefix, chosen, dest)
        return
    idx = _class_part(index.layout)
    planned = [(it, chosen.get(it.path)) for it in index.items]
    taken = {it.path for it, d in planned if d is None or d.action == "keep"}
    for it, d in planned:
        if d is not None and d.action == "remove":
            continue
        rel = Path(it.path)
        if d is not None and d.action == "relabel" and d.label != it.label:
            parts = list(rel.parts)
            parts[idx] = d.label
            rel = _free(Path(*parts), taken)
        _link(base / it.path, dest / prefix / rel)


def _write_csv_tree(index, base: Path, prefix: Path, chosen: dict[str, Decision], dest: Path) -> None:
    # The images keep their places; the label files at the top are replaced by one labels.csv of the kept rows.
    rows = [("filename", "label", "split")]
    for it in index.items:
        d = chosen.get(it.path)
        if d is not None and d.action == "remove":
            continue
        _link(base / it.path, dest / prefix / it.path)
        rows.append((it.path, d.label if d is not None and d.action == "relabel" else it.label, it.split or ""))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    (dest / prefix).mkdir(parents=True, exist_ok=True)
    (dest / prefix / "labels.csv").write_text(buf.getvalue(), encoding="utf-8")


def _publish(tmp: Path, base: str, start: int) -> str:
    """Rename the finished folder to the first free version number from ``start`` (atomic: never half a version)."""
    n = start
    while True:
        name = version_name(base, n)
        try:
            os.rename(tmp, edits.root() / name)  # fails if another apply took the number first
            return name
        except OSError:
            if not (edits.root() / name).exists():
                raise
            n += 1


def _new_version(name: str, log: dict, write) -> str:
    """Build a version of ``name``'s dataset with ``write(dest)``, check it scans, log it and publish it."""
    src = edits.dataset_dir(name)
    owner = owners.owner_of(src)  # copied as it is: a version belongs to whoever owns its parent
    base, _number = split_name(name)
    tmp = edits.root() / f".{base}.{secrets.token_hex(4)}.partial"
    tmp.mkdir()
    try:
        write(tmp)
        try:
            index = ingest.scan_folder(tmp)
        except ingest.IngestError as e:
            raise ValueError(_("these decisions would leave a dataset that cannot train: {error}").format(
                error=e)) from None
        log = {**log, "parent": name, "base": base, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "counts": index.counts()}
        (tmp / LOG).write_text(json.dumps(log, ensure_ascii=False, indent=1), encoding="utf-8")
        owners.record(tmp, owner)
        newest = max(v["number"] for v in list_versions(name))
        return _publish(tmp, base, newest + 1)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def apply(name: str, decisions: list[Decision], index: ingest.DatasetIndex | None = None) -> str:
    """Write a new version of dataset ``name`` with ``decisions`` applied; returns the new dataset name.

    The dataset ``name`` itself is left byte for byte as it was. Decisions name images by their path in
    the scanned dataset; one that is outside the dataset, unknown, or has a bad action or label refuses
    the whole set before anything is written. Whether the caller may change the dataset is the caller's
    question (core.app.review checks the owner).
    """
    index = index or edits.scan(name)
    chosen = _checked(decisions, index)
    top = edits.dataset_dir(name)
    log = {"decisions": [d.to_dict() for d in chosen.values()]}
    return _new_version(name, log, lambda dest: _write_tree(index, top, chosen, dest))


def restore(name: str, version: str) -> str:
    """Make ``version`` (an older version of ``name``'s dataset) current by writing a new version equal to it."""
    if split_name(version)[0] != split_name(name)[0] or version not in {v["name"] for v in list_versions(name)}:
        have = ", ".join(v["name"] for v in list_versions(name))
        raise ValueError(_("{version} is not a version of {name} (versions: {have})").format(
            version=repr(version), name=repr(split_name(name)[0]), have=have))
    src = edits.dataset_dir(version)

    def write(dest: Path) -> None:
        for f in sorted(src.rglob("*")):
            rel = f.relative_to(src)
            if f.is_file() and not f.is_symlink() and not any(p.startswith(".") for p in rel.parts):
                _link(f, dest / rel)
    return _new_version(version, {"restored_from": version, "decisions": []}, write)
