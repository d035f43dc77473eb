"""Issue 16, the newcomer's pages: honest test sets, one vocabulary for layer choices, a clickable confusion
matrix and the small rough edges. Kept fast: the 30-image shapes sample, 64-pixel input, one epoch."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import zip_folder
from pagekit import texts
from streamlit.testing.v1 import AppTest

from core.data import edits as de
from core.data import ingest, overlap

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")


def app(page: str, **query) -> AppTest:
    """A fresh tab on ``page`` with the given query parameters, already run."""
    at = AppTest.from_file(APP, default_timeout=90)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


# shapes_ds and trained_run: conftest.py's


def half_copied_test_set(shapes_dir: Path, dest: Path) -> Path:
    """A test set of circles and squares: the first 4 circles are byte copies of the sample, the rest new bytes."""
    for cls in ("circle", "square"):
        shutil.copytree(shapes_dir / cls, dest / cls)
    for i, f in enumerate(sorted(dest.rglob("*.png"))):
        if not (f.parent.name == "circle" and i < 4):
            f.write_bytes(f.read_bytes() + b"\0")  # same picture, different file contents
    return dest


# --- 1 · test sets you can trust ----------------------------------------------------------------

def test_overlap_counts_the_test_images_that_are_copies_of_seen_images(shapes_dir, tmp_path):
    test = half_copied_test_set(shapes_dir, tmp_path / "test")
    seen = [str(p) for p in shapes_dir.rglob("*.png")]
    found = overlap.find(seen, ingest.scan_folder(test))
    assert found["n_overlap"] == 4 and found["n_total"] == 20
    assert all(Path(e["test"]).name == Path(e["seen"]).name for e in found["examples"])


def test_the_runs_own_dataset_is_refused_with_a_reason(shapes_dir):
    split = {"train": [[str(p), 0] for p in shapes_dir.rglob("*.png")], "val": []}
    with pytest.raises(ValueError, match="the dataset this run trained on"):
        overlap.check(split, str(shapes_dir), ingest.scan_folder(shapes_dir), "shapes")


def test_a_test_set_made_only_of_seen_images_is_refused(shapes_dir, tmp_path):
    copy = shutil.copytree(shapes_dir, tmp_path / "copy")
    split = {"train": [[str(p), 0] for p in shapes_dir.rglob("*.png")], "val": []}
    with pytest.raises(ValueError, match="all 30 images"):
        overlap.check(split, str(shapes_dir), ingest.scan_folder(copy), "copy")


def test_uploading_a_test_set_on_evaluate_keeps_the_dataset_and_scores_only_unseen_images(
        trained_run, shapes_ds, shapes_dir, tmp_path):
    at = app("5_evaluate", job=trained_run, ds=shapes_ds)
    assert at.selectbox(key="eval_test_ds").value is None  # no default: never the training data
    archive = zip_folder(half_copied_test_set(shapes_dir, tmp_path / "t"), tmp_path / "held-out.zip")
    at.file_uploader(key="eval_test_zip").set_value(("held-out.zip", archive.read_bytes(), "application/zip")).run()
    assert not at.exception, at.exception
    name = at.selectbox(key="eval_test_ds").value
    assert name.startswith("held-out") and at.session_state["ds"] == shapes_ds
    assert "4 of the 20 images" in texts(at.warning)
    at.button(key="eval_test_run").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert {m.label: m.value for m in at.metric}["Images evaluated"] == "16"


def test_choosing_the_training_dataset_as_test_set_is_refused(trained_run, shapes_ds):
    at = app("5_evaluate", job=trained_run)
    at.selectbox(key="eval_test_ds").set_value(shapes_ds).run()
    assert "the dataset this run trained on" in texts(at.error)
    assert "eval_test_run" not in [b.key for b in at.button]  # nothing to press: no score over training images


# --- 2 · one vocabulary for layer choices -------------------------------------------------------

def test_layer_choices_have_one_label_a_sentence_and_the_share_that_learns():
    from core.app import services

    head = services.describe_layers("efficientnet_lite0", "head", None, 3)
    last = services.describe_layers("efficientnet_lite0", "last-2", None, 3)
    every = services.describe_layers("efficientnet_lite0", "all", None, 3)
    assert [head["label"], last["label"], every["label"]] == ["head only", "last 2 groups + head", "everything"]
    assert head["share"] < 0.01 < last["share"] < every["share"] == 1.0
    assert head["total"] == last["total"] == every["total"]
    odd = services.describe_layers("efficientnet_lite0", "last-3", None, 3)
    assert odd["choice"] == "custom" and odd["label"].startswith("custom (") and "head" in odd["label"]


def test_layer_labels_need_no_torch_and_name_other_depths_custom():
    from core.app import services

    assert services.layer_label("last-2") == "last 2 groups + head"
    assert services.layer_label("last-3") == "custom (last 3 groups + head)"
    assert services.layer_label("head", ["stage5", "head"]) == "custom (stage5, head)"
    assert "last-2" not in services.recommend({"a": 150, "b": 300})["reason"]


def test_backbone_and_layers_pages_count_the_same_parameters_and_speak_one_vocabulary(shapes_ds):
    from core.app import services

    sizes = services.group_param_counts("efficientnet_lite0", 3)
    body_m = f"{(sum(sizes.values()) - sizes['head']) / 1e6:.3g} M"
    bb = app("2_backbone", ds=shapes_ds)
    assert body_m in texts(bb.markdown) and "without the ImageNet classifier" in texts(bb.caption)
    at = app("3_layers", ds=shapes_ds)
    radio = at.radio(key="layers_preset")
    assert list(radio.options) == ["head only", "last 2 groups + head", "everything", "custom"]
    assert body_m in texts(at.caption)
    shown = texts(at.markdown) + texts(at.caption) + texts(at.info)
    assert "last-2" not in shown and "last N" not in shown
    radio.set_value("last").run()
    assert services.load(at.query_params["sid"])["trainable"] == "last-2"
    share = {m.label: m.value for m in at.metric}["Share of weights that learn"]
    assert share == f"{services.describe_layers('efficientnet_lite0', 'last-2', None, 3)['share']:.1%}"


# --- 3 · a clickable confusion matrix -----------------------------------------------------------

def test_confusion_cells_put_the_largest_mistake_first_and_the_chart_carries_cell_indices():
    from core.app import charts, services

    matrix = [[5, 0, 1], [3, 4, 0], [0, 0, 6]]
    assert services.confusion_cells(matrix)[:2] == [(1, 0), (0, 2)]
    assert services.confusion_cells([[2, 0], [0, 3]]) == [(0, 0), (1, 1)]
    fig = charts.confusion(matrix, ["a", "b", "c"], clickable=True)
    points = fig.data[1]
    assert len(points.customdata) == 9 and list(points.customdata[3]) == [1, 0]
    assert (points.x[3], points.y[3]) == ("a", "b")


def test_evaluate_opens_the_largest_mistake_and_shows_percentages(trained_run):
    from core.app import services

    rep = services.evaluate_run(Path(de.root()).parent / "runs" / trained_run)
    at = app("5_evaluate", job=trained_run)
    assert not at.exception
    first = services.confusion_cells(rep["confusion"])[0]
    assert at.selectbox(key="eval_cell").value == f"{first[0]},{first[1]}"
    if first[0] == first[1]:
        assert "No errors" in texts(at.success)
    table = at.dataframe[0].value
    assert table.loc["macro avg", "f1"] == pytest.approx(100 * rep["averages"]["macro"]["f1"])


# --- 4 · small items ------------------------------------------------------------------------------

def test_empty_training_charts_say_they_wait_instead_of_drawing_an_empty_grid():
    from core.app import charts

    empty = charts.epoch_curves([])
    assert empty.layout.xaxis.visible is False and "Waiting" in empty.layout.annotations[-1].text
    started = charts.learning_rate([{"type": "step", "step": 1, "lr": 0.01}])
    assert started.layout.xaxis.visible is not False and not started.layout.annotations


def test_thumbnails_are_even_squares_whatever_the_image_shape(tmp_path):
    from PIL import Image

    from pages import common

    wide, tall = tmp_path / "wide.png", tmp_path / "tall.png"
    Image.new("RGB", (300, 40), "red").save(wide)
    Image.new("RGB", (20, 90), "blue").save(tall)
    assert common.thumbnail(str(wide), 96).size == common.thumbnail(str(tall), 96).size == (96, 96)
    # a phone photo held sideways: EXIF turns it upright (the red top ends up on the right), an unreadable file
    # is a grey tile
    photo = Image.new("RGB", (1600, 1200), "blue")
    photo.paste((255, 0, 0), (0, 0, 1600, 600))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    photo.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    thumb = common.thumbnail(str(tmp_path / "phone.jpg"), 96)
    assert thumb.size == (96, 96)
    assert thumb.getpixel((90, 48))[0] > 200 and thumb.getpixel((5, 48))[2] > 200
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    assert common.thumbnail(str(tmp_path / "broken.jpg"), 96).getpixel((0, 0)) == (230, 230, 230)


def test_the_page_icon_is_a_local_file_not_an_internet_fetch():
    import ast

    tree = ast.parse((ROOT / "streamlit_app.py").read_text())
    icons = [k.value for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords if k.arg == "page_icon"]
    assert icons and all(not (isinstance(v, ast.Constant) and str(v.value).startswith(":material")) for v in icons)
    assert (ROOT / "assets" / "icon.png").stat().st_size > 0


def test_the_size_histogram_says_it_plots_a_sample():
    import json

    at = app("1_data")
    at.button(key="data_use_sample").click().run()  # digits: 400 images, the health report decodes 300
    assert not at.exception
    (chart,) = [el for el in at.get("plotly_chart") if "data_sizes_chart" in el.proto.id]
    assert "a sample of 300 of the 400 images" in json.loads(chart.proto.spec)["layout"]["title"]["text"]


def test_grad_cam_says_the_model_saw_only_the_centre_crop(trained_run, shapes_dir):
    at = app("5_evaluate", job=trained_run)
    img = sorted((shapes_dir / "square").iterdir())[0]
    at.file_uploader(key="eval_upload").set_value([(img.name, img.read_bytes(), "image/png")]).run()
    at.toggle(key="eval_gradcam").set_value(True).run()
    assert not at.exception
    captions = [cap for el in at.get("image") for cap in el.captions if cap.startswith("Grad-CAM for ")]
    assert captions and all("saw only this square" in cap for cap in captions)


def test_a_cell_left_from_another_run_gives_way_to_this_runs_largest_mistake(trained_run):
    from core.app import services

    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["job"] = trained_run
    at.session_state["eval_cell"] = "9,7"  # chosen on a 10-class run; this one has 3 classes
    at.run()
    at.switch_page("pages/5_evaluate.py").run()
    assert not at.exception, at.exception
    rep = services.evaluate_run(Path(de.root()).parent / "runs" / trained_run)
    first = services.confusion_cells(rep["confusion"])[0]
    assert at.selectbox(key="eval_cell").value == f"{first[0]},{first[1]}"
