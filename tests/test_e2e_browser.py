"""End to end in a real browser: a real `streamlit run` server driven by headless Chromium.

Upload a zip, train one epoch, see the live chart, download the weights, load them with core and get
the app's predictions. Skips without Chromium, except under CI where a missing browser is a failure.
"""
from __future__ import annotations

import json
import os
import re
import time
import zipfile
from pathlib import Path

import pytest

from browserkit import ROOT, choose, goto_step, serving
from conftest import zip_folder

pytestmark = pytest.mark.browser


def test_upload_train_download_and_reload_in_browser(server, browser_page, shapes_dir, tmp_path):
    from core.results.loading import load_model

    url, home = server
    page = browser_page
    shots = Path(os.environ.get("TS_SCREENSHOTS", tmp_path))
    archive = zip_folder(shapes_dir, tmp_path / "my-shapes.zip", top="my-shapes")

    # 1 · Data: upload the zip through the real file input
    page.goto(url)
    page.get_by_role("heading", name="1 · Data").first.wait_for()
    page.get_by_role("tab", name="Upload .zip").click()
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(archive))
    page.get_by_text("Images per class").first.wait_for(timeout=120_000)
    page.get_by_text("Dataset: my-shapes").first.wait_for()

    # 4 · Train: small and fast, then start
    goto_step(page, "4 · Train")
    epochs = page.locator(".st-key-train_epochs input")  # widgets are found by their explicit keys
    epochs.fill("1")
    epochs.press("Enter")
    choose(page, "train_image_size", "64 px")
    choose(page, "train_augment", "none", exact=True)
    page.locator(".st-key-train_start button").click()
    # the live view: progress and the per-step loss chart appear, then the run finishes
    page.get_by_text("Training loss per step").first.wait_for(timeout=180_000)
    page.get_by_text("finished").first.wait_for(timeout=300_000)
    page.screenshot(path=str(shots / "train.png"), full_page=True)
    assert "job=" in page.url

    # a reloaded tab finds the same job with its history
    page.reload()
    page.get_by_text("Training loss per step").first.wait_for(timeout=180_000)  # a loaded machine is slow to redraw

    # 5 · Evaluate: the app computes its predictions on the validation images
    goto_step(page, "5 · Evaluate")
    page.get_by_text("Confusion matrix").first.wait_for(timeout=120_000)

    # 6 · Export: download the weights through the link that streams them from disk (GET /download/<token>)
    goto_step(page, "6 · Export")
    link = page.locator(".st-key-export_safetensors a")
    assert link.get_attribute("href").startswith("/download/")
    got = []  # the link opens a new tab, so the download may belong to either tab: listen on both
    page.on("download", lambda d: got.append(d))
    page.context.on("page", lambda tab: tab.on("download", lambda d: got.append(d)))
    link.click()
    deadline = time.time() + 60
    while not got and time.time() < deadline:
        page.wait_for_timeout(200)
    assert got, "clicking the weights link started no download within 60 s"
    assert got[0].suggested_filename.endswith(".safetensors")
    weights = tmp_path / "downloaded.safetensors"
    got[0].save_as(weights)

    # the downloaded file alone rebuilds the model, and it predicts exactly what the app predicted
    run_dirs = [p for p in (home / "runs").iterdir() if (p / "evaluation.json").exists()]
    assert len(run_dirs) == 1
    evaluation = json.loads((run_dirs[0] / "evaluation.json").read_text())
    model = load_model(weights)
    assert model.classes == ["circle", "square", "triangle"]
    paths = [it["path"] for it in evaluation["items"]]
    probs = model.predict_proba(paths)
    assert probs.argmax(1).tolist() == [it["pred"] for it in evaluation["items"]]
    for row, app_row in zip(probs.tolist(), evaluation["probs"]):
        assert max(abs(a - b) for a, b in zip(row, app_row)) < 1e-4


def test_upload_over_the_size_limit_is_refused_with_a_message(tmp_path, browser_page):
    """server.maxUploadSize (1 MB here, 1024 MB in .streamlit/config.toml) refuses a bigger zip clearly."""
    big = tmp_path / "too-big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("a/noise.bin", os.urandom(1_600_000))  # incompressible: 1.6 MB on disk
    with serving(tmp_path, "--server.maxUploadSize", "1") as (url, home):
        page = browser_page
        page.goto(url)
        page.get_by_role("heading", name="1 · Data").first.wait_for()
        page.get_by_role("tab", name="Upload .zip").click()
        page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(big))
        page.get_by_text("1.0MB or smaller", exact=False).first.wait_for(timeout=30_000)
        # nothing was ingested and the app still answers: the Data step still asks for a dataset
        page.get_by_text("No dataset chosen yet").first.wait_for()
        assert not (home / "datasets").exists() or not any((home / "datasets").iterdir())


def _english_of(*files: str) -> list[str]:
    """Stretches of English prose of these source files' messages that a Chinese screen must not show: each msgid
    that has a Chinese translation, cut at its {placeholders}, without Markdown marks; pieces of two words or more."""
    from babel.messages import extract

    from core import i18n

    zh = i18n.translations("zh_CN")
    pieces = set()
    for name in files:
        with open(ROOT / name, "rb") as f:
            for _line, message, _comments, _context in extract.extract("python", f):
                msgid = message[0] if isinstance(message, tuple) else message
                if not msgid or zh.gettext(msgid) == msgid:  # kept as it is in both languages
                    continue
                for piece in re.split(r"\{[^{}]*\}", re.sub(r"[*`]", "", msgid)):
                    piece = piece.strip(" .,:;·—()'")
                    if len(re.findall(r"[A-Za-z]{2,}", piece)) >= 2 and len(piece) >= 10:
                        pieces.add(piece)
    return sorted(pieces)


def _shows_no_english(page, pieces: list[str]) -> None:
    text = page.locator("[data-testid='stMain']").inner_text() + "\n" + page.locator(
        "[data-testid='stSidebar']").inner_text()
    left = [p for p in pieces if p in text]
    assert not left, f"English source text on a Chinese screen: {left}"


def test_the_flow_in_chinese_shows_chinese_labels_and_switching_language_keeps_dataset_and_job(
        server, browser_page):
    """?lang=zh_CN: the Data step with a sample and a 1-epoch run on the Train step with its live chart, in Chinese;
    the sidebar switch to English and back keeps the dataset and the job (only the language changes)."""
    url, home = server
    page = browser_page
    page.goto(url + "/?lang=zh_CN")

    # 1 · 数据: the sidebar, the navigation and the step speak Chinese
    page.get_by_role("heading", name="1 · 数据").first.wait_for()
    sidebar = page.locator("[data-testid='stSidebar']")
    for label in ("语言", "数据集：", "设备：", "4 · 训练", "快速开始"):
        sidebar.get_by_text(label).first.wait_for()
    choose(page, "data_sample", "shapes — 圆形、正方形、三角形")
    page.locator(".st-key-data_use_sample button").click()
    page.get_by_role("heading", name="数据集：sample-shapes").first.wait_for(timeout=120_000)
    page.get_by_text("健康报告").first.wait_for()
    _shows_no_english(page, _english_of("streamlit_app.py", "pages/common.py", "pages/1_data.py",
                                        "pages/data_tools.py", "pages/lang.py"))

    # 4 · 训练: one epoch, small images, no augmentation; the live chart appears, the run finishes
    goto_step(page, "4 · 训练")
    epochs = page.locator(".st-key-train_epochs input")
    epochs.wait_for(timeout=180_000)  # after the recipe has measured this machine's speed
    epochs.fill("1")
    epochs.press("Enter")
    choose(page, "train_image_size", "64 px")
    choose(page, "train_augment", "无", exact=True)
    page.locator(".st-key-train_start button").click()
    page.locator(".st-key-train_chart_loss .js-plotly-plot").first.wait_for(timeout=180_000)
    page.get_by_text("已完成").first.wait_for(timeout=300_000)
    for label in ("训练完成。最佳一轮的权重已随训练记录保存。", "最佳验证集准确率", "轮次", "开始训练"):  # alert, metrics, button
        page.get_by_text(label, exact=True).first.wait_for()
    _shows_no_english(page, _english_of("streamlit_app.py", "pages/common.py", "pages/4_train.py",
                                        "pages/train_live.py", "pages/lang.py"))
    before = dict(p.split("=", 1) for p in page.url.split("?", 1)[1].split("&"))
    assert before["lang"] == "zh_CN" and before["ds"] == "sample-shapes" and before["job"]

    # the switch: English and back; the dataset, the job and the page stay
    page.locator(".st-key-lang_switch").get_by_text("English", exact=True).click()
    page.get_by_role("heading", name="4 · Train").first.wait_for()
    sidebar.get_by_text("Dataset:").first.wait_for()
    assert "sample-shapes" in sidebar.inner_text() and before["job"][:15] in sidebar.inner_text()
    page.get_by_text("Training finished").first.wait_for()
    page.locator(".st-key-lang_switch").get_by_text("简体中文", exact=True).click()
    page.get_by_role("heading", name="4 · 训练").first.wait_for()
    after = dict(p.split("=", 1) for p in page.url.split("?", 1)[1].split("&"))
    assert after == before
