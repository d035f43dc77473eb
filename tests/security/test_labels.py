"""Labels and class names are checked on the way in: plain text, one line, 1-100 characters."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from core.data import edits, ingest
from core.data.labels import LabelError, check_label, label_problem


def _png(path: Path, colour=(10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)


@pytest.mark.parametrize("label, rule", [
    ("", "empty"), ("   ", "empty"), ("a\nb", "line break (U+000A)"), ("a\rb", "line break"),
    ("bell\x07", "control character (U+0007)"), ("del\x7f", "control character (U+007F)"),
    ("admin\u202egnp.exe", "control character (U+202E)"), ("x" * 101, "101 characters long (at most 100)"),
])
def test_a_bad_label_is_refused_naming_the_rule(label, rule):
    assert rule in label_problem(label)
    with pytest.raises(LabelError, match="plain text on one line"):
        check_label(label, "labels.csv line 3: label")


def test_ordinary_labels_pass_including_unicode_and_markdown_looking_text():
    for ok in ("cats", "Golden Retriever", "chien", "猫", "👨‍👩‍👧", "[x](http://e)", "x" * 100):
        assert label_problem(ok) is None, ok
    assert check_label("  padded  ") == "padded"


def test_ingest_skips_csv_rows_with_bad_labels_and_says_which_row_and_rule(tmp_path):
    for i in range(6):
        _png(tmp_path / f"{i}.png", (i, i, i))
    (tmp_path / "labels.csv").write_text(
        'file,label\n0.png,cat\n1.png,cat\n2.png,dog\n3.png,dog\n'
        '4.png,"ring\x07the bell"\n5.png,' + "y" * 150 + "\n")
    index = ingest.scan_folder(tmp_path)
    assert index.classes == ["cat", "dog"]
    why = {s.path: s.reason for s in index.skipped if s.reason.startswith("labels.csv")}
    assert why["4.png"].startswith("labels.csv line 6: label 'ring\\x07the bell' contains a control character"), why
    assert why["5.png"].startswith("labels.csv line 7:") and "150 characters long" in why["5.png"]


def test_ingest_skips_class_folders_whose_names_break_the_rules(tmp_path):
    for cls in ("cats", "dogs", "evil\x1b[31m"):
        for i in range(2):
            _png(tmp_path / cls / f"{i}.png", (i, 0, 0))
    index = ingest.scan_folder(tmp_path)
    assert index.classes == ["cats", "dogs"]
    assert any("class folder name" in s.reason and "control character (U+001B)" in s.reason for s in index.skipped)


@pytest.fixture
def dataset(tmp_path):
    src = tmp_path / "src"
    for cls in ("cats", "dogs"):
        for i in range(2):
            _png(src / cls / f"{i}.png", (i, 50, 0))
    from conftest import zip_folder

    name, _ = edits.import_zip(zip_folder(src, tmp_path / "up.zip"), edits.unique_name("labels-test"))
    yield name
    edits.delete_dataset(name)


def test_edits_refuse_bad_new_names_and_class_names_that_are_not_in_the_dataset(dataset):
    for bad in ("a\nb", "tab\there", "x" * 101, "\u202eevil"):
        with pytest.raises(ValueError, match="the class name"):
            edits.rename_class(dataset, "cats", bad)
        with pytest.raises(ValueError, match="the class name"):
            edits.merge_classes(dataset, ["cats"], bad)
        with pytest.raises(ValueError, match="the class name"):
            edits.add_class(dataset, bad)
    root = edits.dataset_dir(dataset)
    for sneaky in ("../../..", "..", "cats/../dogs", ".", "", None):
        with pytest.raises(ValueError, match="does not exist in"):
            edits.delete_class(dataset, sneaky)
        with pytest.raises(ValueError, match="does not exist in"):
            edits.rename_class(dataset, sneaky, "fine")
    with pytest.raises(ValueError, match="does not exist in"):
        edits.merge_classes(dataset, ["dogs", "../../x"], "cats")
    assert edits.class_counts(dataset) == {"cats": 2, "dogs": 2} and root.is_dir()


def test_multitask_skips_rows_with_bad_labels_and_refuses_a_bad_task_header(tmp_path):
    from core.techniques import multitask

    for i in range(5):
        _png(tmp_path / f"{i}.png", (i * 30, 0, 0))
    (tmp_path / "t.csv").write_text('file,colour\n0.png,red\n1.png,blue\n2.png,red\n3.png,blue\n4.png,"r\x00d"\n')
    table = multitask.read_table(str(tmp_path))
    assert len(table.files) == 4 and "control character (U+0000)" in table.skipped[0], table.skipped
    (tmp_path / "t.csv").write_text('file,"col\nour"\n0.png,red\n1.png,blue\n')
    with pytest.raises(LabelError, match="header of task column"):
        multitask.read_table(str(tmp_path))
