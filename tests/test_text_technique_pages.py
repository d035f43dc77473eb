"""The technique pages with text (issue 17): 8 · Distill, 9 · Multi-task and 10 · Pretrain through AppTest.

Kept fast: the 96-row topics sample, the bundled all-MiniLM-L6-v2, one epoch at max_length 32 for every job.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from conftest import wait_for_run as wait_for
from test_technique_pages import app, plotly, texts

from core import techniques
from core.app import services, text_services
from core.data import text
from core.storage import runs

TINY = {"epochs": 1, "max_length": 32, "batch_size": 32, "device": "cpu"}


def text_draft(**fields) -> str:
    """A saved draft holding the text recipe with CPU-sized settings; its sid for the URL."""
    sid = services.new_sid()
    services.save(sid, {**services.defaults(), **text_services.text_fields(), **TINY, **fields})
    return sid


@pytest.fixture(scope="module")
def text_ds() -> str:
    return text_services.import_sample()


@pytest.fixture(scope="module")
def teacher(text_ds) -> str:
    """A finished text classifier (head on all-MiniLM-L6-v2) on the topics dataset: the run id."""
    draft = {**services.defaults(), **text_services.text_fields(), **TINY, "epochs": 3}
    result = techniques.fit(text_services.to_config(draft, text_ds))
    assert result["status"] == "finished"
    return Path(result["run_dir"]).name


def _two_label_csv(tmp_path) -> bytes:
    """The topics sample with a second label column: 'indoor' for food and technology, else 'outdoor'."""
    src = text.make_sample(tmp_path / "topics.csv", per_class=6)
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["text", "topic", "place"])
    for r in rows:
        w.writerow([r["text"], r["label"], "indoor" if r["label"] in ("food", "technology") else "outdoor"])
    return out.getvalue().encode()


def test_distill_page_takes_a_text_teacher_trains_a_text_student_and_compares(text_ds, teacher):
    at = app("8_distill", ds=text_ds, sid=text_draft())
    at.selectbox(key="distill_teacher").set_value(teacher).run()
    assert not at.exception and not at.error, texts(at.error)
    student = at.selectbox(key="distill_student")
    assert student.options[0] == "minilm_l3_of_l6" and student.value == "minilm_l3_of_l6"
    assert "efficientnet_lite0" not in student.options  # image backbones are no students of a text teacher
    at.number_input(key="distill_epochs").set_value(1)
    at.number_input(key="distill_max_length").set_value(32).run()
    at.button(key="distill_start").click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = at.session_state["job"]
    assert wait_for(job) == "finished"
    cfg = runs.open_run(job).config()
    assert (cfg.technique, cfg.backbone, cfg.teacher, cfg.epochs, cfg.max_length) == \
        ("text_distill", "minilm_l3_of_l6", teacher, 1, 32)
    at.run()
    at.button(key="distill_compare").click().run()
    assert not at.exception and not at.error, texts(at.error)
    rows = at.session_state["distill_result"][1]
    assert [r["model"] for r in rows][0] == "teacher" and len(rows) == 2 and job[:15] in rows[1]["model"]
    assert [r["backbone"] for r in rows] == ["all_minilm_l6_v2", "minilm_l3_of_l6"]
    assert rows[1]["parameters"] < rows[0]["parameters"] and all(0 <= r["accuracy"] <= 1 for r in rows)
    assert plotly(at, "distill_chart")


def test_multitask_page_trains_text_heads_on_the_chosen_columns_and_routes_the_run(text_ds, tmp_path):
    at = app("9_multitask", ds=text_ds, sid=text_draft())
    assert not at.exception and not at.error, texts(at.error)
    assert at.multiselect(key="mt_tasks").options == ["label"]  # the dataset's own table: one label column
    options = at.radio(key="mt_source").options
    at.radio(key="mt_source").set_value(options[1]).run()
    at.file_uploader(key="mt_text_upload").set_value(("tickets.csv", _two_label_csv(tmp_path), "text/csv")).run()
    assert not at.exception and not at.error, texts(at.error)
    assert at.multiselect(key="mt_tasks").value == ["topic", "place"]
    assert "24 texts" in texts(at.caption) and "topic: 4 classes" in texts(at.caption)
    at.multiselect(key="mt_tasks").set_value(["place", "topic"]).run()
    at.number_input(key="mt_weight_place").set_value(0.5)
    at.number_input(key="mt_epochs").set_value(1)
    at.number_input(key="mt_max_length").set_value(32).run()
    at.button(key="mt_start").click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = at.session_state["job"]
    assert wait_for(job) == "finished"
    cfg = runs.open_run(job).config()
    assert (cfg.technique, cfg.tasks, cfg.task_weights, cfg.max_length) == \
        ("text_multitask", ["place", "topic"], [0.5, 1.0], 32)
    at.run()
    assert not at.error, texts(at.error)
    names = sorted(tr["name"] for tr in plotly(at, "mt_chart_tasks")[0]["data"])
    assert names == ["place F1", "place acc", "topic F1", "topic acc"]
    shown = next(d.value for d in at.dataframe if "task" in d.value.columns)  # the last epoch's per-task table
    assert sorted(shown["task"]) == ["place", "topic"] and all(0 <= a <= 1 for a in shown["val_acc"])

    at.switch_page("pages/5_evaluate.py").run()  # not one classifier: Evaluate sends it to its own page
    assert "not one classifier" in texts(at.info)
    assert any("Multi-task" in pl.value for pl in at.get("page_link"))


def test_pretrain_page_adapts_a_text_encoder_that_the_backbone_step_then_offers(text_ds):
    at = app("10_pretrain", ds=text_ds, sid=text_draft())
    assert not at.exception and not at.error, texts(at.error)
    assert at.selectbox(key="pretrain_text_base").value == "all_minilm_l6_v2"
    at.number_input(key="pretrain_epochs").set_value(1)
    at.number_input(key="pretrain_batch").set_value(32)
    at.number_input(key="pretrain_max_length").set_value(32).run()
    at.button(key="pretrain_start").click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = at.session_state["job"]
    assert wait_for(job) == "finished"
    run = runs.open_run(job)
    cfg = run.config()
    assert (cfg.technique, cfg.backbone, cfg.trainable, cfg.max_length) == \
        ("text_pretrain", "all_minilm_l6_v2", "all", 32)
    assert cfg.sources == [str(services.dataset_dir(text_ds))]
    name = f"adapted-text:all_minilm_l6_v2:{job}"
    assert run.result()["backbone_name"] == name
    at.run()
    assert name in texts(at.success)
    assert plotly(at, "pretrain_chart")

    at.switch_page("pages/2_backbone.py").run()  # the adapted encoder is a choice of the text Backbone step
    assert not at.exception, at.exception
    assert any(o.startswith(f"{name} — ") for o in at.selectbox(key="bb_name").options)  # shown "name — title"
    table = next(d.value for d in at.dataframe if "note" in d.value.columns)
    assert name in table.index and "masked-language-model" in table.loc[name, "note"]
    at.selectbox(key="bb_name").set_value(name).run()
    assert at.session_state["draft"]["backbone"] == name
    assert "adapted to your texts" in texts(at.success)
