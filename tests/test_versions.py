"""Dataset versions: review decisions write a new version with a log; the original stays byte for byte; restore."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from core import cli
from core.data import edits, versions
from core.storage import owners


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with the sha256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _labels(name: str) -> dict[str, str]:
    return {Path(it.path).name: it.label for it in edits.scan(name).items}


@pytest.fixture
def dataset(shapes_dir, request) -> str:
    """A copy of the shapes sample as a workspace dataset with an owner, named after the test."""
    name = "v-" + request.node.name[5:40].replace("_", "-")
    dest = edits.root() / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(shapes_dir, dest)
    owners.record(dest, "a" * 32)
    return name


def test_decisions_write_a_new_version_and_leave_the_original_untouched(dataset):
    before = _snapshot(edits.dataset_dir(dataset))
    new = versions.apply(dataset, [versions.Decision("circle/circle_0000.png", "relabel", "square"),
                                   versions.Decision("triangle/triangle_0001.png", "remove"),
                                   versions.Decision("square/square_0002.png", "keep")])
    assert new == f"{dataset}@v2"
    assert _snapshot(edits.dataset_dir(dataset)) == before
    labels = _labels(new)
    assert labels["circle_0000.png"] == "square" and "triangle_0001.png" not in labels
    assert len(labels) == len(before) - 2  # 30 images and the owner record in the original
    log = versions.read_log(new)
    assert log["parent"] == dataset and log["counts"] == {"circle": 9, "square": 11, "triangle": 9}
    assert [d["action"] for d in log["decisions"]] == ["relabel", "remove", "keep"]
    assert owners.owner_of(edits.dataset_dir(new)) == "a" * 32
    same = edits.dataset_dir(new) / "square" / "square_0000.png"
    if os.stat(same).st_nlink > 1:  # hard-linked where the file system allows: no second copy of the bytes
        assert os.path.samefile(same, edits.dataset_dir(dataset) / "square" / "square_0000.png")


def test_a_relabel_onto_an_existing_file_name_keeps_both_images(dataset):
    src = edits.dataset_dir(dataset)
    shutil.copy(src / "circle" / "circle_0003.png", src / "square" / "circle_0003.png")
    new = versions.apply(dataset, [versions.Decision("circle/circle_0003.png", "relabel", "square")])
    names = sorted(p.name for p in (edits.dataset_dir(new) / "square").iterdir())
    assert "circle_0003.png" in names and "circle_0003_1.png" in names


def test_restore_makes_an_older_version_current_as_a_new_version(dataset):
    v2 = versions.apply(dataset, [versions.Decision("circle/circle_0000.png", "remove")])
    v3 = versions.restore(v2, dataset)
    assert v3 == f"{dataset}@v3" and versions.current(dataset) == v3
    assert _labels(v3) == _labels(dataset)
    assert versions.read_log(v3)["restored_from"] == dataset
    assert [v["name"] for v in versions.list_versions(v2)] == [dataset, v2, v3]


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd", "circle/../../x.png", "circle/nope.png"])
def test_decisions_naming_files_outside_the_dataset_are_refused_before_anything_is_written(dataset, bad):
    with pytest.raises(ValueError):
        versions.apply(dataset, [versions.Decision(bad, "remove")])
    assert [v["name"] for v in versions.list_versions(dataset)] == [dataset]


def test_decisions_that_would_empty_a_class_below_two_images_are_refused(dataset):
    doomed = [versions.Decision(f"circle/circle_{i:04d}.png", "remove") for i in range(9)]
    with pytest.raises(ValueError, match="cannot train"):
        versions.apply(dataset, doomed)
    assert len(versions.list_versions(dataset)) == 1


def test_a_csv_labelled_dataset_gets_a_new_labels_file(tmp_path):
    name = "v-csv"
    dest = edits.root() / name
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "img").mkdir(parents=True)
    from PIL import Image

    rows = ["file,label"]
    for i in range(6):
        Image.new("RGB", (40, 40), (i * 40, 10, 10)).save(dest / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{'red' if i < 3 else 'dark'}")
    (dest / "labels.csv").write_text("\n".join(rows) + "\n")
    before = _snapshot(dest)
    new = versions.apply(name, [versions.Decision("img/0.png", "relabel", "dark")])
    assert _snapshot(dest) == before
    assert _labels(new) == {"0.png": "dark", "1.png": "red", "2.png": "red", "3.png": "dark", "4.png": "dark",
                            "5.png": "dark"}


def test_the_cli_applies_a_decisions_csv_and_prints_the_new_version(dataset, tmp_path, capsys):
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("path,action,label\ncircle/circle_0000.png,relabel,triangle\n")
    assert cli.main(["clean", "--data", dataset, "--apply", str(decisions)]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert out["version"] == f"{dataset}@v2"
    assert _labels(out["version"])["circle_0000.png"] == "triangle"


def test_the_cli_refuses_a_decisions_csv_that_leaves_the_dataset(dataset, tmp_path, capsys):
    decisions = tmp_path / "decisions.csv"
    decisions.write_text("path,action,label\n../../etc/passwd,remove,\n")
    assert cli.main(["clean", "--data", dataset, "--apply", str(decisions)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "'..'" in err
    assert len(versions.list_versions(dataset)) == 1


def test_a_run_configured_on_a_version_records_that_version():
    from core.app import services

    cfg = services.to_config(services.defaults(), edits.root() / "cats@v2")
    assert cfg.dataset == "cats@v2" and cfg.data.endswith("cats@v2")
