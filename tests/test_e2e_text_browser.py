"""The text flow end to end in a real browser (issue 17): upload a CSV, read its health report, choose the text
backbone and head-only layers, train one short epoch, click a confusion cell and read its texts, type a text and
see its tokens explained, download the safetensors export and load it with core: the same labels as the app.

Reuses the server and browser of tests/test_e2e_browser.py (a real `streamlit run`, headless Chromium).
"""
from __future__ import annotations

import json
import urllib.request
import zipfile
from pathlib import Path

import pytest
from browserkit import choose, goto_step

pytestmark = pytest.mark.browser
TYPED = "We cooked <b>pasta</b> and *fresh* bread"


def _wait_value(page, key: str, startswith: str) -> None:
    page.wait_for_function("([sel, want]) => (document.querySelector(sel) || {}).value?.startsWith(want)",
                           arg=[f".st-key-{key} input", startswith], timeout=60_000)


def _evaluate_and_export(page, url: str, home: Path, tmp_path: Path) -> None:
    """Evaluate (a clicked confusion cell lists its texts; a typed text is predicted and explained), then Export:
    the downloaded safetensors with its tokenizer predicts what the app predicted."""
    from core.results.loading import load_model

    goto_step(page, "5 · Evaluate")
    page.get_by_role("tab", name="Try it on new texts").wait_for(timeout=120_000)  # the text report is drawn
    (run,) = [p for p in (home / "runs").iterdir() if (p / "evaluation.json").exists()]
    rep = json.loads((run / "evaluation.json").read_text())
    classes = rep["classes"]

    # the confusion matrix: a click on a diagonal cell the chooser does not show lists that cell's texts
    page.get_by_role("tab", name="Confusion matrix").click()
    points = page.locator(".st-key-eval_confusion .scatterlayer .point")
    points.first.wait_for()
    assert points.count() == len(classes) ** 2
    before = page.locator(".st-key-eval_text_cell input").input_value()
    k = next(i for i in range(len(classes)) if rep["confusion"][i][i]
             and not before.startswith(f"true {classes[i]} → predicted {classes[i]}"))
    box = points.nth(k * len(classes) + k).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    _wait_value(page, "eval_text_cell", f"true {classes[k]} → predicted {classes[k]}")
    cell_texts = [it["text"] for it in rep["items"] if it["label"] == it["pred"] == k]
    # the grid draws on a canvas; its accessible table holds the same cells
    cell = page.locator(".st-key-eval_cell_texts [role='gridcell']")
    cell.get_by_text(cell_texts[0], exact=True).first.wait_for(state="attached", timeout=60_000)
    assert set(cell_texts) <= set(cell.all_text_contents())
    page.screenshot(path=str(tmp_path / "text-confusion.png"), full_page=True)

    # try a typed text: one row with its label, and its tokens coloured (the typed tag shown as text)
    page.get_by_role("tab", name="Try it on new texts").click()
    area = page.locator(".st-key-eval_texts textarea")
    area.fill(TYPED)
    area.press("Control+Enter")
    explained = page.locator(".token-explanation")
    explained.first.wait_for(timeout=120_000)
    words = explained.first.inner_text().split()
    assert {"pasta", "bread", "<", "b", ">"} <= set(words) and "*" in words
    assert not page.locator(".token-explanation b").count()  # the typed <b> is text, not bold
    page.screenshot(path=str(tmp_path / "text-explain.png"), full_page=True)

    # 6 · Export: the weights and the tokenizer, downloaded through their links, predict as the app did
    goto_step(page, "6 · Export")
    for key, name in (("export_safetensors", "m.safetensors"), ("export_tokenizer", "tok.zip")):
        href = page.locator(f".st-key-{key} a").get_attribute("href")
        assert href.startswith("/download/")
        (tmp_path / name).write_bytes(urllib.request.urlopen(url + href, timeout=60).read())
    with zipfile.ZipFile(tmp_path / "tok.zip") as z:
        z.extractall(tmp_path)
    model = load_model(tmp_path / "m.safetensors")
    assert model.classes == classes
    texts = [it["text"] for it in rep["items"]]
    assert [p["label"] for p in model.predict(texts)] == [classes[it["pred"]] for it in rep["items"]]
    page.get_by_role("button", name="Build ONNX (.onnx)").wait_for()


def test_a_text_csv_uploads_trains_evaluates_explains_and_exports_in_the_browser(server, browser_page, tmp_path):
    from core.data import text

    url, home = server
    page = browser_page
    data = text.make_sample(tmp_path / "reviews.csv", per_class=12)

    # 1 · Data: the CSV goes through the upload's file input and becomes a text dataset with its health report
    page.goto(url)
    page.get_by_role("heading", name="1 · Data").first.wait_for()
    page.get_by_role("tab", name="Upload .zip").click()
    page.locator(".st-key-data_zip input[type='file']").set_input_files(str(data))
    page.get_by_role("heading", name="Text dataset: reviews").first.wait_for(timeout=120_000)
    page.get_by_role("heading", name="Health report").first.wait_for()
    page.get_by_text("Texts per class").first.wait_for()

    # 2 · Backbone: the bundled sentence encoder; 3 · Layers: the head only
    goto_step(page, "2 · Backbone")
    choose(page, "bb_name", "all_minilm_l6_v2")
    goto_step(page, "3 · Layers")
    page.locator(".st-key-layers_preset").get_by_text("head only", exact=True).click()
    page.get_by_text("Only the new classifier learns").first.wait_for()

    # 4 · Train: one short epoch at 32 tokens
    goto_step(page, "4 · Train")
    for key, value in (("train_epochs", "1"), ("train_max_length", "32")):
        box = page.locator(f".st-key-{key} input")
        box.fill(value)
        box.press("Enter")
        page.wait_for_function("([sel, v]) => document.querySelector(sel)?.value === v",
                               arg=[f".st-key-{key} input", value])
    page.locator(".st-key-train_start button").click()
    page.get_by_text("finished").first.wait_for(timeout=300_000)
    config = json.loads(next((home / "runs").glob("*/config.json")).read_text())
    assert (config["technique"], config["trainable"], config["epochs"], config["max_length"]) == ("text", "head", 1, 32)

    _evaluate_and_export(page, url, home, tmp_path)
