"""Phone photos: the time from a folder of 12-megapixel JPEGs to a training-ready cache, decoded whole or reduced.

    python benchmarks/bench_photos.py               # 60 photos of 4032x3024
    python benchmarks/bench_photos.py --photos 20   # a quick look

Photos straight from a phone are 12 megapixels; the network sees 224 px. ``core.data.imageio.open_image(...,
min_side=...)`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale inside the decoder (Pillow's ``draft``) while its
shorter side stays at least twice the side the caller shrinks it to. This benchmark runs the app's own stages on
the same photos twice in one process, once as the code now runs and once with reduced decoding switched off (every
JPEG decoded whole, as before), each on a fresh workspace:

  scan      datasets.load_index(folder): every image opened and verified once (reduced to 32 px)
  health    ingest.health_report(index): sizes and grey check of a sample of images (reduced to 32 px)
  cache     datasets.ImageCache(all paths) at 256 px (EfficientNet-Lite0's resize): the trainer's decode-once cache

and prints each stage's seconds, the ratio whole / reduced, the mean difference of the cached pixels (grey levels
of 255), and the plan's per-image decoding estimate (``core.train.measure.decode_seconds``) next to what the cache
stage measured per image.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_photos(dest: Path, n: int, size: tuple[int, int] = (4032, 3024), seed: int = 0) -> Path:
    """``n`` distinct phone-sized JPEGs (quality 90) in two class folders: random crops of scikit-learn's two
    sample photos, scaled up to ``size`` with sensor-like noise so each file carries real detail."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    sources = [Image.fromarray(arr) for arr in load_sample_images().images]
    for k in range(n):
        name, img = ("china", "flower")[k % 2], sources[k % 2]
        w = int(img.width * rng.uniform(0.5, 0.75))
        h = w * size[1] // size[0]
        x, y = rng.randrange(img.width - w), rng.randrange(img.height - h)
        big = np.asarray(img.crop((x, y, x + w, y + h)).resize(size, Image.BICUBIC), dtype=np.int16)
        noisy = (big + nrng.integers(-6, 7, big.shape, dtype=np.int16)).clip(0, 255).astype(np.uint8)
        (dest / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(dest / name / f"{name}_{k:03d}.jpg", quality=90)
    return dest


def stages(folder: Path, home: Path) -> tuple[dict, object]:
    """Seconds of scan, health and cache on a fresh workspace; the cache (for comparing pixels)."""
    os.environ["TRANSFER_STUDIO_HOME"] = str(home)
    from core.config import RunConfig
    from core.data import datasets, ingest
    from core.models import backbones

    out = {}
    t0 = time.perf_counter()
    index = datasets.load_index(str(folder))
    out["scan"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ingest.health_report(index)
    out["health"] = time.perf_counter() - t0
    pre = backbones.preprocessing_for(RunConfig(data=str(folder)))
    paths = [str(Path(index.root) / it.path) for it in index.items]
    t0 = time.perf_counter()
    cache = datasets.ImageCache(paths, pre)
    out["cache"] = time.perf_counter() - t0
    return out, cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=60, help="how many 4032x3024 JPEGs to generate (default 60, at least 4)")
    a = ap.parse_args()
    if a.photos < 4:
        raise SystemExit("--photos must be at least 4 (two per class)")
    import numpy as np

    from bench_engine import machine
    from core.data import imageio
    from core.train import measure

    work = Path(tempfile.mkdtemp(prefix="ts-bench-photos-"))
    print(f"machine: {machine()}")
    t0 = time.perf_counter()
    folder = make_photos(work / "photos", a.photos)
    print(f"{a.photos} photos of 4032x3024 written in {time.perf_counter() - t0:.1f} s")
    os.environ["TRANSFER_STUDIO_HOME"] = str(work / "home-plan")
    estimate = measure.dataset_stats(str(folder))["decode_s"]  # the plan's figure (reduced, as the code runs)
    reduced, cache_r = stages(folder, work / "home-reduced")
    keep = imageio._reduce_decode
    imageio._reduce_decode = lambda im, side: None  # every JPEG decoded whole, as before reduced decoding
    try:
        whole, cache_w = stages(folder, work / "home-whole")
    finally:
        imageio._reduce_decode = keep
    print(f"{'stage':<8} {'whole s':>8} {'reduced s':>10} {'whole/reduced':>14}")
    for k in ("scan", "health", "cache"):
        print(f"{k:<8} {whole[k]:8.1f} {reduced[k]:10.1f} {whole[k] / reduced[k]:13.2f}x")
    tw, tr = sum(whole.values()), sum(reduced.values())
    print(f"{'total':<8} {tw:8.1f} {tr:10.1f} {tw / tr:13.2f}x")
    diff = np.abs(np.asarray(cache_w.array, dtype=np.int16) - np.asarray(cache_r.array, dtype=np.int16))
    print(f"cached 256-px squares: mean difference {diff.mean():.2f} grey levels of 255 (max {diff.max()})")
    print(f"plan's decoding estimate {estimate * 1000:.1f} ms per image; the cache stage measured "
          f"{reduced['cache'] / a.photos * 1000:.1f} ms per image")


if __name__ == "__main__":
    main()
