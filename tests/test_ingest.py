"""Ingestion: safe zip extraction, layout detection, validation messages and the health report."""

from __future__ import annotations

import io
import json
import shutil
import stat
import struct
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.data import archives
from core.data.imageio import MAX_PIXELS_ENV
from core.data.ingest import (
    DatasetIndex,
    IngestError,
    Item,
    Limits,
    Skipped,
    extract_archive,
    health_report,
    leakage,
    merge_into,
    scan_folder,
)

# ---------------------------------------------------------------------------------------------
# helpers

_SEED = iter(range(10_000))


def png_bytes(size=(32, 32), color=None, mode="RGB") -> bytes:
    """A small PNG; without a colour each call gives different (noise) pixels, so no duplicates."""
    if color is None:
        rng = np.random.default_rng(next(_SEED))
        channels = 3 if mode == "RGB" else 1
        array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        image = Image.fromarray(array.squeeze(-1) if channels == 1 else array)
    else:
        image = Image.new(mode, size, color)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def put(path, data: bytes | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes() if data is None else data)
    return path


def make_classes(root, spec: dict[str, int], suffix=".png"):
    for label, n in spec.items():
        for i in range(n):
            put(root / label / f"{label}_{i}{suffix}")
    return root


def make_zip(path, entries, compression=zipfile.ZIP_DEFLATED):
    """entries: iterable of (name or ZipInfo, bytes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate-name test writes a name twice
        with zipfile.ZipFile(path, "w", compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return path


def central_entries(data: bytes):
    """Yield (offset of central header, name bytes, local header offset) for each member."""
    pos = data.rfind(b"PK\x05\x06")
    count, cd_size, cd_offset = struct.unpack("<HII", data[pos + 10 : pos + 20])
    off = cd_offset
    for _ in range(count):
        assert data[off : off + 4] == b"PK\x01\x02"
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[off + 28 : off + 34])
        local = struct.unpack("<I", data[off + 42 : off + 46])[0]
        yield off, data[off + 46 : off + 46 + name_len], local
        off += 46 + name_len + extra_len + comment_len


def patch_member(path, name: bytes, *, file_size=None, set_flags=0, clear_flags=0, rename=None):
    """Rewrite header fields of one member in place, as a hostile or sloppy tool would."""
    data = bytearray(path.read_bytes())
    for off, member, local in list(central_entries(bytes(data))):
        if member != name:
            continue
        if file_size is not None:
            struct.pack_into("<I", data, off + 24, file_size)
            struct.pack_into("<I", data, local + 22, file_size)
        for base, flag_off in ((off, 8), (local, 6)):
            flags = struct.unpack_from("<H", data, base + flag_off)[0]
            struct.pack_into("<H", data, base + flag_off, (flags | set_flags) & ~clear_flags)
        if rename is not None:
            assert len(rename) == len(name)
            data[off + 46 : off + 46 + len(name)] = rename
            data[local + 30 : local + 30 + len(name)] = rename
        path.write_bytes(bytes(data))
        return
    raise AssertionError(f"member {name!r} not found")


def all_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def reasons(skipped):
    return {s.path: s.reason for s in skipped}


@pytest.fixture(autouse=True)
def _no_env_limit(monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)


# ---------------------------------------------------------------------------------------------
# extract_archive: hostile members


def test_traversal_member_is_skipped_and_nothing_lands_outside(tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    archive = make_zip(tmp_path / "up.zip", [
        ("../evil.png", png_bytes()), ("cats/../../evil2.png", png_bytes()),
        ("cats/1.png", png_bytes()), ("dogs/1.png", png_bytes()),
    ])
    before_tmp, before_parent = all_files(tmp_path), sorted(p.name for p in tmp_path.parent.iterdir())
    dest = work / "dest"
    skipped = extract_archive(archive, dest)
    assert all_files(dest) == ["cats/1.png", "dogs/1.png"]
    assert set(all_files(tmp_path)) - set(before_tmp) == {"a/b/dest/cats/1.png", "a/b/dest/dogs/1.png"}
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before_parent
    why = reasons(skipped)
    assert "('..')" in why["../evil.png"] and "path-traversal" in why["cats/../../evil2.png"]


def test_absolute_and_drive_letter_members_are_skipped(tmp_path):
    target = tmp_path / "abs_target.png"
    archive = make_zip(tmp_path / "up.zip", [
        (str(target), png_bytes()), ("C:/win.png", png_bytes()), ("C:\\win2.png", png_bytes()),
        ("cats/1.png", png_bytes()),
    ])
    before = all_files(tmp_path)
    skipped = extract_archive(archive, tmp_path / "dest")
    assert not target.exists()
    assert set(all_files(tmp_path)) - set(before) == {"dest/cats/1.png"}
    why = reasons(skipped)
    assert why[str(target)].startswith("absolute path")
    assert why["C:/win.png"].startswith("absolute path") and why["C:\\win2.png"].startswith("absolute path")


def test_symlink_member_is_skipped(tmp_path):
    link = zipfile.ZipInfo("cats/link.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = make_zip(tmp_path / "up.zip", [(link, "/etc/passwd"), ("cats/1.png", png_bytes())])
    before = all_files(tmp_path)
    skipped = extract_archive(archive, tmp_path / "dest")
    assert not (tmp_path / "dest" / "cats" / "link.png").exists()
    assert not (tmp_path / "dest" / "cats" / "link.png").is_symlink()
    assert set(all_files(tmp_path)) - set(before) == {"dest/cats/1.png"}
    assert reasons(skipped)["cats/link.png"].startswith("symbolic link")


def test_duplicate_member_keeps_first(tmp_path):
    first, second = png_bytes(), png_bytes()
    archive = make_zip(tmp_path / "up.zip", [("cats/1.png", first), ("cats/1.png", second)])
    skipped = extract_archive(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "cats" / "1.png").read_bytes() == first
    assert skipped == [Skipped("cats/1.png", "duplicate name in the archive; the first copy was kept")]


def test_nested_archive_is_not_opened(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("x.png", png_bytes())
    archive = make_zip(tmp_path / "up.zip", [
        ("cats/inner.zip", inner.getvalue()), ("cats/more.tar.gz", b"\x1f\x8b..."),
        ("cats/1.png", png_bytes()),
    ])
    skipped = extract_archive(archive, tmp_path / "dest")
    assert all_files(tmp_path / "dest") == ["cats/1.png"]
    why = reasons(skipped)
    assert why["cats/inner.zip"].startswith("nested archives are not opened")
    assert why["cats/more.tar.gz"].startswith("nested archives are not opened")


def test_system_clutter_is_ignored(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [
        ("__MACOSX/cats/._1.png", b"\x00\x05\x16\x07"), ("cats/._1.png", b"\x00\x05\x16\x07"),
        ("cats/.DS_Store", b"\x00"), ("Thumbs.db", b"\x00"), (".git/config", b"[core]"),
        ("cats/.hidden.png", png_bytes()), ("cats/1.png", png_bytes()),
    ])
    skipped = extract_archive(archive, tmp_path / "dest")
    assert all_files(tmp_path / "dest") == ["cats/1.png"]
    why = reasons(skipped)
    assert "__MACOSX" in why["__MACOSX/cats/._1.png"]
    assert "resource-fork" in why["cats/._1.png"]
    assert why["cats/.DS_Store"] == "system file (.DS_Store), ignored"
    assert why["Thumbs.db"] == "system file (Thumbs.db), ignored"
    assert why[".git/config"].startswith("hidden")
    assert why["cats/.hidden.png"].startswith("hidden")


def test_non_images_skipped_but_label_files_kept(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [
        ("labels.csv", b"filename,label\n1.png,cat\n"), ("meta.tsv", b"file\tlabel\n"),
        ("notes.txt", b"hi"), ("1.png", png_bytes()),
    ])
    skipped = extract_archive(archive, tmp_path / "dest")
    assert all_files(tmp_path / "dest") == ["1.png", "labels.csv", "meta.tsv"]
    assert reasons(skipped)["notes.txt"].startswith("not an image (.txt); supported types are .avif, .bmp")


def test_directory_entries_create_no_noise(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [("cats/", b""), ("cats/1.png", png_bytes())])
    assert extract_archive(archive, tmp_path / "dest") == []


def test_unicode_names_with_utf8_flag(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [("chats/été_猫.png", png_bytes()), ("собаки/1.png", png_bytes())])
    assert zipfile.ZipFile(archive).infolist()[0].flag_bits & 0x800
    extract_archive(archive, tmp_path / "dest")
    assert all_files(tmp_path / "dest") == ["chats/été_猫.png", "собаки/1.png"]


def test_utf8_names_without_the_flag_are_recovered(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [("chats/été.png", png_bytes())])
    patch_member(archive, "chats/été.png".encode(), clear_flags=0x800)
    assert zipfile.ZipFile(archive).infolist()[0].filename != "chats/été.png"  # cp437 mojibake
    extract_archive(archive, tmp_path / "dest")
    assert all_files(tmp_path / "dest") == ["chats/été.png"]


def test_cp437_names_are_decoded(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [("chats/cafX.png", png_bytes())])
    patch_member(archive, b"chats/cafX.png", rename=b"chats/caf\x82.png")  # 0x82 is 'é' in cp437
    extract_archive(archive, tmp_path / "dest")
    assert all_files(tmp_path / "dest") == ["chats/café.png"]


def test_upper_case_extensions_are_images(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [("cats/A.JPG", b"x"), ("dogs/B.PnG", b"y")])
    assert extract_archive(archive, tmp_path / "dest") == []
    assert all_files(tmp_path / "dest") == ["cats/A.JPG", "dogs/B.PnG"]


def test_file_object_source_and_progress(tmp_path):
    data = make_zip(tmp_path / "up.zip", [("a/1.png", png_bytes()), ("b/1.png", png_bytes())]).read_bytes()
    calls = []
    extract_archive(io.BytesIO(data), tmp_path / "dest", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 2), (1, 2), (2, 2)]
    assert all_files(tmp_path / "dest") == ["a/1.png", "b/1.png"]


# ---------------------------------------------------------------------------------------------
# extract_archive: limits


def test_total_bytes_limit(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [(f"c/{i}.png", png_bytes((32, 32))) for i in range(4)])
    with pytest.raises(IngestError, match=r"expands to more than 8\.0 KiB \(max_total_bytes; reached"):
        extract_archive(archive, tmp_path / "dest", Limits(max_total_bytes=8 * 1024))


def test_total_bytes_enforced_on_actual_bytes_and_partial_file_removed(tmp_path, monkeypatch):
    # Headers claim 3 MiB for c/2.png but the early header check is switched off, so only the
    # count of bytes that actually flow can stop the archive.
    archive = make_zip(tmp_path / "up.zip", [("c/1.png", b"x" * 100), ("c/2.png", b"y" * 100)])
    patch_member(archive, b"c/2.png", file_size=3 << 20)
    monkeypatch.setattr(archives, "_check_declared_total", lambda *a: None)
    real_open = zipfile.ZipFile.open

    def generous_open(self, info, *args, **kwargs):
        if getattr(info, "filename", info) == "c/2.png":
            return io.BytesIO(b"\0" * (3 << 20))
        return real_open(self, info, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", generous_open)
    limits = Limits(max_total_bytes=2 << 20, max_ratio=1e9)
    with pytest.raises(IngestError, match=r"expands to more than 2\.0 MiB \(max_total_bytes; reached 2\.0 MiB\)"):
        extract_archive(archive, tmp_path / "dest", limits)
    assert all_files(tmp_path / "dest") == ["c/1.png"]  # the offending member's partial file is gone


def test_total_bytes_counts_stream_not_declared_sizes(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [("c/1.png", b"x" * 100), ("c/2.png", b"y" * 100)])
    patch_member(archive, b"c/2.png", file_size=3 << 20)
    with pytest.raises(IngestError, match="max_total_bytes"):
        extract_archive(archive, tmp_path / "dest", Limits(max_total_bytes=2 << 20, max_ratio=1e9))
    assert all_files(tmp_path / "dest") == []


def test_compression_ratio_limit(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [("c/flat.bmp", b"\0" * (3 << 20)), ("c/1.png", png_bytes())])
    with pytest.raises(IngestError, match=r"'c/flat\.bmp' expands [\d,]+x \(compression ratio limit max_ratio = 50\) — this looks like a zip bomb"):
        extract_archive(archive, tmp_path / "dest", Limits(max_ratio=50))
    assert not (tmp_path / "dest" / "c" / "flat.bmp").exists()


def test_stream_longer_than_declared_size_is_cut_off(tmp_path, monkeypatch):
    # zipfile itself stops at the declared size today; this guards the check we own in case a
    # different reader (or a future zipfile) hands over everything the compressed data holds.
    archive = make_zip(tmp_path / "up.zip", [("c/1.png", b"x" * 100), ("c/2.png", b"y" * 100)])
    real_open = zipfile.ZipFile.open

    def lying_open(self, info, *args, **kwargs):
        if getattr(info, "filename", info) == "c/2.png":
            return io.BytesIO(b"y" * 5000)
        return real_open(self, info, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    skipped = extract_archive(archive, tmp_path / "dest")
    assert all_files(tmp_path / "dest") == ["c/1.png"]
    assert reasons(skipped)["c/2.png"].startswith("holds more data than its header declares (100 bytes)")


def test_member_count_limit(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [(f"c/{i}.png", b"x") for i in range(5)])
    with pytest.raises(IngestError, match=r"has 5 members, above the limit of 3 \(max_members\)"):
        extract_archive(archive, tmp_path / "dest", Limits(max_members=3))
    assert not any((tmp_path / "dest").rglob("*.png"))


def test_header_that_understates_size_is_enforced_on_actual_bytes(tmp_path):
    big = np.random.default_rng(5).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    archive = make_zip(tmp_path / "up.zip", [("cats/big.png", big), ("cats/ok.png", png_bytes())])
    patch_member(archive, b"cats/big.png", file_size=1000)
    skipped = extract_archive(archive, tmp_path / "dest")
    assert all_files(tmp_path / "dest") == ["cats/ok.png"]
    reason = reasons(skipped)["cats/big.png"]
    assert "re-create" in reason and ("corrupt" in reason or "more data than its header" in reason)


def test_member_size_limit_skips_only_that_member(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [("c/big.png", png_bytes((128, 128))), ("c/small.png", png_bytes((4, 4)))])
    skipped = extract_archive(archive, tmp_path / "dest", Limits(max_member_bytes=2000))
    assert all_files(tmp_path / "dest") == ["c/small.png"]
    assert "max_member_bytes" in reasons(skipped)["c/big.png"]


# ---------------------------------------------------------------------------------------------
# extract_archive: broken uploads


def test_not_a_zip(tmp_path):
    path = tmp_path / "data.zip"
    path.write_text("hello, I am a text file")
    with pytest.raises(IngestError, match=r"data\.zip is not a zip archive \(unrecognised content\) — upload a \.zip file"):
        extract_archive(path, tmp_path / "dest")


def test_tarball_is_named_as_such(tmp_path):
    path = tmp_path / "data.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 40)
    with pytest.raises(IngestError, match=r"gzip / \.tar\.gz.*upload a \.zip file"):
        extract_archive(path, tmp_path / "dest")


def test_truncated_zip(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [(f"c/{i}.png", png_bytes((32, 32))) for i in range(3)])
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match=r"up\.zip is a truncated or corrupt zip archive .*upload again"):
        extract_archive(archive, tmp_path / "dest")


def test_zero_byte_upload(tmp_path):
    path = tmp_path / "up.zip"
    path.write_bytes(b"")
    with pytest.raises(IngestError, match=r"up\.zip is empty \(0 bytes\)"):
        extract_archive(path, tmp_path / "dest")


def test_empty_zip(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [])
    with pytest.raises(IngestError, match=r"up\.zip is an empty zip archive — add your class folders"):
        extract_archive(archive, tmp_path / "dest")


def test_zip_without_images(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [("readme.txt", b"hi"), ("doc.pdf", b"%PDF")])
    with pytest.raises(IngestError, match=r"up\.zip contains no images — expected .*'readme\.txt': not an image"):
        extract_archive(archive, tmp_path / "dest")


def test_encrypted_zip(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [("cats/1.png", png_bytes())])
    patch_member(archive, b"cats/1.png", set_flags=0x1)
    with pytest.raises(IngestError, match="encrypted zip archives are not supported.*re-create it without a password"):
        extract_archive(archive, tmp_path / "dest")
    assert all_files(tmp_path / "dest") == []


# ---------------------------------------------------------------------------------------------
# scan_folder: layouts


def test_class_folders(tmp_path):
    make_classes(tmp_path / "ds", {"cats": 3, "dogs": 2})
    index = scan_folder(tmp_path / "ds")
    assert index.layout == "class-folders"
    assert index.classes == ["cats", "dogs"]
    assert index.counts() == {"cats": 3, "dogs": 2}
    assert all(item.split is None for item in index.items)
    assert index.items[0] == Item("cats/cats_0.png", "cats", None)


def test_single_top_level_folder_is_descended(tmp_path):
    make_classes(tmp_path / "upload" / "my dataset", {"ants": 2, "bees": 2})
    (tmp_path / "upload" / ".DS_Store").write_bytes(b"\0")
    index = scan_folder(tmp_path / "upload")
    assert index.root.endswith("my dataset")
    assert index.classes == ["ants", "bees"]
    assert {i.path for i in index.items} >= {"ants/ants_0.png", "bees/bees_1.png"}


def test_nested_subfolders_belong_to_their_class(tmp_path):
    make_classes(tmp_path, {"cats": 1, "dogs": 2})
    put(tmp_path / "cats" / "indoor" / "deep" / "x.png")
    index = scan_folder(tmp_path)
    assert index.counts() == {"cats": 2, "dogs": 2}
    assert Item("cats/indoor/deep/x.png", "cats") in index.items


def test_upper_case_extension_images_are_found(tmp_path):
    make_classes(tmp_path, {"cats": 2, "dogs": 2}, suffix=".JPG")
    assert scan_folder(tmp_path).counts() == {"cats": 2, "dogs": 2}


def test_split_folders_train_valid(tmp_path):
    make_classes(tmp_path / "Train", {"cats": 2, "dogs": 2})
    make_classes(tmp_path / "valid", {"cats": 1, "dogs": 1})
    make_classes(tmp_path / "test", {"cats": 1})
    index = scan_folder(tmp_path)
    assert index.layout == "split-folders"
    assert index.classes == ["cats", "dogs"]
    splits = {(i.split, i.label) for i in index.items}
    assert splits == {("train", "cats"), ("train", "dogs"), ("val", "cats"), ("val", "dogs")}
    assert Item("valid/cats/cats_0.png", "cats", "val") in index.items
    assert "held-out test folder" in reasons(index.skipped)["test/"]


def test_test_folder_is_validation_when_no_val(tmp_path):
    make_classes(tmp_path / "train", {"a": 2, "b": 2})
    make_classes(tmp_path / "TEST", {"a": 1, "b": 1})
    index = scan_folder(tmp_path)
    assert sorted(i.path for i in index.items if i.split == "val") == ["TEST/a/a_0.png", "TEST/b/b_0.png"]


def test_csv_labels(tmp_path):
    root = tmp_path / "ds"
    for name in ("img/1.png", "img/2.png", "img/3.png", "img/4.png", "img/unlisted.png"):
        put(root / name)
    put(tmp_path / "outside.png")  # exists, but above the dataset folder
    (root / "labels.csv").write_text(
        "Image Path,Label,photographer\n"
        "img/1.png,cat,ann\n"
        "img/2.png,cat,bob\n"
        "img/3.png,dog,cy\n"
        "4.png,dog,dee\n"            # bare name: found under img/
        "img/missing.png,dog,eve\n"
        "../outside.png,dog,fay\n"
        "img/1.png,dog,gus\n",
        encoding="utf-8",
    )
    index = scan_folder(root)
    assert index.layout == "csv"
    assert index.classes == ["cat", "dog"]
    assert sorted((i.path, i.label) for i in index.items) == [
        ("img/1.png", "cat"), ("img/2.png", "cat"), ("img/3.png", "dog"), ("img/4.png", "dog"),
    ]
    why = reasons(index.skipped)
    assert why["img/missing.png"] == "labels.csv line 6: file not found — check the name or add the file"
    assert why["../outside.png"].startswith("labels.csv line 7: path leaves the dataset folder")
    assert "listed again (first on labels.csv line 2)" in why["img/1.png"]
    assert why["img/unlisted.png"] == "image not listed in labels.csv, ignored"


def test_tsv_labels_with_split_column(tmp_path):
    for i in range(4):
        put(tmp_path / f"{i}.png")
    (tmp_path / "meta.tsv").write_text(
        "file\tclass\tsplit\n0.png\ta\ttrain\n1.png\tb\ttrain\n2.png\ta\tval\n3.png\tb\tvalid\n"
    )
    index = scan_folder(tmp_path)
    assert [(i.path, i.label, i.split) for i in index.items] == [
        ("0.png", "a", "train"), ("1.png", "b", "train"), ("2.png", "a", "val"), ("3.png", "b", "val"),
    ]


def test_semicolon_separated_csv_with_bom(tmp_path):
    for i in range(4):
        put(tmp_path / f"{i}.png")
    (tmp_path / "labels.csv").write_bytes(
        "\ufeffFilename;Category\n0.png;a\n1.png;a\n2.png;b\n3.png;b\n".encode("utf-8")
    )
    index = scan_folder(tmp_path)
    assert index.layout == "csv" and index.counts() == {"a": 2, "b": 2}


def test_csv_without_expected_columns_falls_back_to_folders(tmp_path):
    make_classes(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "notes.csv").write_text("x,y\n1,2\n")
    index = scan_folder(tmp_path)
    assert index.layout == "class-folders"
    assert "without the expected header" in reasons(index.skipped)["notes.csv"]


# ---------------------------------------------------------------------------------------------
# scan_folder: validation and partly bad uploads


def test_one_class_only(tmp_path):
    make_classes(tmp_path, {"cats": 3})
    with pytest.raises(IngestError) as err:
        scan_folder(tmp_path)
    assert str(err.value) == "found 1 class 'cats'; classification needs at least 2 — add a folder per class"


def test_class_with_one_image(tmp_path):
    make_classes(tmp_path, {"ants": 3, "bees": 1})
    with pytest.raises(IngestError) as err:
        scan_folder(tmp_path)
    assert str(err.value) == "class 'bees' has 1 image; each class needs at least 2 — add images or remove the folder"


def test_no_images_at_all(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(IngestError, match="no images found in .* — expected one folder per class"):
        scan_folder(tmp_path)


def test_loose_images_without_class_folders(tmp_path):
    put(tmp_path / "1.png")
    put(tmp_path / "2.png")
    with pytest.raises(IngestError, match=r"found 2 image\(s\) in .* but no class folders"):
        scan_folder(tmp_path)


def test_bad_files_are_skipped_and_the_rest_is_usable(tmp_path):
    make_classes(tmp_path, {"cats": 2, "dogs": 2})
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cats" / "cut.jpg").write_bytes(buf.getvalue()[:300])
    (tmp_path / "cats" / "fake.png").write_text("not an image")
    (tmp_path / "dogs" / "zero.png").write_bytes(b"")
    (tmp_path / "dogs" / "notes.txt").write_text("hi")
    (tmp_path / "dogs" / "Thumbs.db").write_bytes(b"\0")
    index = scan_folder(tmp_path)
    assert index.counts() == {"cats": 2, "dogs": 2}
    why = reasons(index.skipped)
    assert why["cats/cut.jpg"].startswith("cut.jpg is truncated or corrupt")
    assert why["cats/fake.png"].startswith("fake.png is not a recognised image")
    assert why["dogs/zero.png"].startswith("zero.png is empty (0 bytes)")
    assert why["dogs/notes.txt"].startswith("not an image (.txt)")
    assert why["dogs/Thumbs.db"] == "system file (Thumbs.db), ignored"


def test_decompression_bomb_is_skipped(tmp_path, monkeypatch):
    make_classes(tmp_path, {"cats": 2, "dogs": 2})
    put(tmp_path / "cats" / "huge.png", png_bytes((64, 64)))
    monkeypatch.setenv(MAX_PIXELS_ENV, "2000")
    index = scan_folder(tmp_path)
    assert index.counts() == {"cats": 2, "dogs": 2}
    assert "4,096 pixels, above the limit of 2,000" in reasons(index.skipped)["cats/huge.png"]


def test_verify_false_does_not_decode(tmp_path):
    make_classes(tmp_path, {"cats": 2, "dogs": 2})
    (tmp_path / "cats" / "fake.png").write_text("not an image")
    assert scan_folder(tmp_path, verify=False).counts() == {"cats": 3, "dogs": 2}


def test_symlinked_file_is_not_followed(tmp_path):
    secret = put(tmp_path / "secret.png")
    make_classes(tmp_path / "ds", {"cats": 2, "dogs": 2})
    (tmp_path / "ds" / "cats" / "link.png").symlink_to(secret)
    index = scan_folder(tmp_path / "ds")
    assert reasons(index.skipped)["cats/link.png"].startswith("symbolic link")


def test_content_hash_identifies_the_data(tmp_path):
    make_classes(tmp_path / "one", {"cats": 2, "dogs": 2})
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    first, second = scan_folder(tmp_path / "one"), scan_folder(tmp_path / "two")
    assert first.content_hash == second.content_hash and len(first.content_hash) == 64
    put(tmp_path / "two" / "dogs" / "dogs_0.png")  # same names, new pixels
    assert scan_folder(tmp_path / "two").content_hash != first.content_hash


def test_index_round_trips_through_json(tmp_path):
    make_classes(tmp_path, {"cats": 2, "dogs": 2})
    (tmp_path / "cats" / "n.txt").write_text("x")
    index = scan_folder(tmp_path)
    again = DatasetIndex.from_dict(json.loads(json.dumps(index.to_dict())))
    assert again == index
    assert Limits.from_dict(Limits(max_members=7).to_dict()) == Limits(max_members=7)


def test_extract_then_scan_end_to_end(tmp_path):
    archive = make_zip(tmp_path / "up.zip", [
        ("flowers/rose/1.png", png_bytes()), ("flowers/rose/2.png", png_bytes()),
        ("flowers/tulip/1.PNG", png_bytes()), ("flowers/tulip/2.png", png_bytes()),
        ("__MACOSX/flowers/._rose", b"\0"),
    ])
    extract_archive(archive, tmp_path / "dest")
    index = scan_folder(tmp_path / "dest")
    assert index.classes == ["rose", "tulip"] and len(index.items) == 4


# ---------------------------------------------------------------------------------------------
# merge_into


def test_merge_appends_and_renames_clashes(tmp_path):
    make_classes(tmp_path / "dataset", {"cats": 2, "dogs": 2})
    upload = tmp_path / "second" / "wrapper"
    put(upload / "Cats" / "cats_0.png")          # clashes with an existing name and folder case
    put(upload / "birds" / "b1.png")
    put(upload / "birds" / "b2.png")
    original = (tmp_path / "dataset" / "cats" / "cats_0.png").read_bytes()
    before = all_files(tmp_path)
    merge_into(tmp_path / "dataset", tmp_path / "second")
    assert (tmp_path / "dataset" / "cats" / "cats_0.png").read_bytes() == original
    added = set(all_files(tmp_path)) - set(before)
    assert added == {"dataset/cats/cats_0_1.png", "dataset/birds/b1.png", "dataset/birds/b2.png"}
    assert scan_folder(tmp_path / "dataset").counts() == {"birds": 2, "cats": 3, "dogs": 2}


def test_merge_single_class_uploads_build_a_dataset(tmp_path):
    first, second, dataset = tmp_path / "u1", tmp_path / "u2", tmp_path / "dataset"
    make_classes(first, {"cats": 2})
    make_classes(second, {"dogs": 2})
    merge_into(dataset, first)
    merge_into(dataset, second)
    assert scan_folder(dataset).classes == ["cats", "dogs"]


def test_merge_split_layouts(tmp_path):
    make_classes(tmp_path / "ds" / "train", {"a": 2, "b": 2})
    make_classes(tmp_path / "ds" / "val", {"a": 1, "b": 1})
    make_classes(tmp_path / "up" / "train", {"c": 2})
    make_classes(tmp_path / "up" / "validation", {"c": 1})
    merge_into(tmp_path / "ds", tmp_path / "up")
    index = scan_folder(tmp_path / "ds")
    assert Item("val/c/c_0.png", "c", "val") in index.items
    assert index.counts() == {"a": 3, "b": 3, "c": 3}


def test_merge_refuses_mixed_layouts(tmp_path):
    make_classes(tmp_path / "ds" / "train", {"a": 2})
    make_classes(tmp_path / "ds" / "val", {"a": 1})
    make_classes(tmp_path / "up", {"c": 2, "d": 2})
    with pytest.raises(IngestError, match="cannot merge: the dataset uses split-folders but the new upload uses class-folders"):
        merge_into(tmp_path / "ds", tmp_path / "up")


# ---------------------------------------------------------------------------------------------
# health report


def test_health_report_duplicates_tiny_grayscale_and_warnings(tmp_path):
    make_classes(tmp_path, {"big": 16, "small": 2})
    shutil.copy(tmp_path / "big" / "big_0.png", tmp_path / "big" / "copy.png")
    shutil.copy(tmp_path / "big" / "big_1.png", tmp_path / "small" / "relabelled.png")
    put(tmp_path / "big" / "tiny.png", png_bytes((16, 40)))
    put(tmp_path / "big" / "gray.png", png_bytes((40, 40), mode="L"))
    (tmp_path / "big" / "notes.txt").write_text("x")
    index = scan_folder(tmp_path)
    report = health_report(index)
    json.dumps(report)  # JSON-friendly
    assert report["class_counts"] == {"big": 19, "small": 3}
    assert report["duplicates"] == [["big/big_0.png", "big/copy.png"], ["big/big_1.png", "small/relabelled.png"]]
    assert report["duplicate_images"] == 2
    assert report["conflicting_labels"] == [["big/big_1.png", "small/relabelled.png"]]
    assert report["tiny_images"] == [{"path": "big/tiny.png", "width": 16, "height": 40}]
    assert report["grayscale"] == 1 and report["colour"] == 21
    assert sorted(map(tuple, report["image_sizes"])).count((32, 32)) == 20
    assert report["imbalance_ratio"] == pytest.approx(19 / 3, abs=1e-3)
    assert report["skipped"] == [{"path": "big/notes.txt", "reason": "not an image (.txt); supported types are .avif, .bmp, .gif, .heic, .heif, .jpeg, .jpg, .png, .tif, .tiff, .webp"}]
    w = report["warnings"]
    assert "class 'big' has 19 images; 20 or more are recommended" in w
    assert "class 'small' has 3 images; 20 or more are recommended" in w
    assert "imbalance ratio 6.3: consider class-weighted loss or collecting more of 'small'" in w
    assert "2 exact duplicate images — remove them so validation is honest" in w
    assert any(x.startswith("1 image is smaller than 32 px on a side") for x in w)
    assert any(x.startswith("1 of 22 checked images are grayscale") for x in w)
    assert any(x.startswith("1 group of identical images carries different labels") for x in w)
    assert report["leakage"] == [] and report["split_counts"] is None


def test_health_report_imbalance_ratio_eight(tmp_path):
    make_classes(tmp_path, {"x": 16, "y": 2})
    report = health_report(scan_folder(tmp_path))
    assert report["imbalance_ratio"] == 8.0
    assert "imbalance ratio 8.0: consider class-weighted loss or collecting more of 'y'" in report["warnings"]


def test_health_report_finds_train_val_leakage(tmp_path):
    make_classes(tmp_path / "train", {"a": 2, "b": 2})
    make_classes(tmp_path / "val", {"a": 1, "b": 1})
    shutil.copy(tmp_path / "train" / "a" / "a_0.png", tmp_path / "val" / "a" / "leak.png")
    index = scan_folder(tmp_path)
    report = health_report(index)
    assert [(g["train"], g["val"]) for g in report["leakage"]] == [(["train/a/a_0.png"], ["val/a/leak.png"])]
    assert report["split_counts"] == {"train": {"a": 2, "b": 2}, "val": {"a": 2, "b": 1}}
    assert "1 validation image also appears in train — remove the copies from one side so validation is honest" in report["warnings"]


def test_leakage_for_a_caller_made_split(tmp_path):
    make_classes(tmp_path, {"a": 3, "b": 2})
    shutil.copy(tmp_path / "a" / "a_0.png", tmp_path / "b" / "dup.png")
    index = scan_folder(tmp_path)
    groups = leakage(index, ["a/a_0.png", "a/a_1.png"], ["b/dup.png", "b/b_0.png"])
    assert [(g["train"], g["val"]) for g in groups] == [(["a/a_0.png"], ["b/dup.png"])]
    assert leakage(index, ["a/a_0.png", "b/dup.png"], ["a/a_1.png"]) == []


def test_health_report_sample_limit_caps_decoding(tmp_path):
    make_classes(tmp_path, {"a": 10, "b": 10})
    report = health_report(scan_folder(tmp_path), sample_limit=5)
    assert report["sampled"] == 5 and len(report["image_sizes"]) == 5
    assert report["total_images"] == 20


def test_item_rejects_unknown_split():
    with pytest.raises(ValueError, match="Item.split must be one of None, 'train', 'val'; got 'test'"):
        Item("a.png", "a", "test")
