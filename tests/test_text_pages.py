"""The guided steps with a text dataset (issue 17), through AppTest: Data, Backbone, Layers and Train.

Kept fast: the 96-row topics sample, the bundled all-MiniLM-L6-v2, one head-only epoch at max_length 32.
"""
from __future__ import annotations

import io
import zipfile

import pytest
from conftest import wait_for_run
from pagekit import app, metrics, plotly, texts

from core.app import text_services
from core.data import edits as de
from core.data import text
from core.storage import runs


def _csv_bytes(tmp_path) -> bytes:
    """The topics sample with one duplicated row and one row holding a byte that is not UTF-8 (row 4)."""
    body = text.make_sample(tmp_path / "topics.csv", per_class=8).read_bytes()
    lines = body.splitlines(keepends=True)
    lines.insert(3, b"The article was about the caf\xe9 downtown.,food\r\n")  # Latin-1, row 4 as a sheet shows it
    lines.append(lines[1])  # row 2 once more: a duplicate
    return b"".join(lines)


def table(at, column: str):
    """The first dataframe on the page with ``column`` (a plain st.dataframe has no key in AppTest)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


@pytest.fixture(scope="module")
def text_ds() -> str:
    """The topics sample as a workspace text dataset."""
    return text_services.import_sample()


def test_a_text_csv_upload_becomes_a_text_dataset_with_its_health_report(tmp_path):
    at = app()
    at.file_uploader(key="data_zip").set_value(("support tickets.csv", _csv_bytes(tmp_path), "text/csv")).run()
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    ds = at.session_state["ds"]
    assert ds.startswith("support-tickets")
    assert text.is_stored(de.dataset_dir(ds)) and text_services.is_text_dataset(ds)
    m = metrics(at)
    assert (m["Texts"], m["Classes"]) == ("34", "4")
    bars = plotly(at, "data_counts_chart")[0]["data"][0]
    assert dict(zip(bars["x"], bars["y"])) == {"food": 10, "sports": 8, "technology": 8, "weather": 8}
    assert plotly(at, "data_lengths_chart")
    warnings = texts(at.warning)
    assert "appear more than once" in warnings and "not valid UTF-8 (rows 4)" in warnings
    enc = table(at, "problem")
    assert list(enc.iloc[:, 0]) == ["4"] and "0xE9" in enc.iloc[0, 1]
    dup = table(at, "rows")
    assert list(dup.iloc[:, 0]) == ["2, 35"]
    assert at.slider(key="data_val_fraction").value == pytest.approx(0.2)
    assert at.session_state["draft"]["backbone"] == "all_minilm_l6_v2"  # the text recipe became the draft


def test_a_zip_of_class_folders_of_txt_files_is_a_text_dataset_and_a_one_class_table_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for cls in ("spam", "ham"):
            for i in range(3):
                z.writestr(f"mail/{cls}/{i}.txt", f"message {i} about {cls} things".encode())
    at = app()
    at.file_uploader(key="data_zip").set_value(("mail.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception and not at.error, texts(at.error)
    assert (metrics(at)["Texts"], metrics(at)["Classes"]) == ("6", "2")
    ds = at.session_state["ds"]

    at.file_uploader(key="data_zip").set_value(("one.csv", b"text,label\nhello there,a\nhi again,a\n",
                                                "text/csv")).run()
    assert "one class only" in texts(at.error)
    assert at.session_state["ds"] == ds  # the earlier dataset stays current
    assert not [n for n in de.list_datasets() if n.startswith("one")]


def test_the_topics_sample_and_the_backbone_step_show_the_text_encoders_and_images_switch_back(text_ds):
    at = app()
    at.selectbox(key="data_sample").set_value("topics")
    at.button(key="data_use_sample").click().run()
    assert at.session_state["ds"] == text_ds and metrics(at)["Classes"] == "4"
    at.switch_page("pages/2_backbone.py").run()
    assert not at.exception
    box = at.selectbox(key="bb_name")
    assert box.options[0].startswith("all_minilm_l6_v2") and "efficientnet_lite0" not in " ".join(box.options)
    assert box.value == "all_minilm_l6_v2"
    assert "works with no network" in texts(at.success)
    assert "bert_base_uncased" in table(at, "note").index

    at.switch_page("pages/1_data.py").run()  # back to images: the draft drops the text choices
    at.selectbox(key="data_sample").set_value("shapes")
    at.button(key="data_use_sample").click().run()
    assert metrics(at)["Images"] and at.session_state["draft"]["backbone"] == "efficientnet_lite0"
    at.switch_page("pages/2_backbone.py").run()
    assert at.selectbox(key="bb_name").value == "efficientnet_lite0"


def test_the_layers_step_shows_embeddings_blocks_and_head_with_the_share_that_learns(text_ds):
    at = app("3_layers", ds=text_ds)
    assert not at.exception
    groups = table(at, "group")
    assert list(groups.iloc[:, 0]) == ["embeddings", *[f"block{i}" for i in range(1, 7)], "head"]
    assert list(groups.iloc[:, 3]) == [False] * 7 + [True]  # the text recipe: head only
    head_share = metrics(at)["Share of weights that learn"]
    at.radio(key="layers_preset").set_value("last").run()
    assert list(table(at, "group").iloc[:, 3]) == [False] * 5 + [True] * 3
    m = metrics(at)
    learn, total = (int(m[k].replace(",", "")) for k in ("Trainable parameters", "Total parameters"))
    assert 0.1 < learn / total < 0.2 and m["Share of weights that learn"] != head_share
    assert at.session_state["draft"]["trainable"] == "last-2"


def test_train_starts_a_text_job_with_the_draft_s_settings(text_ds):
    at = app("4_train", ds=text_ds)
    assert not at.exception and not at.error, texts(at.error)
    assert "text recipe" in texts(at.caption)
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_max_length").set_value(32)
    at.number_input(key="train_batch_size").set_value(32)
    at.run()
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    job = at.session_state["job"]
    assert wait_for_run(job) == "finished"
    cfg = runs.open_run(job).config()
    assert (cfg.technique, cfg.backbone, cfg.trainable, cfg.epochs, cfg.max_length, cfg.augment) == \
        ("text", "all_minilm_l6_v2", "head", 1, 32, "none")
    at.run()
    assert metrics(at)["Epoch"] == "1 / 1"
    assert plotly(at, "train_chart_epochs")


@pytest.mark.parametrize("page,says,action", [("0_quick", "Quick start is for photos", "quick_train"),
                                             ("11_review", "Label review looks at images", "review_find")])
def test_the_photo_only_pages_send_a_text_dataset_to_the_guided_steps(text_ds, page, says, action):
    at = app(page, ds=text_ds)
    assert says in texts(at.info)
    assert action not in {b.key for b in at.button}  # nothing that would scan the text table as images
