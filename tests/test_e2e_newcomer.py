"""Issue 16 in a real browser: a test set uploaded on Evaluate is checked against the run's own images, and a
click on a confusion-matrix cell opens that cell's images. Headless Chromium against `streamlit run`."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import zip_folder
from browserkit import CHROMIUM, goto_step, serving

from core.data import edits as de

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def trained(shapes_dir, tiny_config) -> tuple[str, str]:
    """(dataset, run id): a one-epoch run on a copy of the shapes sample, in the session's workspace."""
    from core.techniques import fit

    ds = de.unique_name("e2e-newcomer-shapes")
    shutil.copytree(shapes_dir, de.root() / ds)
    result = fit(tiny_config(de.dataset_dir(ds), epochs=1))
    assert result["status"] == "finished"
    return ds, Path(result["run_dir"]).name


@pytest.fixture()
def browser(served):
    """A headless Chromium page with no network of its own (the flags of tests/test_e2e_browser.py)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                                           "--disable-dev-shm-usage", "--no-first-run"])
        context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield page
        context.close()
        chromium.close()


@pytest.fixture()
def served(tmp_path, _workspace):
    with serving(tmp_path, home=_workspace) as (url, home):
        yield url


def _open_evaluate(page, url: str, ds: str, run: str, outside: list[str]) -> None:
    # offline, as on a machine with no network: every request that leaves localhost is refused and recorded
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
               else (outside.append(route.request.url), route.abort()))
    page.goto(f"{url}/?ds={ds}&job={run}")
    page.get_by_role("heading", name="1 · Data").first.wait_for()
    goto_step(page, "5 · Evaluate")
    page.get_by_text("Validation accuracy").first.wait_for(timeout=120_000)


def test_a_test_set_uploaded_on_evaluate_is_not_the_training_data_and_overlaps_are_flagged(
        served, browser, trained, shapes_dir, tmp_path):
    page, (ds, run), outside = browser, trained, []
    _open_evaluate(page, served, ds, run, outside)
    assert "gstatic" not in (page.locator("link[rel*='icon']").first.get_attribute("href") or "")
    page.get_by_role("tab", name="Test on another dataset").click()
    chooser = page.locator(".st-key-eval_test_ds")
    box = chooser.locator("input")
    box.wait_for()
    assert box.get_attribute("placeholder") == "Choose a test set" and box.input_value() == ""  # not the training data

    test = tmp_path / "held-out"
    for cls in ("circle", "square"):
        shutil.copytree(shapes_dir / cls, test / cls)
    for i, f in enumerate(sorted(test.rglob("*.png"))):
        if not (f.parent.name == "circle" and i < 3):  # three exact copies of training images, the rest new bytes
            f.write_bytes(f.read_bytes() + b"\0")
    page.get_by_text("Upload a test set").first.click()
    page.locator(".st-key-eval_test_zip input[type='file']").set_input_files(str(zip_folder(test, tmp_path / "held-out.zip")))
    page.get_by_text("3 of the 20 images").first.wait_for(timeout=120_000)  # flagged, with the count
    assert box.input_value().startswith("held-out")  # the upload is chosen as the test set
    page.screenshot(path=str(tmp_path / "test-set.png"), full_page=True)
    assert f"ds={ds}" in page.url  # the current dataset did not change
    page.locator(".st-key-eval_test_run button").click()
    page.get_by_text("Test accuracy").first.wait_for(timeout=120_000)
    assert "17" in page.locator("[data-testid='stMetric']").filter(has_text="Images evaluated").inner_text()
    assert not [u for u in outside if "gstatic" in u or "googleapis" in u], outside


def test_clicking_a_confusion_cell_opens_that_cells_images(served, browser, trained):
    page, (ds, run), outside = browser, trained, []
    _open_evaluate(page, served, ds, run, outside)
    page.get_by_role("tab", name="Confusion matrix").click()
    cell_select = page.locator(".st-key-eval_cell input")
    cell_select.wait_for()
    before = cell_select.input_value()
    points = page.locator(".st-key-eval_confusion .scatterlayer .point")
    points.first.wait_for()
    assert points.count() == 9
    target = next(i for i in (0, 4, 8) if f"true {['circle', 'square', 'triangle'][i // 3]} → predicted"
                  f" {['circle', 'square', 'triangle'][i // 3]}" not in before)  # a cell the default does not show
    name = ["circle", "square", "triangle"][target // 3]
    box = points.nth(target).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("([sel, want]) => (document.querySelector(sel) || {}).value?.startsWith(want)",
                           arg=[".st-key-eval_cell input", f"true {name} → predicted {name}"], timeout=60_000)
    page.get_by_text(f"true {name} → {name}").first.wait_for(timeout=60_000)  # the gallery's captions
