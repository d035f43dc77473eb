"""Text classification benchmark (issue 17): Transfer Studio's text runs against the usual baselines, offline.

    python benchmarks/bench_text.py [--per-class 48] [--epochs 10] [--finetune] [--quick]

Two datasets assembled with no network:
  topics     generated topic sentences (4 classes); the test set uses topic words never seen in training
             (synonyms), so it measures transfer of meaning, not memorised tokens;
  docstrings docstrings of public functions and classes of six standard-library modules, labelled by module.

Per dataset, accuracy on the held-out test split of:
  tfidf+lr      TF-IDF (word 1-2 grams) + logistic regression (scikit-learn);
  probe         logistic regression (scikit-learn) on frozen all-MiniLM-L6-v2 sentence embeddings;
  ts head       Transfer Studio, `python -m core train` default text recipe (head only, embeddings cached);
  ts random     the same with a randomly initialised encoder (pretrained=False): what the pretraining brings;
  ts last-2     (--finetune) the last two transformer blocks fine-tuned with the head.
Also: encoder throughput in sentences/s (batch 64, eval, this machine's threads) and load_model().predict()
sentences/s. Ratios are printed next to the numbers.
"""
from __future__ import annotations

import argparse
import csv
import functools
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODULES = ("math", "os", "socket", "random", "shutil", "statistics")


def docstrings(cap: int = 60) -> list[tuple[str, str]]:
    """(first paragraph of a docstring, module) for public callables of MODULES, at most ``cap`` per module."""
    import importlib

    rows = []
    for name in MODULES:
        mod = importlib.import_module(name)
        seen = set()
        for attr in sorted(dir(mod)):
            obj = getattr(mod, attr)
            if attr.startswith("_") or not callable(obj):
                continue
            doc = (inspect.getdoc(obj) or "").split("\n\n")[0].strip()
            if len(doc) < 20 or doc in seen:
                continue
            seen.add(doc)
            rows.append((doc.replace("\n", " "), name))
        rows = rows[:len(rows) - max(0, sum(1 for _, m in rows if m == name) - cap)]
    return rows


def split_rows(rows, test_fraction=0.3, seed=0):
    from sklearn.model_selection import train_test_split

    return train_test_split(rows, test_size=test_fraction, random_state=seed, stratify=[y for _, y in rows])


def write_csv(rows, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return path


def tfidf_lr(train, test) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=2000))
    model.fit([t for t, _ in train], [y for _, y in train])
    return float((model.predict([t for t, _ in test]) == [y for _, y in test]).mean())


@functools.lru_cache(maxsize=1)
def _encoder():
    from core.models import text_backbones as tb

    return tb.build_body(tb.DEFAULT).eval(), tb.tokenizer(tb.DEFAULT)


def encode(texts, max_length=128, batch=64):
    """(embeddings as numpy, sentences/s) of the frozen default encoder (timed after one warm-up batch)."""
    import torch

    from core.models import text_backbones as tb

    body, tok = _encoder()
    with torch.no_grad():
        body(tb.tokenize(tok, texts[:batch], max_length))
    out, t0 = [], time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            out.append(body(tb.tokenize(tok, texts[i:i + batch], max_length)))
    return torch.cat(out).numpy(), len(texts) / (time.perf_counter() - t0)


def probe(train, test) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    xtr, _ = encode([t for t, _ in train])
    xte, speed = encode([t for t, _ in test])
    clf = LogisticRegression(max_iter=5000, C=10.0).fit(xtr, [y for _, y in train])
    return float((clf.predict(xte) == [y for _, y in test]).mean()), speed


def ts_run(train_csv: Path, test, epochs: int, **kw) -> tuple[float, float, float]:
    """(test accuracy, training seconds, predict sentences/s) of a Transfer Studio text run."""
    from core import techniques
    from core.config import RunConfig
    from core.results import loading

    explicit = {"epochs", *kw}
    config = techniques.default_text_config(RunConfig(data=str(train_csv), device="cpu", epochs=epochs, **kw),
                                            explicit=explicit)
    t0 = time.perf_counter()
    result = techniques.fit(config)
    train_s = time.perf_counter() - t0
    model = loading.load_model(result["run_dir"])
    t1 = time.perf_counter()
    preds = [p["label"] for i in range(0, len(test), 64) for p in model.predict([t for t, _ in test[i:i + 64]])]
    speed = len(test) / (time.perf_counter() - t1)
    return sum(p == y for p, (_, y) in zip(preds, test)) / len(test), train_s, speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=48, help="topic sentences per class for training (default 48)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the Transfer Studio runs (default 10)")
    ap.add_argument("--finetune", action="store_true", help="also fine-tune the last two blocks (slower; default off)")
    ap.add_argument("--quick", action="store_true", help="smoke run: few texts, 2 epochs, topics only (default off)")
    a = ap.parse_args()
    if a.quick:
        a.per_class, a.epochs = 12, 2
    os.environ.setdefault("TRANSFER_STUDIO_HOME", tempfile.mkdtemp(prefix="bench-text-"))
    from core.data import text

    tmp = Path(tempfile.mkdtemp(prefix="bench-text-data-"))
    sets = {}
    train_csv = text.make_sample(tmp / "topics.csv", per_class=a.per_class)
    test = [(r.text, r.label) for r in text.read(text.make_sample(tmp / "held.csv", 48, held_out=True)).rows]
    sets["topics"] = ([(r.text, r.label) for r in text.read(train_csv).rows], test, train_csv)
    if not a.quick:
        tr, te = split_rows(docstrings())
        sets["docstrings"] = (tr, te, write_csv(tr, tmp / "docstrings.csv"))
    report = {}
    for name, (train, test, path) in sets.items():
        row = {"n_train": len(train), "n_test": len(test), "tfidf+lr": tfidf_lr(train, test)}
        row["probe"], row["encode_sentences_per_s"] = probe(train, test)
        row["ts head"], row["ts head train_s"], row["predict_sentences_per_s"] = ts_run(path, test, a.epochs)
        row["ts random"], *_ = ts_run(path, test, a.epochs, pretrained=False)
        if a.finetune:
            row["ts last-2"], row["ts last-2 train_s"], _ = ts_run(path, test, a.epochs, trainable="last-2",
                                                                   lr=1e-3, lr_decay=0.5)
        report[name] = row
        print(f"\n{name}: {len(train)} training texts, {len(test)} test texts")
        for k in ("tfidf+lr", "probe", "ts head", "ts random", "ts last-2"):
            if k in row:
                print(f"  {k:10s} accuracy {row[k]:.3f}   ({row[k] / max(row['tfidf+lr'], 1e-9):.2f}x tf-idf)")
        print(f"  pretrained vs random init: {row['ts head']:.3f} vs {row['ts random']:.3f} "
              f"({row['ts head'] - row['ts random']:+.3f})")
        print(f"  encoder {row['encode_sentences_per_s']:.0f} sentences/s; load_model().predict "
              f"{row['predict_sentences_per_s']:.0f} sentences/s; head-only run {row['ts head train_s']:.1f} s")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
