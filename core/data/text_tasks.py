"""Text tables with several label columns (multi-task learning) and unlabelled text (continued pretraining).

Built on core.data.text (its CSV/TSV/JSONL reader, encoding repair and column detection); torch-free.
"""
from __future__ import annotations

import csv
import statistics
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from core.data.labels import label_problem
from core.data.text import (IMAGE_EXT, SURROGATE, TABLE_SUFFIXES, TEXT_NAMES, decode, is_stored, looks_like_text,
                            make_sample, read_records, read_stored, repair, table_passes)
from core.i18n import _

# --- several label columns (multi-task learning) and unlabelled text (continued pretraining) -----------------

NOT_TASKS = ("id", "row", "split", "subset", "fold", "source", "url")  # columns that are never a task by default


@dataclass
class TaskTextTable:
    """Texts with one label per task column ("" where a row has none for that task)."""

    texts: list[str]
    labels: dict[str, list[str]]                                  # task -> one label per text, "" = none
    text_column: str = "text"
    encoding_problems: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    @property
    def tasks(self) -> dict[str, list[str]]:
        """Task -> its sorted class names."""
        return {t: sorted({v for v in vals if v}) for t, vals in self.labels.items()}


def text_column_of(columns: list[str], records: list[dict]) -> str:
    """The free-text column: a named one (text, sentence, review...), else the longest varied non-path column."""
    lower = {c.lower(): c for c in columns}
    named = next((lower[n] for n in TEXT_NAMES if n in lower), None)
    if named:
        return named
    best, best_len = None, 15.0  # shorter on average than a short sentence: a label or an id, not free text
    for c in columns:
        filled = [r.get(c, "") for r in records[:2000] if r.get(c, "").strip()]
        if not filled or sum(bool(IMAGE_EXT.search(v.strip())) for v in filled) >= 0.5 * len(filled):
            continue
        mean = statistics.fmean(len(v) for v in filled)
        if mean >= best_len and len(set(filled)) >= 0.5 * len(filled):
            best, best_len = c, mean
    if best is None:
        raise ValueError(_("no column of free text among {columns}; name it text (or sentence, review, comment)")
                         .format(columns=", ".join(columns) or "none"))
    return best


def _table_records(path: Path) -> tuple[list[str], list[tuple[str, dict]]]:
    if path.suffix.lower() not in TABLE_SUFFIXES or not path.is_file():
        raise ValueError(_("{name}: expected a .csv, .tsv or .jsonl table with a text column and one column per "
                           "task").format(name=path.name))
    return read_records(path, path.read_bytes())


def read_tasks(path: str | Path, tasks: list[str] | None = None, text_column: str | None = None) -> TaskTextTable:
    """A table of texts and several label columns (``text,topic,sentiment``); ``tasks``: the label columns to
    keep (default: every column but the text and id/split ones). A row with no label for any task is left out."""
    path = Path(path)
    columns, records = _table_records(path)
    text_col = text_column or text_column_of(columns, [r for _, r in records])
    candidates = [c for c in columns if c != text_col and c.lower() not in NOT_TASKS]
    tasks = list(tasks) if tasks else candidates
    unknown = [t for t in tasks if t not in columns or t == text_col]
    if unknown or not tasks:
        raise ValueError(_("task column(s) {unknown} not in {name}; its label columns are {columns}").format(
            unknown=", ".join(unknown) or "(none)", name=path.name, columns=", ".join(candidates) or "(none)"))
    if len(set(tasks)) != len(tasks):
        raise ValueError(_("each task may be named once; got {tasks}").format(tasks=", ".join(tasks)))
    table = TaskTextTable([], {t: [] for t in tasks}, text_col)
    for where, rec in records:
        values = {t: repair(rec.get(t, "") or "", where, []).strip() for t in tasks}
        bad = next(((t, v, label_problem(v)) for t, v in values.items() if v and label_problem(v)), None)
        if bad:
            table.skipped.append({"row": where, "message": f"label {bad[1][:60]!r} of task {bad[0]!r} {bad[2]}; "
                                                            f"row left out"})
            continue
        if not any(values.values()):
            table.skipped.append({"row": where, "message": "no label for any task; row left out"})
            continue
        table.texts.append(repair(rec.get(text_col, "") or "", where, table.encoding_problems))
        for t in tasks:
            table.labels[t].append(values[t])
    for t, classes in table.tasks.items():
        if len(classes) < 2:
            raise ValueError(_("task {task!r} has {n} class(es) ({classes}); each task needs at least 2 — fill in "
                               "its column or leave the task out").format(task=t, n=len(classes),
                                                                          classes=", ".join(classes)))
    return table


def read_unlabelled(path: str | Path) -> list[str]:
    """Every non-empty text of a source for self-supervised pretraining: a .txt file (one text per line), a table
    (its text column; labels, if any, are ignored), a folder or .zip of .txt files (one text per file)."""
    path = Path(path)
    if path.is_dir() and is_stored(path):
        texts = [r.text for r in read_stored(path).rows]
    elif path.is_dir():
        texts = [decode(p.read_bytes()) for p in sorted(path.rglob("*.txt")) if p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    elif path.suffix.lower() == ".zip" and path.is_file():
        with zipfile.ZipFile(path) as z:
            texts = [decode(z.read(n)) for n in sorted(z.namelist()) if n.lower().endswith(".txt")
                     and not any(p.startswith(".") or p == "__MACOSX" for p in Path(n).parts)]
    elif path.suffix.lower() == ".txt" and path.is_file():
        texts = decode(path.read_bytes()).splitlines()
    elif path.suffix.lower() in TABLE_SUFFIXES and path.is_file():
        columns, records = read_records(path, path.read_bytes())
        col = text_column_of(columns, [r for _, r in records])
        texts = [r.get(col, "") for _, r in records]
    else:
        raise ValueError(_("{name}: expected a .txt file (one text per line), a .csv/.tsv/.jsonl table with a text "
                           "column, or a folder or .zip of .txt files").format(name=path.name))
    texts = [SURROGATE.sub("\ufffd", t).strip() for t in texts]
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError(_("{name} holds no text; pretraining needs unlabelled texts (labels are not needed)")
                         .format(name=path.name))
    return texts


def looks_like_corpus(path: str | Path) -> bool:
    """Whether ``path`` holds text to pretrain on (a .txt file, a table with a text column, .txt files)."""
    path = Path(path)
    if path.suffix.lower() == ".txt" and path.is_file():
        return True
    if looks_like_text(path):
        return True
    if path.is_dir() and not path.suffix:
        files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
        return bool(files) and sum(p.suffix.lower() == ".txt" for p in files) >= 0.9 * len(files)
    return table_passes(path, text_column_of)


def make_multitask_sample(dest: str | Path, per_class: int = 24, seed: int = 0) -> Path:
    """A CSV of ``text,topic,sentiment``: make_sample's topic sentences, each opened by a happy or a sad word."""
    import random

    rng = random.Random(seed + 1)
    src = make_sample(Path(dest).with_suffix(".topics.csv"), per_class, seed=seed)
    with src.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    src.unlink()
    openers = {"positive": ("Happily,", "Luckily,", "Wonderful:"), "negative": ("Sadly,", "Sigh,", "Awful:")}
    dest = Path(dest)
    with dest.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "topic", "sentiment"])
        for r in rows:
            mood = rng.choice(sorted(openers))
            text = r["text"] if r["text"].startswith("I ") else r["text"][0].lower() + r["text"][1:]
            w.writerow([f"{rng.choice(openers[mood])} {text}", r["label"], mood])
    return dest
