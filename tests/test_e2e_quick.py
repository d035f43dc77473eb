"""Issue 16's quick path in a real browser: upload a zip, press Train, try a photo, download the model — one page,
headless Chromium against `streamlit run`, timed end to end."""
from __future__ import annotations

import os
import re
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import zip_folder
from browserkit import serving

pytestmark = pytest.mark.browser
BUDGET_S = 120  # measured 51-63 s on a 2-core CPU shared with other work; the issue asks for ~90 s


def test_quick_start_uploads_trains_predicts_a_photo_and_links_the_model(tmp_path, browser_page, shapes_dir):
    from core.results.loading import load_model

    archive = zip_folder(shapes_dir, tmp_path / "my-shapes.zip", top="my-shapes")
    photo = sorted((shapes_dir / "square").iterdir())[0]
    with serving(tmp_path) as (url, home):
        page = browser_page
        t0 = time.time()
        page.goto(url)
        page.get_by_role("link", name="Quick start").first.click()  # first in the navigation
        page.get_by_role("heading", name="Quick start").first.wait_for()
        page.locator(".st-key-quick_zip [data-testid='stFileUploaderDropzoneInput']").set_input_files(str(archive))
        page.get_by_text("Settings:").first.wait_for(timeout=60_000)
        page.locator(".st-key-quick_train button").click()
        page.get_by_text("Training loss per step").first.wait_for(timeout=90_000)  # the one live chart
        page.get_by_role("heading", name="3. Try it on a photo").wait_for(timeout=120_000)
        page.locator(".st-key-eval_upload [data-testid='stFileUploaderDropzoneInput']").set_input_files(str(photo))
        shown = page.get_by_text(re.compile(r"^\S+ \(\d+\.\d%\)$")).first
        shown.wait_for(timeout=60_000)
        shown_text = shown.inner_text()
        href = page.locator(".st-key-quick_download a").get_attribute("href")
        elapsed = time.time() - t0
        page.screenshot(path=str(Path(os.environ.get("TS_SCREENSHOTS", tmp_path)) / "quick.png"), full_page=True)
        assert href.startswith("/download/")
        weights = tmp_path / "quick.safetensors"
        weights.write_bytes(urllib.request.urlopen(url + href, timeout=60).read())

    print(f"quick path end to end: {elapsed:.1f} s")
    assert elapsed < BUDGET_S, f"upload → train → predict → download link took {elapsed:.0f} s"
    # the downloaded file predicts the label the page showed for the photo
    label = load_model(weights).predict([str(photo)])[0]["label"]
    assert shown_text.startswith(f"{label} ("), (shown_text, label)
    assert len([p for p in (Path(home) / "runs").iterdir() if p.is_dir()]) == 1  # one ordinary run
