"""The Evaluate, Export and Runs steps for a text run, through AppTest (issue 17): per-class metrics, the texts
behind a confusion cell, typed texts predicted in input order with a token-level explanation, the text exports.

Kept fast: one epoch, head only, 32 tokens, 48 texts.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import techniques
from core.config import RunConfig
from core.data import text
from core.results import loading, metrics, text_eval
from core.storage import downloads

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
# user text is data: tags, links and emphasis must come out as the characters typed, never as markup
TYPED = ["We ate <b>pizza</b> and [pasta](http://x.example) tonight", "The storm brought *heavy* rain.",
         "Who won the tennis final?"]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> str:
    """A finished one-epoch, head-only text run on the topics sample; its run id."""
    data = text.make_sample(tmp_path_factory.mktemp("tr") / "topics.csv", per_class=12)
    config = techniques.default_text_config(
        RunConfig(data=str(data), device="cpu", epochs=1, max_length=32, trainable="head"),
        explicit={"epochs", "max_length", "trainable"})
    result = techniques.fit(config)
    assert result["status"] == "finished"
    return Path(result["run_dir"]).name


@pytest.fixture(scope="module")
def report(text_run) -> dict:
    return text_eval.evaluate_text_run(_run_dir(text_run))


def _run_dir(run_id: str) -> Path:
    from core.storage import runs

    return runs.open_run(run_id).path


def _app(page: str, run_id: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["job"] = run_id
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _frame(at: AppTest, key: str):
    """The data frame in the box with this key."""
    (frame,) = at.get_by_key(key).dataframe
    return frame.value


def test_a_text_run_s_evaluation_shows_accuracy_and_the_per_class_table(text_run, report):
    at = _app("5_evaluate", text_run)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Validation accuracy"] == f"{report['accuracy']:.1%}"
    assert shown["Validation texts"] == str(len(report["items"])) == str(sum(map(sum, report["confusion"])))
    table = _frame(at, "eval_table")
    assert list(table.index[:4]) == ["food", "sports", "technology", "weather"]
    for row in report["per_class"]:
        assert table.loc[row["class"], "f1"] == pytest.approx(100 * row["f1"])
        assert table.loc[row["class"], "support"] == row["support"] > 0
    assert not at.get("image")  # no image gallery for a text run
    mistakes = _frame(at, "eval_text_mistakes")  # top losses: the wrong texts, most confidently wrong first
    wrong = sorted((it for it in report["items"] if it["label"] != it["pred"]), key=lambda it: -it["loss"])
    assert list(mistakes["text"]) == [it["text"] for it in wrong] and len(wrong) > 0
    assert list(mistakes["loss"]) == sorted(mistakes["loss"], reverse=True)


def test_a_confusion_cell_lists_the_texts_of_that_cell(text_run, report):
    at = _app("5_evaluate", text_run)
    chooser = at.selectbox(key="eval_text_cell")
    assert len(chooser.options) == sum(v > 0 for row in report["confusion"] for v in row)
    mistakes = [(t, p) for t, row in enumerate(report["confusion"]) for p, v in enumerate(row) if v and t != p]
    assert mistakes, "one head-only epoch leaves mistakes on this sample"
    largest = max(mistakes, key=lambda c: report["confusion"][c[0]][c[1]])
    t0, p0 = map(int, chooser.value.split(","))
    assert t0 != p0 and report["confusion"][t0][p0] == report["confusion"][largest[0]][largest[1]]  # opens on it
    hits = max(range(len(report["classes"])), key=lambda c: report["confusion"][c][c])
    for t, p in (largest, (hits, hits)):  # a mistake, and a class's hits
        at.selectbox(key="eval_text_cell").set_value(f"{t},{p}").run()
        rows = _frame(at, "eval_cell_texts")
        expected = [it["text"] for it in metrics.cell_items(report, t, p)]
        assert len(expected) == report["confusion"][t][p] and list(rows["text"]) == expected
        assert set(rows["true class"]) == {report["classes"][t]} and set(rows["predicted"]) == {report["classes"][p]}


def test_typed_texts_are_predicted_in_order_with_an_escaped_token_explanation(text_run):
    at = _app("5_evaluate", text_run)
    at.text_area(key="eval_texts").input("\n".join(TYPED[:1] + [""] + TYPED[1:])).run()  # a blank line is skipped
    assert not at.exception, at.exception
    rows = _frame(at, "eval_texts_preds")
    reference = loading.load_model(_run_dir(text_run)).predict(TYPED, top_k=3)
    assert list(rows["text"]) == TYPED
    assert list(rows["label"]) == [p["label"] for p in reference]
    assert list(rows["confidence"]) == pytest.approx([100 * p["confidence"] for p in reference], abs=1e-4)
    assert all(len(cell.split(" · ")) == 3 for cell in rows["top 3"])

    (shown,) = [h.value for h in at.get("html") if "token-explanation" in h.value]
    for word in ("pizza", "pasta", "tonight"):
        assert f">{word}</span>" in shown  # each token of the typed text, coloured
    assert "<b>" not in shown and "&lt;" in shown and "&gt;" in shown  # the typed tag is text, not markup
    tokens = list(_frame(at, "eval_explain_table")["token"])
    assert "[CLS]" not in tokens and tokens[:4] == ["we", "ate", "<", "b"]

    at.selectbox(key="eval_explain_text").select(1).run()  # explain the second text instead
    (shown,) = [h.value for h in at.get("html") if "token-explanation" in h.value]
    assert ">storm</span>" in shown and "pizza" not in shown


def test_the_export_step_offers_the_text_formats_and_the_onnx_check(text_run, tmp_path):
    at = _app("6_export", text_run)
    assert not at.error
    link = at.get_by_key("export_safetensors").proto
    weights = downloads.resolve(link.url.rsplit("/", 1)[-1])
    tok = downloads.resolve(at.get_by_key("export_tokenizer").proto.url.rsplit("/", 1)[-1])
    (tmp_path / "m.safetensors").write_bytes(weights.read_bytes())
    with zipfile.ZipFile(tok) as z:
        assert "tokenizer/tokenizer.json" in z.namelist()
        z.extractall(tmp_path)
    ours = loading.load_model(_run_dir(text_run)).predict(TYPED)
    theirs = loading.load_model(tmp_path / "m.safetensors").predict(TYPED)
    assert [p["label"] for p in theirs] == [p["label"] for p in ours]

    buttons = {b.key for b in at.button}
    assert {"export_build_onnx", "export_build_bundle"} <= buttons
    assert not {"export_build_torchscript", "export_build_int8"} & buttons  # image-only formats are not offered
    at.button(key="export_build_onnx").click().run()
    assert not at.exception and not at.error
    assert any("onnxruntime" in s.value for s in at.success)
    onnx = downloads.resolve(at.get_by_key("export_fmt_onnx").proto.url.rsplit("/", 1)[-1])
    assert onnx.suffix == ".onnx" and onnx.stat().st_size > 1e6
    at.button(key="export_build_bundle").click().run()
    bundle = downloads.resolve(at.get_by_key("export_fmt_bundle").proto.url.rsplit("/", 1)[-1])
    with zipfile.ZipFile(bundle) as z:
        assert {"predict.py", "model.safetensors", "tokenizer/tokenizer.json"} <= set(z.namelist())
    assert any("load_model" in c.value and ".predict([" in c.value for c in at.code)


def test_the_runs_page_classifies_texts_for_a_text_run(text_run):
    at = _app("7_runs", text_run)
    at.selectbox(key="runs_pick").set_value(text_run).run()
    at.text_area(key="runs_texts").input("\n".join(TYPED)).run()
    rows = _frame(at, "runs_texts_preds")
    assert list(rows["text"]) == TYPED
    assert list(rows["label"]) == [p["label"] for p in loading.load_model(_run_dir(text_run)).predict(TYPED)]


def test_the_text_evaluation_speaks_chinese_with_the_typed_text_kept_as_it_is(text_run):
    from core import i18n

    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(job=text_run, lang="zh_CN")
    at.run()
    at.switch_page("pages/5_evaluate.py").run()
    with i18n.language("zh_CN"):  # AppTest formats the select boxes' options again in this thread
        at.text_area(key="eval_texts").input(TYPED[0]).run()
    assert not at.exception, at.exception
    assert "验证集文本数" in {m.label for m in at.metric}
    assert any("绿色" in c.value for c in at.caption)  # the explanation's legend, its placeholders filled
    assert list(_frame(at, "eval_texts_preds")["文本"]) == [TYPED[0]]
