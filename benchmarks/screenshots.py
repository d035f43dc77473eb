"""Screenshots of the Train step after a short run, in a real browser, one per language (README's pictures).

Starts `streamlit run streamlit_app.py` on a free localhost port with a fresh workspace, opens it in headless
Chromium (Playwright driving /usr/bin/chromium) with ``?lang=``, uses a built-in sample on the Data step,
starts the recipe's run on the Train step, waits until it has finished and takes the browser's view with the
run's status, metrics and charts. Text in the picture is in the chosen language; Chinese needs a CJK font
(Debian: fonts-noto-cjk or fonts-wqy-microhei).

    python benchmarks/screenshots.py --lang zh_CN      # -> assets/screenshot.zh_CN.png
    python benchmarks/screenshots.py                   # -> assets/screenshot.png (English)
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LANGS = ("en", "zh_CN")
SAMPLES = ("digits", "shapes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(home: Path):
    """A Streamlit server of this checkout on a free port, with ``home`` as its workspace; yields its URL."""
    port = _free_port()
    env = {**os.environ, "TRANSFER_STUDIO_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
                             "--server.port", str(port), "--server.headless", "true", "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false",
                             # no "source file changed" prompt (it would count as a script still running)
                             "--server.fileWatcherType", "none"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the Streamlit server did not start; its log: {home / 'server.log'}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _settled(page) -> None:
    """Wait until the app has no script run in progress (Streamlit's "Running..." status widget is gone)."""
    page.wait_for_timeout(500)
    page.locator("[data-testid='stStatusWidget']").wait_for(state="hidden", timeout=300_000)


def take(url: str, lang: str, sample: str, epochs: int, budget: int, out: Path, chromium: str, width: int,
         height: int) -> None:
    """Drive the app in ``lang``: sample on the Data step, one run on the Train step, then the screenshot."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                                          "--disable-dev-shm-usage", "--no-first-run"])
        page = browser.new_context(viewport={"width": width, "height": height}).new_page()
        page.set_default_timeout(120_000)
        try:
            page.goto(f"{url}/?lang={lang}")
            # the Data step, found by widget keys and the URL (the same in every language); a rerun (the language
            # pinned in the URL) can close the list before the click, so open it again (3 tries)
            for attempt in range(3):
                page.locator(".st-key-data_sample").click()
                try:
                    page.get_by_role("option", name=re.compile(rf"^{sample}\b")).click(timeout=20_000)
                    break
                except PlaywrightTimeout:
                    if attempt == 2:
                        raise
            page.locator(".st-key-data_use_sample button").click()
            page.locator(".st-key-data_counts_chart").wait_for(timeout=180_000)
            page.locator("[data-testid='stSidebarNav'] a[href$='/train']").click()
            start = page.locator(".st-key-train_start button")
            page.locator(".st-key-train_start button:enabled").wait_for(timeout=300_000)  # the recipe measured the machine
            if budget:  # the recipe plans again for this budget
                box = page.locator(".st-key-train_budget input")
                box.fill(str(budget))
                box.press("Enter")
                # the new plan is on screen once its table shows this budget (time_budget_s, the same in every language)
                page.locator("[data-testid='stTable'] td").filter(
                    has_text=re.compile(rf"^\s*{re.escape(str(float(budget)))}\s*$")).first.wait_for(timeout=600_000)
                page.locator(".st-key-train_start button:enabled").wait_for(timeout=300_000)
            if epochs:
                box = page.locator(".st-key-train_epochs input")
                box.fill(str(epochs))
                box.press("Enter")
                page.wait_for_timeout(1500)
            for attempt in range(3):  # a click during a rerun (a redraw after the budget) can be lost: try again
                _settled(page)
                start.click()
                try:
                    page.locator(".st-key-train_start button:disabled").wait_for(timeout=30_000)  # the job is running
                    break
                except PlaywrightTimeout:
                    if attempt == 2:
                        raise
            page.locator(".st-key-train_chart_epochs .js-plotly-plot").wait_for(timeout=1_800_000)
            page.locator(".st-key-train_start button:enabled").wait_for(timeout=1_800_000)  # the job has ended
            page.wait_for_timeout(2000)  # let the charts settle
            page.locator(".st-key-train_start").evaluate("e => e.scrollIntoView({block: 'start'})")
            page.mouse.move(width * 0.6, height / 2)
            page.mouse.wheel(0, -45)  # the caption above the buttons, as in the English picture
            page.mouse.move(width - 10, height - 10)  # off the charts and the sidebar: no toolbars in the picture
            page.wait_for_timeout(800)
        except Exception:
            failed = Path(tempfile.gettempdir()) / f"{out.stem}.failed.png"
            page.screenshot(path=str(failed), full_page=True)
            print(f"failed; the browser's view at that moment: {failed}", file=sys.stderr)
            raise
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lang", default="en", choices=LANGS,
                    help="language of the app in the picture (default: en; allowed: en, zh_CN)")
    ap.add_argument("--out", type=Path, default=None,
                    help="PNG to write (default: assets/screenshot.png for en, assets/screenshot.<lang>.png otherwise)")
    ap.add_argument("--sample", default="digits", choices=SAMPLES,
                    help="built-in sample to train on (default: digits; allowed: digits, shapes)")
    ap.add_argument("--epochs", type=int, default=0,
                    help="epochs of the run (default: 0 = the Balanced recipe's own choice; allowed: 0-500)")
    ap.add_argument("--budget", type=int, default=0,
                    help="time budget of the recipe in seconds (default: 0 = the recipe's own; allowed: 0-86400); a "
                         "larger one lets a loaded machine train all the recipe's epochs")
    ap.add_argument("--width", type=int, default=1400, help="browser viewport width in pixels (default: 1400; "
                                                            "allowed: 800-3840)")
    ap.add_argument("--height", type=int, default=1080, help="browser viewport height in pixels (default: 1080; "
                                                             "allowed: 600-2160)")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium",
                    help="Chromium executable (default: chromium on PATH, else /usr/bin/chromium; any Chromium path)")
    args = ap.parse_args(argv)
    if not 0 <= args.epochs <= 500:
        ap.error(f"--epochs must be between 0 and 500; got {args.epochs}")
    if not 0 <= args.budget <= 86_400:
        ap.error(f"--budget must be between 0 and 86400 seconds; got {args.budget}")
    if not (800 <= args.width <= 3840 and 600 <= args.height <= 2160):
        ap.error(f"--width must be 800-3840 and --height 600-2160; got {args.width}x{args.height}")
    if not Path(args.chromium).exists():
        ap.error(f"no Chromium at {args.chromium}; install it (apt-get install chromium) or pass --chromium PATH")
    out = args.out or ROOT / "assets" / ("screenshot.png" if args.lang == "en" else f"screenshot.{args.lang}.png")
    with tempfile.TemporaryDirectory(prefix="ts-shots-") as tmp:
        t0 = time.time()
        with serving(Path(tmp)) as url:
            take(url, args.lang, args.sample, args.epochs, args.budget, out, args.chromium, args.width, args.height)
        print(f"wrote {out} ({args.lang}, {args.sample} sample) in {time.time() - t0:.3g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
