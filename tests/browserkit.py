"""Helpers of the browser tests: a real Streamlit server on a free port and Playwright steps on its pages
(the ``server`` and ``browser_page`` fixtures in conftest.py use them)."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

def need_browser():
    if CHROMIUM:
        return
    if os.environ.get("CI"):
        pytest.fail("CI is set but no Chromium is installed: .ci/run must install Debian's chromium")
    pytest.skip("no system Chromium (apt-get install chromium) — the browser test cannot run here")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(tmp_path, *extra: str, home: Path | None = None, with_process: bool = False):
    """A real Streamlit server on a free localhost port, with its own workspace (or ``home``);
    yields (url, home), or (url, home, the server's Popen) with ``with_process``."""
    need_browser()
    port = free_port()
    home = home or tmp_path / "home"
    env = {**os.environ, "TRANSFER_STUDIO_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"),
                             "--server.port", str(port), "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", *extra],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the Streamlit server did not become healthy:\n" + (tmp_path / "server.log").read_text())
    try:
        yield (url, home, proc) if with_process else (url, home)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def choose(page, key: str, option: str, exact: bool = False) -> None:
    """Pick ``option`` in the select box with widget key ``key``; a rerun that redraws the page (the recipe's
    speed probe, a number just entered) can close the list before the click, so open it again (3 tries)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(3):
        page.locator(f".st-key-{key}").click()
        choice = page.get_by_role("option", name=option, exact=exact)
        try:
            choice.click(timeout=20_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def goto_step(page, title: str) -> None:
    page.get_by_role("link", name=title).first.click()
    page.get_by_role("heading", name=title).first.wait_for()
