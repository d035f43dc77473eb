"""Paths named by user data stay inside their folder: one helper, used by ingest and multi-task alike."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.data import ingest
from core.storage import paths


def _png(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


@pytest.mark.parametrize("name, kind", [
    ("/etc/passwd", "absolute"), ("C:\\Windows\\win.ini", "absolute"), ("c:x.png", "absolute"),
    ("\\\\server\\share\\x.png", "absolute"), ("../../x.png", "parent"), ("a/../../x.png", "parent"),
    ("a\\..\\..\\x.png", "parent"), ("ok.png\x00.txt", "nul"), ("", "empty"), ("   ", "empty"), ("./", "empty"),
])
def test_contained_refuses_every_escape_before_touching_the_disk(tmp_path, name, kind):
    with pytest.raises(paths.OutsideError) as err:
        paths.contained(tmp_path, name)
    assert err.value.kind == kind, str(err.value)


def test_contained_refuses_a_symlink_that_leads_outside_and_accepts_plain_names(tmp_path):
    outside = _png(tmp_path / "secret" / "s.png")
    base = tmp_path / "ds"
    _png(base / "cats" / "1.png")
    (base / "link.png").symlink_to(outside)
    (base / "linkdir").symlink_to(outside.parent, target_is_directory=True)
    for name in ("link.png", "linkdir/s.png"):
        with pytest.raises(paths.OutsideError, match="outside the folder through a symbolic link"):
            paths.contained(base, name)
    assert paths.contained(base, "cats/1.png") == (base / "cats" / "1.png").resolve()
    assert paths.contained(base, "cats\\1.png") == (base / "cats" / "1.png").resolve()
    assert paths.contained(base, "cats/./missing.png") == (base / "cats" / "missing.png").resolve()


def _csv_dataset(root: Path, rows: list[str]) -> Path:
    for i in range(2):
        _png(root / f"a{i}.png", (i, 0, 0))
        _png(root / f"b{i}.png", (0, i, 0))
    body = ["file,label"] + [f"a{i}.png,a" for i in range(2)] + [f"b{i}.png,b" for i in range(2)] + rows
    (root / "labels.csv").write_text("\n".join(body) + "\n")
    return root


def test_ingest_refuses_csv_rows_outside_whether_or_not_the_file_exists(tmp_path):
    _png(tmp_path / "exists.png")
    hostile = ["/etc/passwd,a", "../../x.png,a", "../exists.png,b", "../missing.png,b", f"{tmp_path / 'exists.png'},a"]
    index = ingest.scan_folder(_csv_dataset(tmp_path / "ds", hostile))
    assert len(index.items) == 4
    why = {s.path: s.reason for s in index.skipped}
    for name in ("/etc/passwd", "../../x.png", "../exists.png", "../missing.png", str(tmp_path / "exists.png")):
        assert "path leaves the dataset folder" in why[name], why
    # the same words for an existing and a missing file outside: no existence oracle
    assert why["../exists.png"].split(":", 1)[1].replace("exists", "X") == \
        why["../missing.png"].split(":", 1)[1].replace("missing", "X")


def test_multitask_csv_cannot_read_server_files_and_its_count_reveals_nothing(tmp_path):
    from core.techniques import multitask

    _png(tmp_path / "exists.png")
    base = tmp_path / "mt"
    for i in range(4):
        _png(base / f"{i}.png", (i * 40, 0, 0))
    rows = ["filename,colour,size", "0.png,red,big", "1.png,blue,small", "2.png,red,small", "3.png,blue,big"]

    def read(extra):
        (base / "labels.csv").write_text("\n".join(rows + extra) + "\n")
        return multitask.read_table(str(base))

    table = read(["/etc/passwd,red,big", "../../x.png,red,big", "../exists.png,blue,big", "../missing.png,red,big"])
    assert len(table.files) == 4 and all(Path(f).parent == base.resolve() for f in table.files)
    assert sum("image path refused" in s for s in table.skipped) == 4, table.skipped
    with_file = read(["../exists.png,blue,big"])
    without = read(["../missing.png,blue,big"])
    assert len(with_file.files) == len(without.files) == 4
    assert with_file.skipped[0].replace("exists", "X") == without.skipped[0].replace("missing", "X")


def test_multitask_ignores_a_linked_image_or_csv_that_points_outside(tmp_path):
    from core.techniques import multitask

    secret = _png(tmp_path / "secret.png")
    base = tmp_path / "mt"
    for i in range(4):
        _png(base / "img" / f"{i}.png", (i * 40, 0, 0))
    (base / "img" / "4.png").symlink_to(secret)
    (base / "labels.csv").write_text("filename,t\n0.png,a\n1.png,b\n2.png,a\n3.png,b\n4.png,a\nimg/4.png,b\n")
    table = multitask.read_table(str(base))
    assert str(secret) not in table.files and len(table.files) == 4, table.skipped
    os.remove(base / "labels.csv")
    (base / "labels.csv").symlink_to(tmp_path / "other.csv")
    (tmp_path / "other.csv").write_text("filename,t\n")
    with pytest.raises(ValueError, match="holds 0 CSV files"):
        multitask.read_table(str(base))


def test_zip_members_go_through_the_same_rules(tmp_path):
    buf = io.BytesIO()
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    with zipfile.ZipFile(buf, "w") as z:
        for name in ("../up.png", "/abs.png", "C:/drive.png", "cats/1.png", "dogs/1.png"):
            z.writestr(name, png.getvalue())
    skipped = ingest.extract_archive(io.BytesIO(buf.getvalue()), tmp_path / "dest")
    assert {s.path for s in skipped} == {"../up.png", "/abs.png", "C:/drive.png"}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == \
        ["dest/cats/1.png", "dest/dogs/1.png"]
