"""Peak memory and disk of the server under hostile uploads (issue "Safe to share").

    python benchmarks/bench_security.py

Each case runs in a child process that calls the functions the app's upload path calls (the Data
page: core.data.edits.import_upload / import_files, which extract, scan and decode with
core.data.ingest / core.data.imageio), then reports its peak RSS (getrusage ru_maxrss) and the
RSS it had before the upload. "before" rows run the code of the last commit (``git show HEAD:...``)
the same way, when git is available; otherwise the theoretical cost is printed instead.

Cases:
  png16     a zip with a 16-bit greyscale PNG of 9459 x 9459 (just under the 89,478,485-pixel limit,
            ~200 kB on disk) and a second class: decoded while the upload is checked
  bomb      a 0.3 MB zip of 300 members of 1 MiB of zeros (300 MiB): bytes written, where it is refused
  folder    a 64 MiB folder upload (file objects, as Streamlit hands them over): peak RSS above the upload
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIDE = 9459  # 9459^2 = 89,472,681 pixels, under Pillow's (and the app's) 89,478,485


def _rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024) / 1024**2


def _png(colour=(90, 10, 10), size=(32, 32)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


# --- inputs ------------------------------------------------------------------------------------------

def make_png16_zip(dest: Path) -> Path:
    import numpy as np
    from PIL import Image

    arr = np.zeros((SIDE, SIDE), dtype=np.uint16)
    arr[::7, ::5] = 40000
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=9)
    del arr
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as z:
        z.writestr("grey/huge16.png", buf.getvalue())
        z.writestr("grey/small.png", _png((1, 1, 1)))
        for i in range(2):
            z.writestr(f"red/{i}.png", _png((200, i, 0)))
    return dest


def make_bomb(dest: Path, members: int = 300, member_bytes: int = 1 << 20) -> Path:
    zeros = b"\0" * member_bytes
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for cls in ("a", "b"):
            for i in range(2):
                z.writestr(f"{cls}/{i}.png", _png((i, 9, 9)))
        for i in range(members):
            z.writestr(f"a/{i:04d}.bmp", zeros)
    return dest


def _folder_files(total_mib: int = 64):
    import numpy as np

    files = [(f"top/{c}/{i}.png", io.BytesIO(_png((i, 3 * i % 256, 7)))) for c in ("cats", "dogs") for i in range(20)]
    rng = np.random.default_rng(0)
    for i in range(total_mib // 8):  # large photos' worth of bytes (noise: not decodable, skipped with a reason)
        files.append((f"top/cats/big{i}.png", io.BytesIO(rng.bytes(8 << 20))))
    return files


# --- child side --------------------------------------------------------------------------------------

BEFORE = "e74b0f16d9dca3406b25bf1592f3e61fc1bde455"  # the last commit before the input-safety work


def _load_head(module: str, path: str, tmp: Path):
    """The code before the input-safety work (commit BEFORE), imported under another name (None without git)."""
    try:
        src = subprocess.run(["git", "show", f"{BEFORE}:{path}"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    import importlib.util

    file = tmp / f"{module}.py"
    file.write_text(src)
    spec = importlib.util.spec_from_file_location(module, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def child(case: str, variant: str, work: Path) -> dict:
    sys.path.insert(0, str(REPO))
    os.environ["TRANSFER_STUDIO_HOME"] = str(work / "home")
    from core.data import edits, ingest, layouts

    out: dict = {"case": case, "variant": variant}
    if case == "png16":
        if variant == "before":
            head = _load_head("imageio_head", "core/data/imageio.py", work)
            if head is None:
                return {**out, "skipped": "git not available"}
            layouts.open_image = head.open_image  # the scan's decoder, as it was
        out["baseline_mib"] = _rss_mib()
        t0 = time.perf_counter()
        with open(work / "png16.zip", "rb") as f:
            name, skipped = edits.import_upload(f, "png16.zip", f"png16-{variant}")
        out["seconds"] = time.perf_counter() - t0
        out["outcome"] = f"imported '{name}', {edits.class_counts(name)}, {len(skipped)} skipped"
    elif case == "bomb":
        dest = work / f"bomb-{variant}"
        extract = ingest.extract_archive
        if variant == "before":
            head = _load_head("ingest_head", "core/data/ingest.py", work)
            if head is None:
                return {**out, "skipped": "git not available"}
            extract = head.extract_archive
        out["baseline_mib"] = _rss_mib()
        t0 = time.perf_counter()
        try:  # extraction alone, so the bytes it wrote can be counted before anything cleans up
            extract(work / "bomb.zip", dest)
            out["outcome"] = "extracted (not refused)"
        except ValueError as e:
            out["outcome"] = f"refused: {str(e)[:110]}"
        out["seconds"] = time.perf_counter() - t0
        out["written_mib"] = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) / 1024**2
        with open(work / "bomb.zip", "rb") as f:  # and the whole upload path: nothing may stay behind
            try:
                (edits.import_upload if variant == "after" else lambda *a: None)(f, "bomb.zip", "bomb")
            except ValueError:
                pass
        out["left_in_workspace_mib"] = sum(p.stat().st_size for p in (work / "home").rglob("*") if p.is_file()) / 1024**2
    elif case == "folder":
        files = _folder_files()
        out["upload_mib"] = sum(len(f.getbuffer()) for _, f in files) / 1024**2
        out["baseline_mib"] = _rss_mib()  # the upload is in memory already, as in Streamlit
        t0 = time.perf_counter()
        if variant == "before":
            head = _load_head("edits_head", "core/data/edits.py", work)
            if head is None:
                return {**out, "skipped": "git not available"}
            name, _ = head.import_files([(n, f.getvalue()) for n, f in files], "folder-before")  # the old page's call
        else:
            name, _ = edits.import_files(((n, f) for n, f in files), "folder-after")  # the page's call now
        out["seconds"] = time.perf_counter() - t0
        out["outcome"] = f"imported '{name}', {edits.class_counts(name)}"
    out["peak_mib"] = _rss_mib()
    return out


# --- parent side -------------------------------------------------------------------------------------

def run_case(case: str, variant: str, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", case, variant, str(work)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"case": case, "variant": variant, "error": (res.stderr or res.stdout)[-600:]}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=3, metavar=("CASE", "VARIANT", "WORK"), help=argparse.SUPPRESS)
    ap.add_argument("--make", metavar="WORK", help=argparse.SUPPRESS)
    ap.add_argument("--cases", default="png16,bomb,folder")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], Path(args.child[2]))))
        return
    if args.make:
        make_png16_zip(Path(args.make) / "png16.zip")
        make_bomb(Path(args.make) / "bomb.zip")
        return
    with tempfile.TemporaryDirectory(prefix="bench-security-") as tmp:
        work = Path(tmp)
        # Inputs are made in a child: Linux carries a parent's peak RSS into ru_maxrss of the children it
        # starts (vfork + exec), so this process must stay small for the children's figures to mean anything.
        subprocess.run([sys.executable, __file__, "--make", str(work)], check=True, timeout=600)
        print(f"inputs: png16.zip {(work / 'png16.zip').stat().st_size / 1e3:,.0f} kB "
              f"({SIDE}x{SIDE} = {SIDE * SIDE:,} px, 16-bit grey); bomb.zip {(work / 'bomb.zip').stat().st_size / 1e3:,.0f} kB "
              f"(300 x 1 MiB of zeros)")
        rows = {}
        for case in args.cases.split(","):
            for variant in ("before", "after"):
                sub = work / f"{case}-{variant}"
                sub.mkdir()
                for name in ("png16.zip", "bomb.zip"):
                    os.link(work / name, sub / name)
                rows[case, variant] = r = run_case(case, variant, sub)
                print(json.dumps(r))
        print()
        _summary(rows)


def _summary(rows: dict) -> None:
    def extra(case, variant):
        r = rows.get((case, variant), {})
        return r["peak_mib"] - r["baseline_mib"] if "peak_mib" in r else None

    px = SIDE * SIDE
    b, a = extra("png16", "before"), extra("png16", "after")
    if a is not None:
        theory = px * 8 * 3 / 1024**2  # three float64 copies: astype, / 257, rint
        print(f"16-bit PNG just under the pixel limit: peak RSS +{a:,.0f} MiB now"
              + (f" vs +{b:,.0f} MiB at HEAD ({b / a:.1f}x less)" if b else "")
              + f"; the float64 path alone costs {theory:,.0f} MiB in theory ({a / px * 1024**2:.1f} bytes/pixel now)")
    for variant in ("before", "after"):
        r = rows.get(("bomb", variant))
        if r and "written_mib" in r:
            print(f"zip bomb, {variant:6}: wrote {r['written_mib']:,.1f} MiB, {r['outcome']}"
                  + (f"; left in the workspace {r['left_in_workspace_mib']:.1f} MiB" if variant == "after" else ""))
    b, a = extra("folder", "before"), extra("folder", "after")
    up = rows.get(("folder", "after"), {}).get("upload_mib")
    if a is not None:
        print(f"folder upload of {up:,.0f} MiB: peak RSS +{a:,.0f} MiB above the upload now"
              + (f" vs +{b:,.0f} MiB at HEAD" if b is not None else ""))


if __name__ == "__main__":
    main()
