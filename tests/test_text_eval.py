"""Evaluation and token-level explanation of a text classifier (issue 17)."""
from __future__ import annotations

import pytest

from core import techniques
from core.config import RunConfig
from core.data import text
from core.results import loading, metrics, text_eval


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> str:
    data = text.make_sample(tmp_path_factory.mktemp("te") / "topics.csv", per_class=16)
    config = techniques.default_text_config(RunConfig(data=str(data), device="cpu", epochs=6, max_length=16),
                                            explicit={"epochs", "max_length"})
    return techniques.fit(config)["run_dir"]


def test_a_text_run_is_evaluated_per_class_with_the_texts_behind_each_cell(text_run):
    rep = text_eval.evaluate_text_run(text_run)
    assert rep["classes"] == ["food", "sports", "technology", "weather"]
    assert sum(map(sum, rep["confusion"])) == len(rep["items"]) and rep["accuracy"] >= 0.75
    assert {"precision", "recall", "f1", "support"} <= set(rep["per_class"][0])
    cell = metrics.cell_items(rep, 0, 0)
    assert cell and all(it["true_class"] == "food" and it["text"] for it in cell)
    assert metrics.top_losses(rep, limit=3)[0]["loss"] >= metrics.top_losses(rep, limit=3)[-1]["loss"]


def test_integrated_gradients_put_the_topic_word_first_and_add_up_to_the_logit_change(text_run):
    model = loading.load_model(text_run)
    e = text_eval.explain_text(model, "We talked about the pizza all evening.")
    assert e["label"] == "food"
    assert e["tokens"][max(range(len(e["scores"])), key=e["scores"].__getitem__)] == "pizza"
    assert abs(e["gap"]) < 0.05  # completeness: the scores sum to f(text) - f(all padding)
