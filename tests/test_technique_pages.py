"""The technique pages (8 · Distill, 9 · Multi-task, 10 · Pretrain) through AppTest, with tiny real jobs."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import wait_for_run as wait_for
from streamlit.testing.v1 import AppTest

from core.data import edits as de
from core.app import services
from core.storage import runs

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")


def app(page: str, **query) -> AppTest:
    """A fresh tab on ``page`` with the given query parameters, already run."""
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def plotly(at: AppTest, key: str) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart") if key in el.proto.id]


def tiny_draft(**fields) -> str:
    """A saved draft with CPU-sized settings; returns its sid for the URL."""
    sid = services.new_sid()
    services.save(sid, {**services.defaults(), "backbone": "efficientnet_lite0", "image_size": 64, "epochs": 1,
                      "batch_size": 16, "augment": "none", "trainable": "head", **fields})
    return sid


@pytest.fixture(scope="module")
def digits_ds(digits_dir) -> str:
    name = de.unique_name("tech-digits")
    shutil.copytree(digits_dir, de.root() / name)
    return name


@pytest.mark.parametrize("page, message, link", [
    ("8_distill", "needs a teacher", "Train"),
    ("9_multitask", "several label columns", "Data"),
    ("10_pretrain", "needs a dataset", "Data"),
])
def test_each_page_says_what_is_missing_in_an_empty_workspace(page, message, link, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path))  # no datasets, no runs
    at = app(page)
    assert message in texts(at.info)
    assert any(link in pl.value for pl in at.get("page_link"))
    assert not at.button  # nothing to start


def test_pretrain_page_runs_simclr_and_shows_the_loss(digits_ds):
    sid = tiny_draft()
    at = app("10_pretrain", ds=digits_ds, sid=sid)
    at.number_input(key="pretrain_epochs").set_value(1)
    at.number_input(key="pretrain_batch").set_value(32)
    at.button(key="pretrain_start").click().run()
    job = at.session_state["job"]
    assert wait_for(job) == "finished"
    at.run()
    assert not at.exception and not at.error, texts(at.error)
    losses = [e["loss"] for e in runs.open_run(job).events() if e["type"] == "step"]
    fig = plotly(at, "pretrain_chart")
    assert fig and fig[0]["data"][0]["y"] == losses and len(losses) == 120 // 32  # full batches only
    cfg = runs.open_run(job).config()
    assert cfg.technique == "simclr" and cfg.trainable == "all"  # a 'head' draft adapts the body
    name = runs.open_run(job).result()["backbone_name"]
    assert name in texts(at.success)
    assert name in [r["name"] for r in services.backbone_table()]


def test_multitask_page_reads_the_dataset_csv_and_trains_every_task(digits_ds):
    name = de.unique_name("tech-mt")
    folder = de.root() / name
    shutil.copytree(de.dataset_dir(digits_ds), folder)
    with open(folder / "labels.csv", "w", newline="") as f:
        rows = [[p.relative_to(folder).as_posix(), p.parent.name, "even" if int(p.parent.name) % 2 == 0 else "odd"]
                for p in sorted(folder.rglob("*.png"))]
        csv.writer(f).writerows([["filename", "digit", "parity"], *rows])
    at = app("9_multitask", ds=name, sid=tiny_draft())
    at.radio(key="mt_source").set_value(f"The CSV in dataset {name}").run()
    assert not at.error, texts(at.error)
    assert at.multiselect(key="mt_tasks").value == ["digit", "parity"]
    assert "120 images" in texts(at.caption) and "digit: 10 classes" in texts(at.caption)
    at.number_input(key="mt_weight_parity").set_value(0.0)
    at.number_input(key="mt_weight_digit").set_value(0.0).run()
    assert "weight above 0" in texts(at.warning) and at.button(key="mt_start").disabled

    at.number_input(key="mt_weight_parity").set_value(0.5)
    at.number_input(key="mt_weight_digit").set_value(1.0).run()
    at.button(key="mt_start").click().run()
    job = at.session_state["job"]
    assert wait_for(job) == "finished"
    cfg = runs.open_run(job).config()
    assert (cfg.technique, cfg.tasks, cfg.task_weights) == ("multitask", ["digit", "parity"], [1.0, 0.5])
    at.run()
    assert not at.error, texts(at.error)
    names = sorted(tr["name"] for tr in plotly(at, "mt_chart_tasks")[0]["data"])
    assert names == ["digit F1", "digit acc", "parity F1", "parity acc"]


def test_distill_page_offers_a_finished_run_as_teacher_and_compares(shapes_ds, tiny_config):
    from core.techniques import fit

    teacher = Path(fit(tiny_config(de.dataset_dir(shapes_ds)))["run_dir"]).name
    at = app("8_distill", sid=tiny_draft())
    options = at.selectbox(key="distill_teacher").options  # shown as "<id[:15]> · backbone · status, acc"
    assert any(o.startswith(f"{teacher[:15]} · efficientnet_lite0 · finished") for o in options)
    at.selectbox(key="distill_teacher").set_value(teacher)
    at.selectbox(key="distill_student").set_value("efficientnet_lite0")  # the one backbone with offline weights
    at.slider(key="distill_alpha").set_value(0.3)
    at.button(key="distill_start").click().run()
    job = at.session_state["job"]
    assert wait_for(job) == "finished"
    cfg = runs.open_run(job).config()
    assert (cfg.technique, cfg.teacher, cfg.distill_alpha) == ("distill", teacher, 0.3)
    at.run()
    at.button(key="distill_compare").click().run()
    assert not at.exception and not at.error, texts(at.error)
    rows = at.session_state["distill_result"][1]
    assert [r["model"] for r in rows][0] == "teacher" and len(rows) == 2 and job[:15] in rows[1]["model"]
    assert all(0 <= r["accuracy"] <= 1 and r["parameters"] > 0 for r in rows)
    assert plotly(at, "distill_chart")
