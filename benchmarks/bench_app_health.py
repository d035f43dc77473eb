"""Does the server keep answering while a CPU run trains? Median /_stcore/health latency, idle vs training.

Starts a real `streamlit run` server, measures the health endpoint while idle, then starts a training
job through the browser (headless Chromium, the sample digits, every layer trainable, so the CPU is
busy) and measures again while the job runs. Target: median under 200 ms while training.

    python benchmarks/bench_app_health.py [--samples 200]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _latencies(url: str, n: int, gap: float = 0.05) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        urllib.request.urlopen(url + "/_stcore/health", timeout=10).read()
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(gap)
    return out


def _summary(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=20)
    return f"median {statistics.median(ms):7.1f} ms   p95 {q[18]:7.1f} ms   max {max(ms):7.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="ts-bench-app-"))
    port = _port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
                               "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--server.headless", "true"], cwd=ROOT,
                              env={**os.environ, "TRANSFER_STUDIO_HOME": str(home)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        idle = _latencies(url, args.samples)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"),
                                         args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(180_000)
            page.goto(url)
            page.locator(".st-key-data_use_sample button").click()
            page.get_by_text("Images per class").first.wait_for()
            page.get_by_role("link", name="3 · Layers").first.click()
            page.get_by_role("heading", name="3 · Layers").first.wait_for()
            page.locator(".st-key-layers_preset").get_by_text("everything", exact=False).first.click()
            page.get_by_role("link", name="4 · Train").first.click()
            e = page.locator(".st-key-train_epochs input")
            e.fill("20")
            e.press("Enter")
            page.locator(".st-key-train_image_size").click()
            page.get_by_role("option", name="96 px").click()
            page.locator(".st-key-train_start button").click()
            page.get_by_text("Training loss per step").first.wait_for()  # steps are running
            busy = _latencies(url, args.samples)  # the page keeps polling the job meanwhile
            status = page.locator("h3").filter(has_text="Run ").first.inner_text()
            browser.close()
        print(f"idle:     {_summary(idle)}")
        print(f"training: {_summary(busy)}   ({status})")
        print(f"ratio of medians, training / idle: {statistics.median(busy) / statistics.median(idle):.2f}x")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
