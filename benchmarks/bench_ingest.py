"""Ingestion of a large upload: wall time and peak memory for a generated N-image zip (default 20,000).

    python benchmarks/bench_ingest.py                 # 20,000 images, 10 classes
    python benchmarks/bench_ingest.py --images 2000   # a quick look

The zip is generated first (small JPEGs of varied sizes, every one different), then a child process
runs the app's ingestion path and reports, after each stage, the time it took and the peak resident
memory so far; the parent also reads the child's peak RSS from getrusage(RUSAGE_CHILDREN).

Stages (what a user's upload goes through):
  extract   datasets.resolve(zip): the streaming, limit-checked extraction into the workspace
  scan      datasets.load_index(zip): layout detection and every image opened once; writes the index cache
  rescan    datasets.load_index(zip) again: the same upload, answered from the index cache
  health    ingest.health_report(index, sample_limit=300): hashes all files, decodes a sample (as the Data page)
  decode    datasets.ImageCache(all paths) at 96 px: the trainer's decode-once cache (skip with --no-decode)

Target from issue 3: peak memory under 2 GB on a 2-core machine.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_PEAK_BYTES = 2 * 1024**3


def _peak_rss_bytes(who: int = resource.RUSAGE_SELF) -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    peak = resource.getrusage(who).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _mib(n: float) -> str:
    return f"{n / 1024**2:,.0f} MiB"


def make_zip(dest: Path, n_images: int, n_classes: int, seed: int = 0) -> Path:
    """Write a zip of `n_images` distinct JPEGs (64-256 px sides) spread over `n_classes` class folders."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    # A few hundred base pictures; each member re-encodes one with its own mark, size and quality,
    # which is much faster than drawing 20,000 pictures and still gives distinct files.
    bases = []
    for _ in range(300):
        w, h = rng.randrange(64, 257), rng.randrange(64, 257)
        noise = nrng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        bases.append(Image.fromarray(noise).resize((w, h), Image.BILINEAR))
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for i in range(n_images):
            im = bases[i % len(bases)].copy()
            if rng.random() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            draw = ImageDraw.Draw(im)
            x, y = rng.randrange(im.width - 8), rng.randrange(im.height - 8)
            draw.rectangle((x, y, x + rng.randrange(4, 24), y + rng.randrange(4, 24)),
                           fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=rng.randrange(70, 95))
            zf.writestr(f"dataset/class_{i % n_classes:02d}/img_{i:06d}.jpg", buf.getvalue())
    return dest


def child(zip_path: Path, home: Path, decode: bool) -> None:
    """Run the ingestion stages in this process and print one JSON line per stage."""
    os.environ["TRANSFER_STUDIO_HOME"] = str(home)
    sys.path.insert(0, str(REPO))
    from core.data import datasets
    from core.data import ingest
    from core.data.preprocess import Preprocessing

    def stage(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        print(json.dumps({"stage": name, "seconds": round(time.perf_counter() - t0, 2),
                          "peak_rss": _peak_rss_bytes()}), flush=True)
        return out

    print(json.dumps({"stage": "start", "seconds": 0, "peak_rss": _peak_rss_bytes()}), flush=True)
    root = stage("extract", lambda: datasets.resolve(zip_path))
    index = stage("scan", lambda: datasets.load_index(zip_path))
    again = stage("rescan", lambda: datasets.load_index(zip_path))
    assert again.content_hash == index.content_hash, "the cached index differs from the scan"
    report = stage("health", lambda: ingest.health_report(index, sample_limit=300))
    if decode:
        paths = [str(Path(index.root) / it.path) for it in index.items]
        stage("decode", lambda: datasets.ImageCache(paths, Preprocessing(resize_size=96, crop_size=96)))
    print(json.dumps({"stage": "end", "seconds": 0, "peak_rss": _peak_rss_bytes()}), flush=True)
    print(json.dumps({"summary": {"root": str(root), "images": len(index.items), "classes": len(index.classes),
                                  "skipped": len(index.skipped), "duplicates": report["duplicate_images"],
                                  "warnings": report["warnings"]}}), flush=True)


def main() -> int:
    """Generate the zip, ingest it in a child process, print times and peak memory."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--workdir", type=Path, default=None, help="where the zip and workspace go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir afterwards")
    ap.add_argument("--no-decode", dest="decode", action="store_false", help="skip the 96-px ImageCache stage")
    ap.add_argument("--child", nargs=2, metavar=("ZIP", "HOME"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.decode)
        return 0

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    zip_path = work / f"bench-{args.images}.zip"
    try:
        t0 = time.perf_counter()
        if not zip_path.exists():
            make_zip(zip_path, args.images, args.classes)
        print(f"zip: {args.images:,} images, {args.classes} classes, {_mib(zip_path.stat().st_size)} "
              f"on disk ({time.perf_counter() - t0:.1f} s to generate) at {zip_path}")
        print(f"machine: {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}")
        home = work / "home"
        shutil.rmtree(home, ignore_errors=True)  # a cold start: nothing extracted, scanned or cached yet
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(zip_path), str(home)]
        if not args.decode:
            cmd.append("--no-decode")
        t1 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        print(f"{'stage':<8} {'seconds':>8} {'peak RSS so far':>16}")
        summary = None
        child_peak = 0
        for line in proc.stdout:
            rec = json.loads(line)
            if "summary" in rec:
                summary = rec["summary"]
                continue
            label = "imports" if rec["stage"] == "start" else rec["stage"]  # torch alone is a few hundred MiB
            if rec["stage"] != "end":
                print(f"{label:<8} {rec['seconds']:>8.2f} {_mib(rec['peak_rss']):>16}")
            child_peak = rec["peak_rss"]
        rc = proc.wait()
        wall = time.perf_counter() - t1
        peak = _peak_rss_bytes(resource.RUSAGE_CHILDREN)
        if rc != 0 or summary is None:
            print(f"ingestion child failed with exit code {rc}", file=sys.stderr)
            return 1
        print(f"result: {summary['images']:,} images in {summary['classes']} classes, {summary['skipped']} skipped, "
              f"{summary['duplicates']} duplicates; {len(summary['warnings'])} warnings")
        verdict = "under" if peak < TARGET_PEAK_BYTES else "OVER"
        print(f"total: {wall:.1f} s wall (child incl. start-up); peak RSS of the child {_mib(child_peak)} "
              f"measured inside it, {_mib(peak)} from getrusage(RUSAGE_CHILDREN) (which also counts the fork "
              f"before exec and interpreter exit) — {verdict} the 2 GB target")
        return 0 if peak < TARGET_PEAK_BYTES else 2
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
