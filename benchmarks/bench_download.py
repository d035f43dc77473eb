"""How much server memory does downloading a large model cost? New link route vs the old download button.

Writes a file of random bytes (default 300 MiB, a VGG-16 export is about 530 MB) where the Export page
looks for a run's ONNX export, then downloads it twice with headless Chromium, sampling the server's
resident memory (/proc/<pid>/status VmRSS, every 5 ms):

  new  the real app (`streamlit run streamlit_app.py`): the Export page's link, GET /download/<token>,
       streamed from disk by core.storage.downloads
  old  what the Export page did before (commit f8a2bc4): st.download_button with deferred data
       (a callable that reads the file when clicked), in a one-button script on its own server

Prints each server's peak RSS growth during the download and what it still holds 5 s later.

    python benchmarks/bench_download.py [--mb 300]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MiB = 1 << 20


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Sampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, _rss(pid), threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.peak = max(self.peak, _rss(self.pid))
            time.sleep(0.005)


def _serve(script: Path, home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = _port()
    env = {**os.environ, "TRANSFER_STUDIO_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
                             "--server.headless", "true", "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"],
                            cwd=script.parent, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(180):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server for {script.name} did not start:\n{log.read_text()}")


def _download(browser, proc, url: str, ready_text: str, click, tmp: Path) -> dict:
    """Open ``url``, wait for ``ready_text``, settle, click, and measure the server while Chromium downloads."""
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(300_000)
    got = []
    page.on("download", lambda d: got.append(d))
    context.on("page", lambda tab: tab.on("download", lambda d: got.append(d)))
    page.goto(url)
    page.get_by_text(ready_text).first.wait_for()
    time.sleep(3)  # let the page's script finish and the server settle
    base = _rss(proc.pid)
    sampler = Sampler(proc.pid)
    sampler.start()
    t0 = time.perf_counter()
    click(page)
    while not got:
        page.wait_for_timeout(50)
    path = Path(got[0].path())  # blocks until the download has finished
    seconds = time.perf_counter() - t0
    time.sleep(5)
    held = _rss(proc.pid)
    sampler.stopped.set()
    sampler.join()
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            sha.update(chunk)
    context.close()
    return {"base": base, "peak": sampler.peak - base, "held": held - base, "s": seconds, "sha": sha.hexdigest()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=300, help="size of the file in MiB (default 300)")
    args = ap.parse_args()
    if not CHROMIUM:
        raise SystemExit("needs Chromium (apt-get install chromium) to click the downloads like a user")
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-download-"))
    home = tmp / "home"
    os.environ["TRANSFER_STUDIO_HOME"] = str(home)
    try:
        from core.results import formats
        from core.config import RunConfig
        from core.data.datasets import make_sample
        from core.techniques import fit

        shapes = make_sample("shapes", tmp / "shapes", per_class=10)
        result = fit(RunConfig(data=str(shapes), backbone="efficientnet_lite0", image_size=64, epochs=1,
                               batch_size=16, augment="none", device="cpu"))
        run_dir = Path(result["run_dir"])
        big = formats.default_path(run_dir, "onnx")
        big.parent.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256()
        with open(big, "wb") as f:
            for _ in range(args.mb):
                chunk = os.urandom(MiB)
                sha.update(chunk)
                f.write(chunk)
        expected, size = sha.hexdigest(), big.stat().st_size

        old_script = tmp / "old_export.py"
        old_script.write_text(textwrap.dedent(f'''
            import streamlit as st
            from pathlib import Path
            F = Path({str(big)!r})
            st.title("old export")
            st.download_button("Download", lambda: F.read_bytes(), F.name, "application/octet-stream", key="old")
        '''))

        rows = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            proc, url = _serve(ROOT / "streamlit_app.py", home, tmp / "new.log")
            try:
                rows["new: link, GET /download/<token>"] = _download(
                    browser, proc, f"{url}/export?job={run_dir.name}", "Use it in Python",
                    lambda page: page.locator(".st-key-export_fmt_onnx a").click(), tmp)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            proc, url = _serve(old_script, home, tmp / "old.log")
            try:
                rows["old: deferred st.download_button"] = _download(
                    browser, proc, url, "old export",
                    lambda page: page.locator(".st-key-old button").click(), tmp)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            browser.close()

        load = os.getloadavg()[0]
        print(f"file: {size / MiB:.0f} MiB of random bytes; {platform.machine()}, {os.cpu_count()} CPUs, "
              f"load average {load:.1f}; Chromium downloads, server RSS sampled every 5 ms")
        print(f"{'path':38} {'RSS before':>11} {'peak growth':>12} {'held 5 s after':>15} {'time':>7}  same bytes")
        for name, r in rows.items():
            print(f"{name:38} {r['base'] / MiB:>7.0f} MiB {r['peak'] / MiB:>8.1f} MiB {r['held'] / MiB:>11.1f} MiB "
                  f"{r['s']:>6.1f}s  {r['sha'] == expected}")
        new, old = rows.values()
        print(f"peak growth / file size: new {new['peak'] / size:.2f}, old {old['peak'] / size:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
