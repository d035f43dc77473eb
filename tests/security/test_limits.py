"""Memory and disk bounds that hold under attack: decoded bytes, decode budget, zip bombs, quota, caches."""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import edits, imageio, ingest, records
from core.data.imageio import ImageError, open_image
from core.storage import cache, owners, quota

ROOT = Path(__file__).resolve().parents[2]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(width: int, height: int, depth: int, colour_type: int) -> bytes:
    """A PNG whose header declares a size but whose pixel data is a few bytes: decoding it would fail."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def _png_bytes(size=(16, 16), colour=(90, 10, 10), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, "PNG")
    return buf.getvalue()


# --- images ----------------------------------------------------------------------------------------

def test_decoded_bytes_are_capped_from_the_header_before_decoding():
    # 8200 x 8200 is under the pixel limit, but RGBA at that size decodes to 269 MB > 256 MiB.
    with pytest.raises(ImageError, match=r"8200x8200 in mode RGBA, which decodes to 257 MB, above the per-image limit of 256 MB") as err:
        open_image(png_header(8200, 8200, 16, 6))
    assert "TRANSFER_STUDIO_MAX_IMAGE_MB" in str(err.value) and "truncated" not in str(err.value)


def test_the_image_cap_follows_its_environment_variable(monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_MAX_IMAGE_MB", "1")
    with pytest.raises(ImageError, match="above the per-image limit of 1 MB"):
        open_image(_png_bytes((600, 600), mode="RGBA", colour=(1, 2, 3, 4)))  # 1.4 MB decoded
    assert open_image(_png_bytes((500, 500))).size == (500, 500)  # 0.75 MB
    monkeypatch.setenv("TRANSFER_STUDIO_MAX_IMAGE_MB", "lots")
    with pytest.raises(ValueError, match="must be a positive number of megabytes, got 'lots'"):
        open_image(_png_bytes())


def test_16_bit_conversion_is_exact_without_a_float_copy():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, size=(37, 2900), dtype=np.uint16)  # > one 1 MiB chunk of rows
    values[0, :4] = [0, 128, 129, 65535]
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")
    out = np.asarray(open_image(buf.getvalue()))[..., 0]
    assert np.array_equal(out, np.rint(values / 257.0).astype(np.uint8))
    assert list(out[0, :4]) == [0, 0, 1, 255]


def test_a_large_16_bit_png_decodes_in_bounded_memory(tmp_path):
    # 36 MP of 16-bit grey: the old float64 path peaked near 24 bytes a pixel (~860 MB); now about 7.
    path = tmp_path / "wide16.png"
    arr = np.zeros((6000, 6000), dtype=np.uint16)
    arr[::5, ::3] = 50000
    Image.fromarray(arr).save(path, compress_level=1)
    del arr
    code = textwrap.dedent(f"""
        import resource, json
        from core.data.imageio import open_image
        from PIL import Image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        im = open_image({str(path)!r})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"delta_kb": after - before, "size": im.size, "px": im.getpixel((0, 0))}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["size"] == [6000, 6000] and res["px"] == [195, 195, 195]
    pixels = 6000 * 6000
    assert res["delta_kb"] * 1024 < 10 * pixels, f"peak grew {res['delta_kb'] / 1024:.0f} MB for {pixels:,} px"


def test_decodes_wait_for_the_byte_budget_and_one_too_big_for_it_is_refused(monkeypatch):
    data = _png_bytes((400, 400))
    cost = imageio._peak_cost("RGB", 400, 400)
    monkeypatch.setenv("TRANSFER_STUDIO_DECODE_BUDGET_MB", str(cost * 1.5 / 1024**2))
    in_flight, most = [0], [0]
    real_load = imageio._load_fully
    lock = threading.Lock()

    def slow_load(im, name):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.05)
        real_load(im, name)
        with lock:
            in_flight[0] -= 1

    monkeypatch.setattr(imageio, "_load_fully", slow_load)
    threads = [threading.Thread(target=open_image, args=(data,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1, "two decodes ran at once although the budget holds one"
    assert imageio._BUDGET.used == 0
    with pytest.raises(ImageError, match="more than the decode budget"):
        open_image(_png_bytes((900, 900)))


def test_ingestion_decodes_with_two_workers_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("TRANSFER_STUDIO_DECODE_WORKERS", raising=False)
    assert records._workers() == min(2, os.cpu_count() or 1)
    monkeypatch.setenv("TRANSFER_STUDIO_DECODE_WORKERS", "1")
    assert records._workers() == 1
    monkeypatch.setenv("TRANSFER_STUDIO_DECODE_WORKERS", "many")
    with pytest.raises(ValueError, match="TRANSFER_STUDIO_DECODE_WORKERS must be a whole number"):
        records._workers()


# --- zip bombs -------------------------------------------------------------------------------------

def _bomb(path: Path, members: int, member_bytes: int) -> Path:
    zeros = b"\0" * member_bytes
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("cats/real.png", _png_bytes())
        for i in range(members):
            z.writestr(f"cats/{i:04d}.bmp", zeros)
    return path


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def test_a_bomb_of_small_members_is_refused_at_its_first_member(tmp_path):
    bomb = _bomb(tmp_path / "bomb.zip", 300, 1 << 20)  # 300 MiB from ~0.3 MB
    assert bomb.stat().st_size < 400_000
    with pytest.raises(ingest.IngestError, match=r"'cats/0000.bmp' expands [\d,]+x .* zip bomb"):
        ingest.extract_archive(bomb, tmp_path / "dest")
    assert _bytes_under(tmp_path / "dest") < 1 << 20


def test_many_members_each_under_the_member_ratio_are_caught_by_the_archive_ratio(tmp_path):
    bomb = _bomb(tmp_path / "bomb.zip", 400, 150 << 10)  # each 150 KiB from ~200 bytes; 60 MiB in all
    with pytest.raises(ingest.IngestError, match=r"the archive bomb.zip expands [\d,]+x"):
        ingest.extract_archive(bomb, tmp_path / "dest")
    assert _bytes_under(tmp_path / "dest") == 0, "refused from the headers, before writing"


def test_a_small_flat_icon_is_not_mistaken_for_a_bomb(tmp_path):
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for cls in ("a", "b"):
            for i in range(2):
                z.writestr(f"{cls}/{i}.png", _png_bytes(colour=(i, 9, 9)))
        z.writestr("a/flat.bmp", b"\0" * 40_000)  # compresses ~500x, but only 40 kB
    ingest.extract_archive(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "a" / "flat.bmp").stat().st_size == 40_000


# --- disk: quota, rejected uploads, delete, caches ----------------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch):
    """A workspace of its own, so usage figures are this test's alone."""
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _dataset_zip(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for cls in ("cats", "dogs"):
            for i in range(2):
                z.writestr(f"{cls}/{i}.png", _png_bytes(colour=(i, 50, 0)))
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return path


def test_an_upload_past_the_quota_is_refused_with_usage_limit_and_what_to_delete(home, tmp_path, monkeypatch):
    edits.import_zip(_dataset_zip(tmp_path / "a.zip"), "first")
    used = sum(quota.usage().values())
    noise = np.random.default_rng(1).bytes(3 << 20)  # incompressible, so the zip ratio does not refuse it
    monkeypatch.setenv("TRANSFER_STUDIO_QUOTA_MB", str((used + (1 << 20)) / 1024**2))
    with pytest.raises(quota.QuotaExceeded) as err:
        edits.import_zip(_dataset_zip(tmp_path / "b.zip", {"cats/noise.bmp": noise}), "second")
    msg = str(err.value)
    assert "disk quota reached" in msg and "datasets" in msg and "delete datasets" in msg, msg
    assert "TRANSFER_STUDIO_QUOTA_MB" in msg
    assert edits.list_datasets() == ["first"]
    assert _bytes_under(home / "uploads") == 0, "the refused upload's files were left behind"
    monkeypatch.setenv("TRANSFER_STUDIO_QUOTA_MB", "0")  # 0 turns the quota off
    edits.import_zip(_dataset_zip(tmp_path / "b.zip", {"cats/noise.bmp": noise}), "second")


def test_usage_is_counted_per_owner(home, tmp_path):
    edits.import_zip(_dataset_zip(tmp_path / "a.zip"), "alice-data", owner="alice")
    edits.import_zip(_dataset_zip(tmp_path / "b.zip", {"dogs/big.bin.png": b"x" * 50_000}), "bob-data", owner="bob")
    alice, bob = quota.usage("alice")["datasets"], quota.usage("bob")["datasets"]
    assert 0 < alice < bob and bob - alice > 49_000
    assert owners.owner_of(edits.root() / "bob-data") == "bob"


def test_a_rejected_upload_is_deleted_at_once_and_a_kept_one_goes_with_its_dataset(home, tmp_path):
    bad = io.BytesIO(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ValueError):
        edits.import_upload(bad, "bad.zip", "bad")
    with pytest.raises(ingest.IngestError, match="contains no images"):
        edits.import_upload(io.BytesIO(_zip_of({"notes.txt": b"hello"})), "text.zip", "text")
    assert list((home / "uploads").iterdir()) == []
    name, _ = edits.import_upload(_dataset_zip(tmp_path / "ok.zip").open("rb"), "ok.zip", "good")
    kept = list((home / "uploads").iterdir())
    assert [p.name.rsplit("--", 1)[0] for p in kept] == ["good"]
    edits.delete_dataset(name)
    assert edits.list_datasets() == [] and list((home / "uploads").iterdir()) == []


def _zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_delete_dataset_is_refused_while_a_run_trains_on_it_and_never_deletes_runs(home, tmp_path):
    from core.config import RunConfig
    from core.storage import runs

    name, _ = edits.import_zip(_dataset_zip(tmp_path / "a.zip"), "busy")
    run = runs.create(RunConfig(data=str(edits.dataset_dir(name))))
    code = f"from core.storage import locks\nimport time\nwith locks.hold({str(run.path)!r}):\n" \
           f"    print('held', flush=True)\n    time.sleep(600)\n"
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=f"run {run.id} is training on it .*process {child.pid}"):
            edits.delete_dataset(name)
        assert edits.dataset_dir(name).is_dir()
    finally:
        child.kill()
        child.wait()
    edits.delete_dataset(name)
    assert name not in edits.list_datasets() and (run.path / "config.json").exists()


def test_caches_are_pruned_least_recently_used_first(home, monkeypatch):
    folder = home / "cache"
    folder.mkdir(parents=True)
    now = time.time()
    for i, name in enumerate(["old.npy", "mid.npy", "new.npy"]):
        (folder / name).write_bytes(b"\0" * (400 << 10))
        os.utime(folder / name, (now - 100 + i * 10, now - 100 + i * 10))
    cache.touch(folder / "old.npy")  # read just now: the least recently used is now mid.npy
    monkeypatch.setenv("TRANSFER_STUDIO_CACHE_MB", "0.9")
    freed = cache.prune()
    assert freed == 400 << 10 and sorted(p.name for p in folder.iterdir()) == ["new.npy", "old.npy"]
    assert cache.prune(limit=1, keep=(folder / "new.npy",)) == 400 << 10
    assert [p.name for p in folder.iterdir()] == ["new.npy"]


def test_a_folder_upload_is_spooled_to_disk_not_copied_in_memory(home):
    pngs = {f"top/{c}/{i}.png": _png_bytes(colour=(i, 7, 7)) for c in ("cats", "dogs") for i in range(2)}
    files = [(name, io.BytesIO(data)) for name, data in pngs.items()]
    files.append(("top/cats/huge.png", io.BytesIO(np.random.default_rng(2).bytes(16 << 20))))  # not an image
    tracemalloc.start()
    try:
        name, skipped = edits.import_files(iter(files), "folder-up")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert edits.class_counts(name) == {"cats": 3, "dogs": 2}
    assert peak < 8 << 20, f"peak Python allocations {peak / 2**20:.1f} MiB for a 16 MiB upload"
    assert [p for p in (home / "uploads").iterdir()] == [], "the spooled zip was left behind"
