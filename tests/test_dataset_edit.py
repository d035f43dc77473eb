"""Dataset folder operations: imports, safe names, add / rename / merge / delete classes, snapshots."""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from conftest import zip_folder
from core.data import edits as de
from core.data import ingest
from core.storage import workspace


def _png(colour=(200, 30, 30), size=(40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def ds(shapes_dir) -> str:
    """A private copy of the shapes sample as a workspace dataset (each test may wreck it)."""
    name = de.unique_name("shapes-copy")
    shutil.copytree(shapes_dir, de.root() / name)
    return name


def _files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize("bad", ["", "   ", "..", "a/b", "a\\b", "../up", "x..y", ".hidden", "c:d", "a\x00b"])
def test_check_name_rejects_unsafe_names(bad):
    with pytest.raises(ValueError, match="name"):
        de.check_name(bad)


def test_check_name_keeps_ordinary_names():
    assert de.check_name("  honey bees ") == "honey bees"
    assert de.check_name("class_2-b") == "class_2-b"


def test_add_class_then_images_make_a_valid_new_class(ds):
    de.add_class(ds, "stars")
    assert de.class_counts(ds)["stars"] == 0
    with pytest.raises(ingest.IngestError, match="stars"):  # the scanner names the empty class
        de.scan(ds)
    for colour in ((255, 0, 0), (0, 255, 0)):
        de.add_image(ds, "stars", _png(colour), "snap.png")
    index = de.scan(ds)
    assert index.counts()["stars"] == 2
    assert "stars" in index.classes


def test_add_class_refuses_duplicates_and_path_tricks(ds):
    with pytest.raises(ValueError, match="already exists"):
        de.add_class(ds, "circle")
    before = _files_under(de.root())
    with pytest.raises(ValueError, match="'..'"):
        de.add_class(ds, "../escape")
    assert not (de.root().parent / "escape").exists()
    assert _files_under(de.root()) == before


def test_rename_class_moves_every_image(ds):
    n = de.class_counts(ds)["circle"]
    de.rename_class(ds, "circle", "round")
    counts = de.class_counts(ds)
    assert "circle" not in counts and counts["round"] == n
    assert "round" in de.scan(ds).classes
    with pytest.raises(ValueError, match="already exists"):
        de.rename_class(ds, "round", "square")
    with pytest.raises(ValueError, match="does not exist"):
        de.rename_class(ds, "circle", "disc")


def test_merge_classes_keeps_every_image_even_with_clashing_names(ds):
    before = de.class_counts(ds)
    # Give one file the same name in both classes: the merge must not overwrite it.
    sq = sorted((de.dataset_dir(ds) / "square").iterdir())[0]
    shutil.copy(sq, de.dataset_dir(ds) / "circle" / sq.name)
    de.merge_classes(ds, ["circle", "square"], "blob")
    after = de.class_counts(ds)
    assert set(after) == {"blob", "triangle"}
    assert after["blob"] == before["circle"] + before["square"] + 1


def test_merge_needs_a_source_other_than_the_target(ds):
    with pytest.raises(ValueError, match="at least one class"):
        de.merge_classes(ds, ["circle"], "circle")


def test_delete_class_removes_it_and_reports_the_count(ds):
    n = de.class_counts(ds)["triangle"]
    assert de.delete_class(ds, "triangle") == n
    assert set(de.scan(ds).classes) == {"circle", "square"}
    with pytest.raises(ValueError, match="does not exist"):
        de.delete_class(ds, "triangle")


def test_add_image_rejects_bytes_that_are_not_an_image(ds):
    before = de.class_counts(ds)["circle"]
    with pytest.raises(ValueError):
        de.add_image(ds, "circle", b"definitely not a jpeg", "x.jpg")
    assert de.class_counts(ds)["circle"] == before


def test_class_operations_on_split_folders_touch_train_and_val(tmp_path, shapes_dir):
    src = tmp_path / "split"
    for split in ("train", "val"):
        for cls in ("circle", "square"):
            (src / split / cls).mkdir(parents=True)
            for p in sorted((shapes_dir / cls).iterdir())[:4]:
                shutil.copy(p, src / split / cls / p.name)
    name, _ = de.import_zip(zip_folder(src, tmp_path / "split.zip", top="wrapped"), de.unique_name("split"))
    assert de.class_counts(name) == {"circle": 8, "square": 8}
    de.rename_class(name, "circle", "disc")
    index = de.scan(name)
    assert {(it.label, it.split) for it in index.items} == {("disc", "train"), ("disc", "val"),
                                                            ("square", "train"), ("square", "val")}


def test_import_zip_then_append_a_second_upload(tmp_path, shapes_dir):
    first, second = tmp_path / "a", tmp_path / "b"
    for cls in ("circle", "square"):
        shutil.copytree(shapes_dir / cls, first / cls)
    shutil.copytree(shapes_dir / "triangle", second / "triangle")
    shutil.copytree(shapes_dir / "circle", second / "circle")  # same files again: kept, renamed
    name, skipped = de.import_zip(zip_folder(first, tmp_path / "a.zip"), de.unique_name("appended"))
    assert skipped == []
    with pytest.raises(ValueError, match="already exists"):
        de.import_zip(zip_folder(second, tmp_path / "b.zip"), name)
    de.import_zip(zip_folder(second, tmp_path / "b.zip"), name, append=True)
    counts = de.scan(name).counts()
    n = len(list((shapes_dir / "circle").iterdir()))
    assert counts == {"circle": 2 * n, "square": n, "triangle": n}


def test_a_bad_upload_leaves_no_dataset_behind(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("only/one.png", _png())
        z.writestr("only/two.png", _png((0, 0, 200)))
    name = de.unique_name("bad")
    with pytest.raises(ingest.IngestError, match="at least 2"):
        de.import_zip(bad, name)
    assert name not in de.list_datasets()
    assert not any(p.name.startswith("extract-") for p in workspace.sub("uploads").iterdir())


def test_folder_upload_with_escaping_paths_writes_nothing_outside(tmp_path):
    files = [("pics/cats/a.png", _png()), ("pics/cats/b.png", _png((1, 2, 3))),
             ("pics/dogs/a.png", _png((9, 9, 9))), ("pics/dogs/b.png", _png((90, 9, 9))),
             ("../../evil.png", _png())]
    name = de.unique_name("pics")
    try:
        de.import_files(files, name)
    except ingest.IngestError:
        pass  # refusing the whole upload is also acceptable; writing outside is not
    assert not (de.root().parent / "evil.png").exists()
    assert not (de.root() / "evil.png").exists()
    if name in de.list_datasets():
        assert de.scan(name).counts() == {"cats": 2, "dogs": 2}


def test_gallery_and_split_summary(ds):
    index = de.scan(ds)
    gal = de.gallery(index, per_class=3)
    assert set(gal) == set(index.classes)
    assert all(len(v) == 3 and all(Path(p).is_file() for p in v) for v in gal.values())
    s = de.split_summary(index, 0.2)
    assert s["own_val"] is False and s["n_train"] + s["n_val"] == len(index.items)
    assert s["n_val"] == round(0.2 * len(index.items))


def test_signature_changes_when_a_file_changes(ds):
    before = de.signature(ds)
    assert de.signature(ds) == before
    de.add_image(ds, "circle", _png((1, 1, 1)), "x.png")
    assert de.signature(ds) != before


def test_dataset_dir_refuses_names_outside_the_workspace():
    with pytest.raises(ValueError):
        de.dataset_dir("../runs")
    with pytest.raises(ValueError, match="does not exist"):
        de.dataset_dir("no-such-dataset")


def test_import_reports_progress_for_both_stages(tmp_path, shapes_dir):
    calls = []
    de.import_zip(zip_folder(shapes_dir, tmp_path / "p.zip"), de.unique_name("progress"),
                  progress=lambda stage, done, total: calls.append((stage, done, total)))
    stages = [c[0] for c in calls]
    assert "extracting" in stages and "checking images" in stages
    checks = [c for c in calls if c[0] == "checking images"]
    n = sum(1 for p in shapes_dir.rglob("*.png"))
    assert checks[-1][1] == checks[-1][2] == n
