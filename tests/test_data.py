"""core/datasets.py: samples, zip resolution, the index cache, splits, the decode-once cache, eval preprocessing."""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import zip_folder
from core.data import datasets
from core.data import ingest, layouts
from core.data.preprocess import Preprocessing
from core.data.imageio import open_image


def counting(monkeypatch, module, name: str) -> Counter:
    """Wrap module.name so that each call is counted (and still performed)."""
    calls: Counter = Counter()
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls[name] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def copy_classes(src: Path, dest: Path, per_class: int) -> Path:
    """A fresh folder with the first `per_class` images of each class of `src`."""
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (dest / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:per_class]:
            shutil.copy2(f, dest / cls.name / f.name)
    return dest


# --- samples ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,classes,side", [
    ("digits", [str(d) for d in range(10)], 64),
    ("shapes", ["circle", "square", "triangle"], 96),
])
def test_make_sample_writes_the_expected_classes_and_counts(tmp_path, name, classes, side):
    root = datasets.make_sample(name, tmp_path / name, per_class=5)
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert found == sorted(classes)
    for cls in classes:
        files = sorted((root / cls).glob("*.png"))
        assert len(files) == 5
        assert Image.open(files[0]).size == (side, side)
    with pytest.raises(ValueError, match="unknown sample 'cats'; choose one of digits, shapes"):
        datasets.make_sample("cats", tmp_path / "cats")


# --- zips: extracted once ---------------------------------------------------------------------

def test_resolve_extracts_a_zip_once_and_reuses_it_for_the_same_bytes(tmp_path, shapes_dir, monkeypatch):
    first = zip_folder(shapes_dir, tmp_path / "shapes.zip", top="shapes")
    calls = counting(monkeypatch, ingest, "extract_archive")
    a = datasets.resolve(first)
    assert calls["extract_archive"] == 1
    assert sorted(p.name for p in (a / "shapes").iterdir()) == ["circle", "square", "triangle"]
    renamed = tmp_path / "other-name.zip"
    shutil.copy(first, renamed)
    b = datasets.resolve(renamed)
    assert calls["extract_archive"] == 1  # same bytes under another name: no second extraction
    assert a == b and (a / ".complete").exists()
    # different bytes get their own folder
    other = zip_folder(shapes_dir / "circle", tmp_path / "circles.zip", top="circle")
    c = datasets.resolve(other)
    assert c != a and calls["extract_archive"] == 2
    assert sorted(p.name for p in (c / "circle").iterdir()) == sorted(p.name for p in (shapes_dir / "circle").iterdir())


def test_resolve_names_the_accepted_sources_when_the_path_is_missing(tmp_path):
    with pytest.raises(ValueError, match="does not exist; give a folder of class folders, a .zip"):
        datasets.resolve(tmp_path / "nope.zip")


# --- the index cache --------------------------------------------------------------------------

def test_load_index_scans_a_folder_once_until_its_files_change(tmp_path, shapes_dir, monkeypatch):
    root = copy_classes(shapes_dir, tmp_path / "ds", per_class=4)
    calls = counting(monkeypatch, layouts, "open_image")
    first = datasets.load_index(root)
    assert calls["open_image"] == 12 and len(first.items) == 12
    second = datasets.load_index(root)
    assert calls["open_image"] == 12  # nothing decoded the second time
    assert second.to_dict() == first.to_dict()

    # a new image invalidates the cache: the folder is scanned again and the image shows up
    shutil.copy(shapes_dir / "circle" / "circle_0009.png", root / "circle" / "new.png")
    third = datasets.load_index(root)
    assert calls["open_image"] == 12 + 13
    assert len(third.items) == 13 and third.content_hash != first.content_hash


def test_load_index_cache_notices_a_replaced_file_of_the_same_name(tmp_path, shapes_dir, monkeypatch):
    root = copy_classes(shapes_dir, tmp_path / "ds", per_class=3)
    before = datasets.load_index(root)
    target = root / "square" / sorted(p.name for p in (root / "square").iterdir())[0]
    target.write_bytes(b"not an image any more")
    after = datasets.load_index(root)
    assert len(after.items) == len(before.items) - 1
    assert any(s.path.endswith(target.name) for s in after.skipped)


def test_load_index_of_a_zip_reuses_the_cache_and_reports_only_the_users_files(tmp_path, shapes_dir, monkeypatch):
    z = zip_folder(shapes_dir, tmp_path / "upload.zip")
    with __import__("zipfile").ZipFile(z, "a") as zf:
        zf.writestr("__MACOSX/circle/._circle_0000.png", b"meta")
        zf.writestr("notes.txt", b"hello")
    calls = counting(monkeypatch, layouts, "open_image")
    first = datasets.load_index(z)
    n = calls["open_image"]
    assert n == 30 and len(first.items) == 30
    second = datasets.load_index(z)
    assert calls["open_image"] == n
    assert second.to_dict() == first.to_dict()
    skipped = {Path(s.path).name for s in second.skipped}
    assert "._circle_0000.png" in skipped and "notes.txt" in skipped
    assert not skipped & {".complete", ".skipped.json"}  # the app's own bookkeeping is not the user's problem


# --- splits -----------------------------------------------------------------------------------

def test_split_is_stratified_and_deterministic_per_seed(digits_dir):
    index = datasets.load_index(digits_dir)
    a = datasets.split(index, 0.25, seed=0)
    b = datasets.split(index, 0.25, seed=0)
    c = datasets.split(index, 0.25, seed=1)
    assert a == b
    assert {p for p, _ in a.val} != {p for p, _ in c.val}
    assert a.classes == [str(d) for d in range(10)]
    # 12 images per class, a quarter held out: exactly 3 of each class in val, 9 in train
    assert Counter(y for _, y in a.val) == {y: 3 for y in range(10)}
    assert Counter(y for _, y in a.train) == {y: 9 for y in range(10)}
    every = {p for p, _ in a.train} | {p for p, _ in a.val}
    assert len(every) == 120 and not {p for p, _ in a.train} & {p for p, _ in a.val}
    for path, y in a.train + a.val:
        assert Path(path).is_absolute() and Path(path).parent.name == a.classes[y]


def test_split_uses_the_datas_own_train_and_val_folders(tmp_path, shapes_dir):
    root = tmp_path / "ds"
    copy_classes(shapes_dir, root / "train", per_class=6)
    (root / "valid").mkdir()
    for cls in ("circle", "square", "triangle"):
        (root / "valid" / cls).mkdir()
        for f in sorted((shapes_dir / cls).iterdir())[6:8]:
            shutil.copy(f, root / "valid" / cls / f.name)
    index = datasets.load_index(root)
    for seed in (0, 1):
        s = datasets.split(index, 0.5, seed=seed)  # val_fraction is ignored when the data has its own split
        assert len(s.train) == 18 and len(s.val) == 6
        assert all("/train/" in p for p, _ in s.train)
        assert all("/valid/" in p for p, _ in s.val)


def test_split_refuses_too_few_images_with_a_remedy(tmp_path, shapes_dir):
    root = copy_classes(shapes_dir, tmp_path / "ds", per_class=2)
    index = datasets.load_index(root)
    with pytest.raises(ValueError, match=r"6 images are too few to hold out 5 for validation and still train on "
                                         r"every one of the 3 classes; add images or lower val_fraction"):
        datasets.split(index, 0.9, seed=0)
    ok = datasets.split(index, 0.5, seed=0)  # 3 held out: one per class
    assert Counter(y for _, y in ok.val) == {0: 1, 1: 1, 2: 1}


# --- decode once ------------------------------------------------------------------------------

def test_image_cache_decodes_each_image_once_and_matches_to_square(tmp_path, shapes_dir, monkeypatch):
    pre = Preprocessing(resize_size=40, crop_size=32)
    paths = [str(p) for p in sorted(shapes_dir.rglob("*.png"))[:7]]
    calls = counting(monkeypatch, datasets, "open_image")
    cache = datasets.ImageCache(paths, pre)
    assert calls["open_image"] == 7
    again = datasets.ImageCache(paths, pre)
    assert calls["open_image"] == 7  # the second construction reads the memmap, decodes nothing
    assert again.file == cache.file
    for p in paths:
        got = again.get(p)
        assert got.dtype == torch.uint8 and tuple(got.shape) == (3, 40, 40)
        assert np.array_equal(got.permute(1, 2, 0).numpy(), datasets.to_square(open_image(p), pre))
    # another preprocessing is another cache
    datasets.ImageCache(paths, Preprocessing(resize_size=36, crop_size=32))
    assert calls["open_image"] == 14


def test_to_square_crops_the_centre_of_a_non_square_image():
    pre = Preprocessing(resize_size=20, crop_size=16)
    arr = np.zeros((20, 60, 3), dtype=np.uint8)
    arr[:, 20:40] = 255  # a white middle third: exactly what survives the centre crop
    out = datasets.to_square(Image.fromarray(arr), pre)
    assert out.shape == (20, 20, 3)
    assert out.min() == 255


def test_preprocess_images_equals_the_validation_path_exactly(shapes_dir, tmp_path):
    pre = Preprocessing(resize_size=72, crop_size=64, interpolation="bicubic")
    # and a photo-sized JPEG, which both paths decode reduced (core.data.imageio, min_side): a prediction sees
    # the pixels validation saw
    noisy = np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "photo.jpg", quality=85)
    paths = [str(p) for p in sorted(shapes_dir.rglob("*.png"))[::6]] + [str(tmp_path / "photo.jpg")]
    cache = datasets.ImageCache(paths, pre)
    ds = datasets.CachedDataset([(p, 0) for p in paths], cache, datasets.eval_transform(pre))
    val_batch = datasets.normalize(torch.stack([ds[i][0] for i in range(len(ds))]), pre)
    direct = datasets.preprocess_images([open_image(p, min_side=pre.resize_size) for p in paths], pre)
    assert direct.shape == (len(paths), 3, 64, 64) and direct.dtype == torch.float32
    assert torch.equal(direct, val_batch)
    # and the normalisation really uses the backbone's mean/std
    assert abs(float(direct.mean())) < 5 and float(direct.std()) > 0.1


def test_image_cache_decodes_afresh_when_an_image_is_edited_in_place(tmp_path):
    pre = Preprocessing(resize_size=24, crop_size=16)
    path = tmp_path / "x.png"
    Image.new("RGB", (30, 30), (10, 200, 30)).save(path)
    before = datasets.ImageCache([str(path)], pre).get(str(path))
    Image.new("RGB", (30, 30), (250, 0, 0)).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # coarse-mtime filesystems
    after = datasets.ImageCache([str(path)], pre).get(str(path))
    assert before[:, 0, 0].tolist() == [10, 200, 30]
    assert after[:, 0, 0].tolist() == [250, 0, 0]
