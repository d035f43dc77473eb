"""Text datasets: reading tables and folders, column detection, encoding problems per row, health, split."""
import ast
import json
import zipfile
from pathlib import Path

import pytest

from core.data import text

ROOT = Path(__file__).resolve().parents[1]


def _csv(tmp_path, body: bytes, name="data.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(body)
    return p


def test_the_text_module_never_imports_torch():
    tree = ast.parse((ROOT / "core/data/text.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in names if m.split(".")[0] in ("torch", "transformers")}


def test_a_csv_with_text_and_label_columns_is_read_in_order(tmp_path):
    p = _csv(tmp_path, b'text,label\n"great, really great",pos\nawful thing,neg\n')
    t = text.read(p)
    assert [(r.text, r.label, r.where) for r in t.rows] == [("great, really great", "pos", "2"),
                                                            ("awful thing", "neg", "3")]
    assert t.classes == ["neg", "pos"]


def test_one_free_text_column_and_one_label_column_are_detected(tmp_path):
    rows = [{"id": str(i), "stars": "5" if i % 2 else "1",
             "opinion": f"this product number {i} was {'lovely' if i % 2 else 'broken'} to use"} for i in range(20)]
    p = tmp_path / "r.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    t = text.read(p)
    assert (t.text_column, t.label_column) == ("opinion", "stars")
    assert text.looks_like_text(p)


def test_an_image_label_csv_is_not_taken_for_text(tmp_path):
    p = _csv(tmp_path, b"filename,label\n" + b"".join(b"img_%03d.jpg,cat\n" % i for i in range(10)))
    assert not text.looks_like_text(p)


def test_a_tsv_is_split_on_tabs(tmp_path):
    p = _csv(tmp_path, b"text\tlabel\nhello, world\ta\nbye now\tb\n", "d.tsv")
    assert [r.text for r in text.read(p).rows] == ["hello, world", "bye now"]


def test_bytes_that_are_not_utf8_are_reported_with_their_row_and_replaced(tmp_path):
    p = _csv(tmp_path, b"text,label\nfine text,a\ncaf\xe9 au lait,b\nok,a\n")
    t = text.read(p)
    assert [e["row"] for e in t.encoding_problems] == ["3"]
    assert "0xE9" in t.encoding_problems[0]["message"]
    assert t.rows[1].text == "caf\ufffd au lait"


def test_a_zip_of_class_folders_of_txt_files_is_read(tmp_path):
    z = tmp_path / "t.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("data/spam/1.txt", "win money now")
        f.writestr("data/ham/1.txt", "see you at lunch")
        f.writestr("__MACOSX/data/ham/._1.txt", "junk")
    t = text.read(z)
    assert sorted((r.label, r.text) for r in t.rows) == [("ham", "see you at lunch"), ("spam", "win money now")]
    assert text.looks_like_text(z)
    images = tmp_path / "i.zip"
    with zipfile.ZipFile(images, "w") as f:
        f.writestr("cats/1.png", b"png")
        f.writestr("cats/notes.txt", "about the cats")
    assert not text.looks_like_text(images)


def test_unreadable_columns_raise_a_message_that_names_them(tmp_path):
    p = _csv(tmp_path, b"a,b\n1,2\n3,4\n")
    with pytest.raises(ValueError, match="could not tell the text and the label columns apart among a, b"):
        text.read(p)


def _table(n_per_class=10):
    rows = [text.TextRow(f"sentence {i} about {c}", c, str(i + 2)) for c in ("x", "y") for i in range(n_per_class)]
    return text.TextTable(rows)


def test_the_split_is_stratified_and_decided_by_the_seed_alone():
    t = _table()
    a, b = text.split(t, 0.2, seed=3), text.split(text.TextTable(list(reversed(t.rows))), 0.2, seed=3)
    assert a.val == b.val and len(a.val) == 4
    assert sorted(y for _, y in a.val) == [0, 0, 1, 1]
    assert text.split(t, 0.2, seed=4).val != a.val


def test_health_reports_counts_lengths_empties_duplicates_and_leakage():
    t = _table()
    t.rows += [text.TextRow("  ", "x", "30"), text.TextRow("Sentence 0 about X", "y", "31"),
               text.TextRow("sentence  0 about x", "x", "32")]
    r = text.health(t, val_fraction=0.3, seed=0)
    assert r["classes"] == {"x": 12, "y": 11}
    assert r["empty_rows"] == ["30"]
    dup = [d for d in r["duplicates"] if "31" in d["rows"]][0]
    assert set(dup["rows"]) == {"2", "31", "32"} and dup["labels"] == ["x", "y"]
    assert r["conflicting_duplicates"] == 1
    assert r["tokens"]["max"] == 4 and r["chars"]["min"] == 2


def test_health_finds_validation_texts_that_also_sit_in_training():
    t = _table()
    t.rows += [text.TextRow(r.text.upper(), r.label, f"c{r.where}") for r in list(t.rows)]  # every text twice
    r = text.health(t, val_fraction=0.3, seed=0)
    assert r["leakage"]["checked"] and r["leakage"]["n"] >= 5
    assert any("also appear in training" in w for w in r["warnings"])


def test_a_class_with_one_text_cannot_be_split():
    t = _table()
    t.rows.append(text.TextRow("lonely", "z", "99"))
    with pytest.raises(ValueError, match="'z' have 1 text"):
        text.split(t, 0.2, 0)


def test_the_app_s_text_health_counts_lengths_in_the_encoder_s_tokens(tmp_path):
    from core.app import services

    p = _csv(tmp_path, b"text,label\nhello there,a\nunbelievably tokenised,b\nhi,a\nbye,b\n")
    assert services.is_text_data(p)
    r = services.text_health(p, max_length=8)
    assert r["token_unit"] == "tokens"
    assert r["tokens"]["min"] == 3  # [CLS] hi [SEP]
    assert r["tokens"]["max"] > len("unbelievably tokenised".split()) + 2  # word pieces, not words
