"""The Streamlit app through AppTest: every page, its prerequisites, state across reloads, real training.

Kept fast: 30-image datasets, 64-pixel input, one epoch, head only.
"""
from __future__ import annotations

import ast
import io
import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import wait_for_run as wait_for
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from core.data import edits as de
from core.storage import downloads
from core.app import services
from core.storage import runs
from pages import common

from pagekit import APP, ROOT, TIMEOUT, app, metrics, plotly, texts


# --- the wall between pages and torch ---------------------------------------------------------------

def test_pages_import_nothing_that_pulls_in_torch():
    files = [ROOT / "streamlit_app.py", *sorted((ROOT / "pages").glob("*.py"))]
    modules = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module)
                if node.module in ("core", "pages"):
                    modules |= {f"{node.module}.{a.name}" for a in node.names}
    assert not any(m == "torch" or m.startswith("torch.") for m in modules)
    code = ("import importlib, sys\n"
            f"for m in {sorted(modules)!r}:\n    importlib.import_module(m)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"importing {sorted(modules)} loaded torch"


def test_pages_reach_the_engine_through_core_app_only():
    """core.app is the pages' one doorway: services (engine calls, torch behind lazy imports) and engine (the
    torch-free modules pages use by name). Late imports inside functions count too."""
    outside = []
    for f in [ROOT / "streamlit_app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found = [f"core.{a.name}" for a in node.names] if node.module == "core" else [node.module]
            else:
                continue
            outside += [f"{f.name}:{node.lineno} {m}" for m in found
                        if m.split(".")[0] == "core" and m.split(".")[:2] != ["core", "app"]]
    assert not outside, "pages import the engine around core.app:\n" + "\n".join(outside)


WIDGETS = {"button", "selectbox", "slider", "number_input", "text_input", "checkbox", "toggle", "radio",
           "multiselect", "file_uploader", "camera_input", "download_button", "select_slider", "dataframe",
           "plotly_chart", "text_area", "data_editor"}


def test_every_widget_on_every_page_has_an_explicit_key():
    missing = []
    for f in [ROOT / "streamlit_app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WIDGETS
                    and not any(k.arg == "key" for k in node.keywords)):
                missing.append(f"{f.name}:{node.lineno} {node.func.attr}")
    assert not missing, f"widgets without key=: {missing}"


# --- drafts -----------------------------------------------------------------------------------------

def test_draft_round_trip_and_bad_ids():
    sid = services.new_sid()
    assert services.load(sid) == services.defaults()
    d = services.load(sid)
    d.update(backbone="resnet18", epochs=7, not_a_field=1)
    services.save(sid, d)
    again = services.load(sid)
    assert again["backbone"] == "resnet18" and again["epochs"] == 7 and "not_a_field" not in again
    for bad in ("../../etc/passwd", "abc", "", None):
        assert not services.valid_sid(bad)
    with pytest.raises(ValueError, match="32 hex"):
        services.load("../../x")


def test_recommendation_follows_the_smallest_class():
    assert services.recommend({"a": 5, "b": 400})["trainable"] == "head"
    assert services.recommend({"a": 100, "b": 400})["trainable"] == "last-2"
    assert services.recommend({"a": 1000, "b": 4000})["trainable"] == "all"


# --- 1 · Data ---------------------------------------------------------------------------------------

def test_data_page_without_a_dataset_says_what_is_missing():
    at = app()
    assert "No dataset chosen yet" in texts(at.info)
    assert "Classes" not in metrics(at)


def test_data_page_digits_sample_shows_counts_chart_and_ten_classes():
    at = app()
    at.selectbox(key="data_sample").set_value("digits")
    at.button(key="data_use_sample").click().run()
    assert not at.exception
    assert metrics(at)["Classes"] == "10"
    figs = plotly(at, "data_counts_chart")
    assert len(figs) == 1
    bars = figs[0]["data"][0]
    assert sorted(bars["x"]) == [str(d) for d in range(10)] and sum(bars["y"]) == int(metrics(at)["Images"])
    assert at.query_params["ds"] == "sample-digits"
    assert at.slider(key="data_val_fraction").value == pytest.approx(0.2)


def test_data_page_zip_upload_makes_a_dataset_and_a_bad_zip_shows_an_error(shapes_dir, tmp_path):
    from conftest import zip_folder

    at = app()
    good = zip_folder(shapes_dir, tmp_path / "my shapes.zip").read_bytes()
    at.file_uploader(key="data_zip").set_value(("my shapes.zip", good, "application/zip")).run()
    assert not at.exception
    ds = at.session_state["ds"]
    assert ds.startswith("my-shapes") and metrics(at)["Classes"] == "3"

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # one class only: not a classification dataset
        for i in range(3):
            im = io.BytesIO()
            Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(im, "PNG")
            z.writestr(f"cats/{i}.png", im.getvalue())
    at.file_uploader(key="data_zip").set_value(("cats.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception
    assert "at least 2" in texts(at.error)
    assert at.session_state["ds"] == ds  # the earlier dataset is still current, nothing lost
    assert metrics(at)["Classes"] == "3"


def test_data_page_add_class_with_a_bad_name_shows_an_error(shapes_ds):
    at = app("1_data", ds=shapes_ds)
    at.text_input(key="data_new_class").input("../evil")
    at.button(key="data_add_class").click().run()
    assert not at.exception
    assert "'..'" in texts(at.error)
    assert set(de.class_counts(shapes_ds)) == {"circle", "square", "triangle"}


def test_data_page_camera_snapshot_lands_in_the_chosen_class(shapes_dir):
    name = de.unique_name("pages-camera")
    shutil.copytree(shapes_dir, de.root() / name)
    before = de.class_counts(name)
    at = app("1_data", ds=name)
    at.toggle(key="data_use_camera").set_value(True).run()
    at.selectbox(key="data_camera_class").set_value("square")
    jpg = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(jpg, "JPEG")
    at.camera_input(key="data_camera").set_value(("snap.jpg", jpg.getvalue(), "image/jpeg")).run()
    at.button(key="data_camera_add").click().run()
    assert not at.exception and not at.error
    after = de.class_counts(name)
    assert after["square"] == before["square"] + 1 and after["circle"] == before["circle"]
    assert "Added the picture to 'square'" in texts(at.success)


# --- 2 · Backbone -----------------------------------------------------------------------------------

def test_backbone_choice_survives_a_reload():
    at = app("2_backbone")
    table = at.dataframe[0].value
    assert {"efficientnet_lite0", "resnet18"} <= set(table.index)
    assert table.loc["efficientnet_lite0", "weights"] == "bundled"
    at.selectbox(key="bb_name").set_value("resnet18").run()
    sid = at.query_params["sid"]
    reloaded = app("2_backbone", sid=sid)  # a new session with the same URL
    assert reloaded.selectbox(key="bb_name").value == "resnet18"


# --- 3 · Layers -------------------------------------------------------------------------------------

def test_layers_presets_show_the_right_trainable_counts(shapes_ds):
    from core.models import backbones

    at = app("3_layers", ds=shapes_ds)
    at.radio(key="layers_preset").set_value("head").run()
    model = backbones.build_model("efficientnet_lite0", 3, pretrained=False)
    head = sum(p.numel() for p in model.head.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert metrics(at)["Trainable parameters"] == f"{head:,}"
    assert metrics(at)["Total parameters"] == f"{total:,}"
    at.radio(key="layers_preset").set_value("all").run()
    assert metrics(at)["Trainable parameters"] == f"{total:,}"
    assert services.load(at.query_params["sid"])["trainable"] == "all"


def test_layers_page_with_a_vanished_backbone_says_so_and_links_back():
    sid = services.new_sid()
    services.save(sid, {**services.defaults(), "backbone": "resnet9000"})  # e.g. a draft from another version
    at = app("3_layers", sid=sid)
    assert at.error and "2 · Backbone" in texts(at.get("page_link"))


# --- 4 · Train --------------------------------------------------------------------------------------

def test_train_page_without_a_dataset_links_to_the_data_step():
    at = app("4_train")
    assert "needs a dataset" in texts(at.info)
    assert any("Data" in link.value for link in at.get("page_link"))
    assert not at.button  # nothing to start


def test_train_page_runs_a_tiny_job_and_a_reload_finds_it(shapes_ds):
    at = app("4_train", ds=shapes_ds)
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_image_size").set_value(64)
    at.selectbox(key="train_augment").set_value("none")
    at.number_input(key="train_batch_size").set_value(16)
    at.run()
    assert not at.error, texts(at.error)
    at.button(key="train_start").click().run()
    job = at.session_state["job"]
    assert at.query_params["job"] == job
    assert wait_for(job) == "finished"
    at.run()
    m = metrics(at)
    assert m["Epoch"] == "1 / 1"
    acc = [e for e in runs.open_run(job).events() if e["type"] == "epoch"][-1]["val_acc"]
    assert m["Validation accuracy"] == f"{acc:.1%}"
    assert plotly(at, "train_chart_epochs") and plotly(at, "train_chart_loss")
    cfg = runs.open_run(job).config()
    assert (cfg.epochs, cfg.image_size, cfg.augment) == (1, 64, "none")

    reloaded = app("4_train", ds=shapes_ds, job=job, sid=at.query_params["sid"])
    assert metrics(reloaded)["Epoch"] == "1 / 1"
    assert reloaded.number_input(key="train_epochs").value == 1


def test_pause_resume_and_stop_buttons_control_the_job(shapes_ds):
    at = app("4_train", ds=shapes_ds)
    at.number_input(key="train_epochs").set_value(2)
    at.selectbox(key="train_image_size").set_value(64)
    at.selectbox(key="train_augment").set_value("none")
    at.button(key="train_start").click().run()
    job_id = at.session_state["job"]
    at.button(key="train_pause").click().run()  # the worker is still building the model: it stops at step 1
    from pages import common

    job = common.job_manager().get(job_id)
    assert job.status() == "paused" and "paused" in texts(at.subheader)
    assert not at.button(key="train_resume").disabled and at.button(key="train_start").disabled
    time.sleep(1.5)
    steps = [e for e in runs.open_run(job_id).events() if e["type"] == "step"]
    assert len(steps) <= 1  # nothing trains while paused (at most the step already in flight)
    at.button(key="train_resume").click().run()
    assert wait_for(job_id) == "finished"

    at.run()
    at.button(key="train_start").click().run()
    second = at.session_state["job"]
    assert second != job_id
    at.button(key="train_stop").click().run()
    assert wait_for(second) == "stopped"
    at.run()
    assert "Stopped by you" in texts(at.info)


def test_with_several_gpus_the_train_page_offers_a_torchrun_job(shapes_ds, monkeypatch):
    from types import SimpleNamespace

    from pages import common

    started = []
    monkeypatch.setattr(common, "gpus", lambda: 4)
    monkeypatch.setattr(services, "start_job", lambda manager, config, owner=None, nproc=1:
                        started.append(nproc) or SimpleNamespace(id="not-a-run"))
    at = app("4_train", ds=shapes_ds)
    assert at.selectbox(key="train_gpus").value == 4  # all GPUs by default
    at.selectbox(key="train_gpus").set_value(2)
    at.button(key="train_start").click().run()
    assert started == [2]


def test_a_failed_job_shows_its_error_and_traceback(shapes_dir):
    name = de.unique_name("pages-broken")
    shutil.copytree(shapes_dir, de.root() / name)
    for p in sorted((de.root() / name / "triangle").iterdir())[1:]:
        p.unlink()  # one image left: the engine refuses the dataset inside the worker thread
    at = app("4_train", ds=name)
    at.selectbox(key="train_image_size").set_value(64)
    at.button(key="train_start").click().run()
    assert wait_for(at.session_state["job"]) == "failed"
    at.run()
    assert not at.exception
    assert "Training failed" in texts(at.error) and "triangle" in texts(at.error)
    assert any("Traceback" in c.value for c in at.code)
    assert not at.button(key="train_start").disabled  # the user can fix the data and start again


def test_an_interrupted_run_offers_resume_and_resumes(shapes_ds, tiny_config):
    run = runs.create(tiny_config(de.dataset_dir(shapes_ds)))
    run.append({"type": "start", "time": time.time()})  # a start without an end: the process died
    at = app("4_train", ds=shapes_ds, job=run.id)
    assert "stopped without finishing" in texts(at.warning)
    assert not at.button(key="train_resume").disabled
    at.button(key="train_resume").click().run()
    assert not at.exception
    assert wait_for(run.id) == "finished"


# --- 5 · Evaluate -----------------------------------------------------------------------------------

def test_evaluate_page_shows_accuracy_confusion_and_predicts_uploads(trained_run, shapes_dir):
    from core.results import metrics as core_metrics

    at = app("5_evaluate", job=trained_run)
    assert at.selectbox(key="eval_run").value == trained_run
    rep = core_metrics.evaluate_run(runs.open_run(trained_run).path)
    assert metrics(at)["Validation accuracy"] == f"{rep['accuracy']:.1%}"
    (fig,) = plotly(at, "eval_confusion")
    assert fig["data"][0]["z"] == rep["confusion"]
    table = at.dataframe[0].value
    assert {"macro avg", "weighted avg"} <= set(table.index)
    (roc,) = plotly(at, "eval_roc")
    aucs = [t["name"] for t in roc["data"] if "AUC" in t["name"]]
    assert len(aucs) == len(rep["classes"])
    (cal,) = plotly(at, "eval_reliability")
    assert "ECE" in cal["layout"]["title"]["text"]

    img = sorted((shapes_dir / "circle").iterdir())[0]
    at.file_uploader(key="eval_upload").set_value([(img.name, img.read_bytes(), "image/png")]).run()
    assert not at.exception
    from core.results.loading import load_model

    expected = load_model(runs.open_run(trained_run).path).predict([img])[0]["label"]
    assert any(f"**{expected}**" in md.value for md in at.markdown)
    at.toggle(key="eval_gradcam").set_value(True).run()
    assert not at.exception
    assert any(cap.startswith("Grad-CAM for ") for el in at.get("image") for cap in el.captions)


def test_evaluate_page_scores_another_dataset_by_class_name(trained_run, shapes_dir):
    name = de.unique_name("pages-test-set")
    for cls in ("circle", "square"):  # a test set with two of the three classes, plus one the model never saw
        shutil.copytree(shapes_dir / cls, de.root() / name / cls)
        for f in (de.root() / name / cls).iterdir():  # new bytes: copies of training images are left out
            f.write_bytes(f.read_bytes() + b"\0")
    shutil.copytree(shapes_dir / "triangle", de.root() / name / "hexagon")
    at = app("5_evaluate", job=trained_run)
    at.selectbox(key="eval_test_ds").set_value(name).run()
    at.button(key="eval_test_run").click().run()
    assert not at.exception and not at.error
    n = len(list((shapes_dir / "circle").iterdir()))
    m = metrics(at)
    assert m["Images evaluated"] == str(2 * n) and m["Images left out (unknown class)"] == str(n)
    assert "hexagon" in texts(at.warning) and "triangle" in texts(at.info)


def test_evaluate_page_without_runs_links_to_training(monkeypatch):
    from pages import common

    monkeypatch.setattr(common, "finished_runs", lambda: [])
    at = app("5_evaluate")
    assert "needs a trained model" in texts(at.info)


# --- 6 · Export -------------------------------------------------------------------------------------

def test_export_page_downloads_load_back_to_the_same_predictions(trained_run, shapes_dir, tmp_path, monkeypatch):
    stored: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def capture(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        stored[file_id] = path_or_data if isinstance(path_or_data, bytes) else Path(path_or_data).read_bytes()
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", capture)
    at = app("6_export", job=trained_run)

    def payload(key: str) -> bytes:
        proto = at.get_by_key(key).proto
        if type(proto).__name__ == "LinkButton":
            # weight files are links to GET /download/<token> (AppTest serves no routes; tests/test_downloads.py
            # downloads through a real server): the token must name the file, which must load back
            assert proto.url.startswith("/download/")
            path = downloads.resolve(proto.url.rsplit("/", 1)[-1])
            assert path is not None and path.is_relative_to(runs.open_run(trained_run).path.resolve())
            return path.read_bytes()
        url = proto.url
        (data,) = [v for k, v in stored.items() if k in url]
        assert data
        return data

    from core.results.loading import load_model

    img = sorted((shapes_dir / "square").iterdir())[0]
    reference = load_model(runs.open_run(trained_run).path).predict_proba([img])
    for key, suffix in (("export_safetensors", ".safetensors"), ("export_bundle", ".pt")):
        path = tmp_path / f"model{suffix}"
        path.write_bytes(payload(key))
        assert (load_model(path).predict_proba([img]) - reference).abs().max() < 1e-5
    card = json.loads(payload("export_card"))
    assert card["classes"] == ["circle", "square", "triangle"]
    assert json.loads(payload("export_config"))["epochs"] == 1

    at.button(key="export_build_bundle").click().run()
    assert not at.exception and not at.error
    with zipfile.ZipFile(io.BytesIO(payload("export_fmt_bundle"))) as z:
        names = z.namelist()
    assert any(n.endswith("predict.py") for n in names) and any(n.endswith(".safetensors") for n in names)


# --- 7 · Runs ---------------------------------------------------------------------------------------

def test_runs_page_lists_runs_and_opens_one(trained_run):
    # jobs left running by earlier tests create or change runs; the run list under the widgets must hold still
    common.job_manager().wait_idle(timeout=120)
    at = app("7_runs")
    ids = [r for r in at.dataframe[0].value["id"]]
    assert trained_run in ids
    at.multiselect(key="runs_compare").set_value([trained_run]).run()
    (fig,) = plotly(at, "runs_compare_chart")
    epochs = [e for e in runs.open_run(trained_run).events() if e["type"] == "epoch"]
    assert fig["data"][0]["y"] == [e["val_acc"] for e in epochs]
    at.selectbox(key="runs_pick").set_value(trained_run)
    at.button(key="runs_open").click().run()
    assert at.session_state["job"] == trained_run and at.query_params["job"] == trained_run
    at.switch_page("pages/6_export.py").run()
    assert at.selectbox(key="export_run").value == trained_run


def test_train_page_custom_augmentation_starts_from_the_preset_and_previews(shapes_ds):
    at = app("4_train", ds=shapes_ds)
    at.selectbox(key="train_augment").set_value("strong").run()
    at.selectbox(key="train_augment").set_value("custom").run()
    assert not at.exception
    assert at.selectbox(key="train_aug_policy").value == "trivialaugment"  # carried over from 'strong'
    at.slider(key="train_aug_rotation").set_value(30).run()
    saved = services.load(at.query_params["sid"])
    assert (saved["augment"], saved["aug_rotation"], saved["aug_policy"]) == ("custom", 30.0, "trivialaugment")
    grids = [g for g in at.get("image") if g.captions == [f"#{i}" for i in range(1, 9)]]
    assert grids, "the augmentation preview shows eight versions of one image"
    assert len(set(grids[0].value)) > 1  # random augmentations differ, so their files differ


# (Sign-in and ownership: tests/security/.)


def test_a_run_id_in_the_url_cannot_point_outside_the_workspace(shapes_ds, tmp_path, tiny_config):
    outside = tmp_path / "not-a-run"
    outside.mkdir()
    (outside / "config.json").write_text(tiny_config(de.dataset_dir(shapes_ds)).to_json())
    at = app("4_train", ds=shapes_ds, job=str(outside))
    assert "No training run yet" in texts(at.caption)


def test_a_deep_link_on_a_fresh_server_still_goes_through_the_app_navigation(shapes_ds):
    # A fresh server starts in Streamlit's old "pages/ folder" mode until st.navigation has run once; a
    # first request for /train would run that page file alone, without streamlit_app.py's shared state.
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["ds"] = shapes_ds
    at.switch_page("pages/4_train.py").run()  # the tab's very first request is the deep link
    assert not at.exception
    assert "draft" in at.session_state  # streamlit_app.py ran: shared state was set up
    # the draft the shared state set up, filled by the default recipe (balanced) for this dataset (the plan's
    # speed probe is cached per process, so this plan is the one the page made)
    plan = services.preset_plan(services.dataset_dir(shapes_ds), "balanced")
    assert at.session_state["draft"]["preset"] == "balanced"
    assert at.number_input(key="train_epochs").value == plan["fields"]["epochs"]
    assert "**Dataset:** " + shapes_ds in texts(at.markdown)  # the app's own sidebar, not the old one
