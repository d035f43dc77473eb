"""Text datasets: CSV / TSV / JSONL tables or class folders of .txt files, a health report, a split.

Torch-free, like the rest of core/data. A table either has ``text`` and ``label`` columns, or one free-text
column and one label column that are detected (the longest, most varied string column is the text; a
column with few distinct values is the label). Bytes that are not UTF-8 are reported per row (row numbers
as a spreadsheet shows them: the header is row 1) and replaced by U+FFFD, so one bad row never sinks a file.
"""
from __future__ import annotations

import csv
import io
import json
import re
import statistics
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.data.labels import label_problem
from core.i18n import _, ngettext

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
TEXT_NAMES = ("text", "sentence", "review", "comment", "message", "content", "body", "utterance")
LABEL_NAMES = ("label", "labels", "class", "category", "target", "sentiment", "intent")
IMAGE_EXT = re.compile(r"\.(jpe?g|png|bmp|gif|webp|tiff?|hei[cf]|avif)$", re.IGNORECASE)
SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass
class TextRow:
    """One sample: its text, its label and where it came from (row number or file name)."""

    text: str
    label: str
    where: str


@dataclass
class TextTable:
    """The rows of a text dataset, the columns they came from, and what was wrong on the way in."""

    rows: list[TextRow]
    text_column: str = "text"
    label_column: str = "label"
    encoding_problems: list[dict] = field(default_factory=list)   # {"row": where, "message": ...}
    skipped: list[dict] = field(default_factory=list)             # rows without a usable label

    @property
    def classes(self) -> list[str]:
        """Sorted class names."""
        return sorted({r.label for r in self.rows})


def normalise(text: str) -> str:
    """The form duplicates and leakage are judged by: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def decode(raw: bytes) -> str:
    """The text of a file's bytes as UTF-8 (a leading BOM dropped); each byte that is not UTF-8 kept as a marker
    that ``repair`` reports and replaces."""
    # surrogateescape keeps each undecodable byte as a marker character, so the row holding it can be named
    text = raw.decode("utf-8", errors="surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def repair(value: str, where: str, problems: list[dict]) -> str:
    """``value`` with each byte ``decode`` could not read replaced by U+FFFD; what was replaced is appended to
    ``problems`` as a row ``where`` (unchanged when nothing was)."""
    bad = SURROGATE.findall(value)
    if not bad:
        return value
    shown = " ".join(f"0x{ord(c) - 0xDC00:02X}" for c in bad[:4])
    # n and bytes kept beside the message: a stored dataset's report is shown again in the reader's language
    problems.append({"row": where, "message": encoding_message(len(bad), shown), "n": len(bad), "bytes": shown})
    return SURROGATE.sub("\ufffd", value)


def encoding_message(n: int, shown: str) -> str:
    """What was wrong with one row's bytes and what to do, in the current language."""
    return ngettext(
        "{n} byte that is not UTF-8 ({bytes}); replaced by U+FFFD — save the file as UTF-8 to keep it",
        "{n} bytes that are not UTF-8 ({bytes}); replaced by U+FFFD — save the file as UTF-8 to keep them",
        n).format(n=n, bytes=shown)


def read_records(path: Path, raw: bytes) -> tuple[list[str], list[tuple[str, dict]]]:
    """(column names, [(row number as shown, {column: cell})]) of a CSV, TSV or JSONL file."""
    text = decode(raw)
    if path.suffix.lower() == ".jsonl":
        out, columns = [], []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(_('{file} line {line} is not JSON ({error}); each line of a .jsonl file must be '
                                   'one object such as {example}').format(
                    file=path.name, line=i, error=e.msg, example='{"text": "...", "label": "..."}')) from None
            if not isinstance(rec, dict):
                raise ValueError(_("{file} line {line} is a JSON {kind}, expected an object").format(
                    file=path.name, line=i, kind=type(rec).__name__))
            columns += [k for k in rec if k not in columns]
            out.append((str(i), {k: "" if v is None else str(v) for k, v in rec.items()}))
        return columns, out
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise ValueError(_("{file} is empty; expected a header row such as text,label").format(file=path.name))
    header = [h.strip() for h in header]
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        rows.append((str(reader.line_num), dict(zip(header, values))))
    return header, rows


def detect_columns(columns: list[str], records: list[dict]) -> tuple[str, str]:
    """(text column, label column): named ones first, else the longest varied column and a few-valued one."""
    lower = {c.lower(): c for c in columns}
    text_col = next((lower[n] for n in TEXT_NAMES if n in lower), None)
    label_col = next((lower[n] for n in LABEL_NAMES if n in lower), None)
    if text_col and label_col:
        return text_col, label_col
    sample = records[:2000]
    stats = {}
    for c in columns:
        vals = [r.get(c, "") for r in sample]
        filled = [v for v in vals if v.strip()]
        if not filled:
            continue
        stats[c] = {"mean_len": statistics.fmean(len(v) for v in filled),
                    "distinct": len(set(filled)), "n": len(filled),
                    "paths": sum(bool(IMAGE_EXT.search(v.strip())) for v in filled) / len(filled)}
    if text_col is None:
        free = [c for c, s in stats.items() if c != label_col and s["paths"] < 0.5 and s["mean_len"] >= 15
                and s["distinct"] >= 0.5 * s["n"]]
        text_col = max(free, key=lambda c: stats[c]["mean_len"], default=None)
    if label_col is None and text_col is not None:
        few = [c for c, s in stats.items() if c != text_col and 2 <= s["distinct"] <= max(2, min(200, s["n"] // 2))]
        label_col = min(few, key=lambda c: stats[c]["distinct"], default=None)
    if text_col is None or label_col is None:
        raise ValueError(_("could not tell the text and the label columns apart among {columns}; name them text and "
                           "label (one free-text column and one column with a few distinct values also works)").format(
            columns=", ".join(columns) or _("none")))
    return text_col, label_col


def _from_records(columns, records, text_col=None, label_col=None) -> TextTable:
    plain = [r for _, r in records]
    if text_col is None or label_col is None:
        dt, dl = detect_columns(columns, plain)
        text_col, label_col = text_col or dt, label_col or dl
    for c in (text_col, label_col):
        if c not in columns:
            raise ValueError(_("column '{column}' is not in the file; its columns are {columns}").format(
                column=c, columns=", ".join(columns)))
    table = TextTable([], text_col, label_col)
    for where, rec in records:
        text = repair(rec.get(text_col, "") or "", where, table.encoding_problems)
        label = repair(rec.get(label_col, "") or "", where, []).strip()
        problem = label_problem(label)
        if problem:
            table.skipped.append({"row": where, "message": _("label '{label}' {problem}; row left out").format(
                label=label, problem=problem)})
            continue
        table.rows.append(TextRow(text, label, where))
    return table


def _from_folders(files: dict[str, bytes]) -> TextTable:
    """Class folders of .txt files: ``{"class/name.txt": bytes}`` (any leading common folder ignored)."""
    table = TextTable([])
    for name in sorted(files):
        parts = Path(name).parts
        if len(parts) < 2 or any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        text = repair(decode(files[name]), name, table.encoding_problems)
        table.rows.append(TextRow(text.strip(), parts[-2], name))
    return table


def read(path: str | Path, text_column: str | None = None, label_column: str | None = None) -> TextTable:
    """Read a CSV/TSV/JSONL table, a .zip of class folders of .txt files, or such a folder."""
    path = Path(path)
    if path.is_dir() and is_stored(path):
        table = read_stored(path)
    elif path.is_dir():
        files = {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*.txt") if p.is_file()}
        table = _from_folders(files)
    elif path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as z:
            files = {n: z.read(n) for n in z.namelist() if n.lower().endswith(".txt") and not n.endswith("/")}
        table = _from_folders(files)
    elif path.suffix.lower() in TABLE_SUFFIXES:
        columns, records = read_records(path, path.read_bytes())
        table = _from_records(columns, records, text_column, label_column)
    else:
        raise ValueError(_("{file}: expected a .csv, .tsv, .jsonl, a .zip of class folders of .txt files, or such a "
                           "folder").format(file=path.name))
    if not table.rows:
        raise ValueError(_("{file} holds no labelled text; expected rows of text,label or class folders of .txt "
                           "files").format(file=path.name))
    return table


def looks_like_text(path: str | Path) -> bool:
    """True when ``path`` is a table whose columns hold free text and labels (not image file names)."""
    path = Path(path)
    if path.is_dir() and is_stored(path):
        return True
    if path.is_dir() or path.suffix.lower() == ".zip" and path.is_file():
        return _mostly_txt(path)
    return table_passes(path, detect_columns)


def table_passes(path: Path, check) -> bool:
    """Whether ``path`` is a table file whose first megabyte parses and whose columns ``check(columns, rows)``
    accepts (it raises ValueError when not)."""
    if path.suffix.lower() not in TABLE_SUFFIXES or not path.is_file():
        return False
    try:
        columns, records = read_records(path, path.read_bytes()[:1_000_000])
        check(columns, [r for _, r in records])
    except (ValueError, csv.Error):
        return False
    return True


def _mostly_txt(path: Path) -> bool:
    """A folder or zip whose files (hidden ones aside) are .txt files inside class folders."""
    if path.is_dir():
        names = [str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()]
    else:
        try:
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if not n.endswith("/")]
        except zipfile.BadZipFile:
            return False
    return _txt_names(names)


def _txt_names(names: list[str]) -> bool:
    names = [n for n in names if not any(p.startswith(".") or p == "__MACOSX" for p in Path(n).parts)]
    txt = [n for n in names if n.lower().endswith(".txt") and len(Path(n).parts) >= 2]
    return bool(txt) and len(txt) >= 0.9 * len(names)


def zip_holds_text(fileobj) -> bool:
    """Whether an open .zip (an upload, read from its directory only) holds class folders of .txt files."""
    try:
        fileobj.seek(0)
        with zipfile.ZipFile(fileobj) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    finally:
        fileobj.seek(0)
    return _txt_names(names)


# --- split -------------------------------------------------------------------------------------------

@dataclass
class TextSplit:
    """Train and validation rows as (text, class index), and the class names."""

    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]

    def to_dict(self) -> dict:
        """JSON-friendly form (the run's split.json)."""
        return {"classes": self.classes, "train": self.train, "val": self.val}

    @classmethod
    def from_dict(cls, d: dict) -> "TextSplit":
        """Back from ``to_dict``."""
        return cls(list(d["classes"]), [tuple(r) for r in d["train"]], [tuple(r) for r in d["val"]])


def split(table: TextTable, val_fraction: float, seed: int) -> TextSplit:
    """A stratified random split, by the image rules: rows sorted first, so the seed alone decides it."""
    from sklearn.model_selection import train_test_split

    classes = table.classes
    counts = Counter(r.label for r in table.rows)
    thin = sorted(c for c, n in counts.items() if n < 2)
    if thin:
        raise ValueError(_("class(es) {classes} have 1 text; each class needs at least 2 — add texts or remove "
                           "those rows").format(classes=", ".join(map(repr, thin))))
    idx = {c: i for i, c in enumerate(classes)}
    rows = sorted((r.text, idx[r.label]) for r in table.rows)
    n_val = max(len(classes), int(round(len(rows) * val_fraction)))
    if len(rows) - n_val < len(classes):
        raise ValueError(_("{n} texts are too few to hold out {n_val} for validation and still train on every one "
                           "of the {classes} classes; add texts or lower val_fraction").format(
            n=len(rows), n_val=n_val, classes=len(classes)))
    tr, va = train_test_split(rows, test_size=n_val, random_state=seed, stratify=[y for _, y in rows])
    return TextSplit(classes, list(tr), list(va))


# --- health ------------------------------------------------------------------------------------------

def _words(text: str) -> int:
    return len(text.split())


def _summary(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "median": 0, "p95": 0, "max": 0, "mean": 0.0}
    v = sorted(values)
    return {"min": v[0], "median": v[len(v) // 2], "p95": v[min(len(v) - 1, int(0.95 * len(v)))],
            "max": v[-1], "mean": round(statistics.fmean(v), 1)}


def health(table: TextTable, val_fraction: float = 0.2, seed: int = 0,
           count_tokens: Callable[[str], int] | None = None, max_length: int | None = None) -> dict:
    """Counts per class, lengths, empty and duplicate rows, train/validation leakage and encoding problems.

    ``count_tokens`` measures length in the encoder's tokens (whitespace words when None); with ``max_length``
    the report also says how many texts will be cut."""
    count = count_tokens or _words
    counts = Counter(r.label for r in table.rows)
    empty = [r.where for r in table.rows if not r.text.strip()]
    groups: dict[str, list[TextRow]] = {}
    for r in table.rows:
        if r.text.strip():
            groups.setdefault(normalise(r.text), []).append(r)
    dupes = [g for g in groups.values() if len(g) > 1]
    conflicts = [g for g in dupes if len({r.label for r in g}) > 1]
    tokens = [count(r.text) for r in table.rows]
    report = {
        "n": len(table.rows), "classes": dict(sorted(counts.items())),
        "columns": {"text": table.text_column, "label": table.label_column},
        "chars": _summary([len(r.text) for r in table.rows]),
        "tokens": _summary(tokens), "token_unit": "tokens" if count_tokens else "words",
        "empty_rows": empty,
        "duplicates": [{"rows": [r.where for r in g], "text": g[0].text[:120],
                        "labels": sorted({r.label for r in g})} for g in dupes],
        "conflicting_duplicates": len(conflicts),
        "encoding_problems": table.encoding_problems, "skipped": table.skipped,
        "imbalance": round(max(counts.values()) / max(min(counts.values()), 1), 2) if counts else 0.0,
    }
    report["lengths"] = tokens  # per row, in the order of table.rows: the length chart's data
    if max_length:
        report["truncated"] = sum(t > max_length for t in tokens)
    report["leakage"] = _leakage(table, val_fraction, seed)
    report["warnings"] = _warnings(report)
    return report


def _leakage(table: TextTable, val_fraction: float, seed: int) -> dict:
    """Validation texts whose normalised form also sits in training: they inflate validation accuracy."""
    try:
        s = split(table, val_fraction, seed)
    except ValueError as e:
        return {"checked": False, "reason": str(e), "n": 0, "examples": []}
    seen = {normalise(t) for t, _ in s.train}
    leaked = [t for t, _ in s.val if normalise(t) in seen]
    return {"checked": True, "n": len(leaked), "n_val": len(s.val), "examples": [t[:120] for t in leaked[:5]]}


def _warnings(r: dict) -> list[str]:
    """The report's findings as sentences that say what to do (in the current language)."""
    out = []
    thin = [c for c, n in r["classes"].items() if n < 5]
    if thin:
        out.append(_("class(es) {classes} have fewer than 5 texts; add examples for a reliable model").format(
            classes=", ".join(thin)))
    if r["empty_rows"]:
        out.append(_("{n} empty text(s) (rows {rows}); remove them").format(
            n=len(r["empty_rows"]), rows=", ".join(r["empty_rows"][:5])))
    if r["duplicates"]:
        if r["conflicting_duplicates"]:
            out.append(_("{n} text(s) appear more than once, {conflicting} with different labels — decide on one "
                         "label").format(n=len(r["duplicates"]), conflicting=r["conflicting_duplicates"]))
        else:
            out.append(_("{n} text(s) appear more than once; consider removing the copies").format(
                n=len(r["duplicates"])))
    if r["leakage"].get("n"):
        out.append(_("{n} validation text(s) also appear in training, so validation accuracy will look better than "
                     "it is; remove the duplicates").format(n=r["leakage"]["n"]))
    if r["encoding_problems"]:
        rows = ", ".join(p["row"] for p in r["encoding_problems"][:5])
        out.append(_("{n} row(s) are not valid UTF-8 (rows {rows}); save the file as UTF-8").format(
            n=len(r["encoding_problems"]), rows=rows))
    if r.get("truncated"):
        out.append(_("{n} text(s) are longer than max_length and will be cut; raise max_length to keep their "
                     "ends").format(n=r["truncated"]))
    if r["imbalance"] >= 10:
        out.append(_("the largest class has {ratio}x the texts of the smallest; consider class_weights").format(
            ratio=r["imbalance"]))
    return out


# --- a text dataset made offline: topic sentences whose keywords come from two disjoint word lists -----------

TOPIC_WORDS = {  # (words for training, synonyms held out for testing transfer)
    "food": (("pizza", "pasta", "soup", "salad", "bread", "cheese"),
             ("sushi", "burger", "noodles", "pancakes", "curry", "steak")),
    "sports": (("football", "tennis", "basketball", "golf", "hockey", "swimming"),
               ("soccer", "baseball", "volleyball", "rugby", "cricket", "boxing")),
    "weather": (("rain", "snow", "storm", "fog", "wind", "thunder"),
                ("hail", "drizzle", "blizzard", "sleet", "hurricane", "heatwave")),
    "technology": (("laptop", "smartphone", "software", "computer", "tablet", "printer"),
                   ("keyboard", "router", "server", "processor", "website", "app")),
}
TEMPLATES = ("We talked about the {w} all evening.", "Have you heard the news about the {w}?",
             "My friend keeps mentioning the {w}.", "The article was mostly about the {w}.",
             "There was a long discussion on the {w} today.", "I read a report about the {w} this morning.",
             "Everyone at work had an opinion on the {w}.", "The podcast spent an hour on the {w}.")


def make_sample(dest: str | Path, per_class: int = 24, held_out: bool = False, seed: int = 0) -> Path:
    """A CSV of ``text,label`` topic sentences (4 classes); ``held_out`` uses synonyms never seen in training."""
    import random

    rng = random.Random(seed)
    rows = []
    for label, (seen, unseen) in TOPIC_WORDS.items():
        pairs = [(t, w) for t in TEMPLATES for w in (unseen if held_out else seen)]
        rng.shuffle(pairs)
        rows += [(t.format(w=w), label) for t, w in pairs[:per_class]]
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return dest


# --- a text dataset in the workspace: a folder holding one normalised table ---------------------------------
# <datasets>/<name>/text.csv has the columns text,label,row (UTF-8; a byte that was not UTF-8 is U+FFFD and row
# is where the text sat in the upload), text.json what the upload was and what was wrong on the way in, so the
# health report still names the rows of the user's own file. Image code never sees a .csv of file names here.
STORED, META = "text.csv", "text.json"


def is_stored(folder: str | Path) -> bool:
    """Whether ``folder`` is a text dataset of the workspace (it holds text.csv)."""
    return (Path(folder) / STORED).is_file()


def read_stored(folder: Path) -> TextTable:
    """The table a text dataset folder of the workspace holds (written by ``save``); rows without a label left
    out."""
    with (folder / STORED).open(newline="", encoding="utf-8") as f:
        rows = [TextRow(r.get("text") or "", (r.get("label") or "").strip(), r.get("row") or str(i))
                for i, r in enumerate(csv.DictReader(f), start=2)]
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    columns = meta.get("columns") or ["text", "label"]
    return TextTable([r for r in rows if r.label], columns[0], columns[1],
                     list(meta.get("encoding_problems") or []), list(meta.get("skipped") or []))


def save(table: TextTable, folder: str | Path, source: str = "") -> Path:
    """Write ``table`` as a stored text dataset in ``folder`` (made if missing); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / STORED).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "row"])
        w.writerows((r.text, r.label, r.where) for r in table.rows)
    meta = {"source": source, "columns": [table.text_column, table.label_column], "n": len(table.rows),
            "encoding_problems": table.encoding_problems, "skipped": table.skipped}
    (folder / META).write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    return folder


def import_table(src: str | Path, name: str, owner: str | None = None, source: str = "") -> tuple[str, TextTable]:
    """Read a text upload (table, .zip or folder) and store it as the new dataset ``name``; (name, table).

    Written beside the datasets under a hidden name first, so a half-written dataset is never listed."""
    import secrets

    from core.data import edits
    from core.storage import owners

    table = read(src)
    if len(table.classes) < 2:
        raise ValueError(_("{file} holds one class only ({label}); a classifier needs at least 2 classes — add "
                           "rows with other labels").format(file=source or Path(src).name,
                                                            label=table.classes[0]))
    name = edits.check_name(name, "dataset")
    dest = edits.root() / name
    if dest.exists():
        raise ValueError(_("dataset '{name}' already exists; choose another name").format(name=name))
    tmp = edits.root() / f".{name}.{secrets.token_hex(4)}.partial"
    try:
        save(table, tmp, source or Path(src).name)
        owners.record(tmp, owner)  # the dataset appears with its owner, never without
        tmp.rename(dest)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return name, table


def import_sample(owner: str | None = None) -> str:
    """The built-in "topics" sample (make_sample) as dataset ``sample-topics`` of ``owner``; returns the name."""
    import tempfile

    from core.data import edits
    from core.storage import owners

    name, n = "sample-topics", 1
    while (edits.root() / name).exists() and not owners.visible(edits.root() / name, owner):
        n += 1
        name = f"sample-topics-{n}"
    if not (edits.root() / name).is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            import_table(make_sample(Path(tmp) / "topics.csv"), name, owner, "topics.csv")
    return name
