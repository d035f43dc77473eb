"""Test-time augmentation in the app: the Evaluate step scores with a chosen mode, the Export step bakes one into
TorchScript and ONNX graphs (issue 13). Kept fast: 64-pixel input, one epoch, head only."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pagekit import app, plotly, texts

from core import i18n
from core.data import edits as de
from core.storage import downloads, runs


@pytest.fixture(scope="module")
def digits_run(digits_dir, tiny_config) -> str:
    """A finished one-epoch run on the 120-image digits sample: 24 validation images, and a model unsure enough
    that the mirror changes its accuracy (mirrored digits are other shapes)."""
    from core.techniques import fit

    name = de.unique_name("tta-digits")
    shutil.copytree(digits_dir, de.root() / name)
    result = fit(tiny_config(de.dataset_dir(name), epochs=1))
    assert result["status"] == "finished"
    return Path(result["run_dir"]).name


def _metric(at, label: str):
    (m,) = [m for m in at.metric if m.label == label]
    return m


def test_choosing_flip_on_evaluate_shows_the_flip_accuracy_its_delta_and_flip_figures(digits_run):
    from core.results import metrics as core_metrics

    path = runs.open_run(digits_run).path
    plain = core_metrics.evaluate_run(path)
    flip = core_metrics.evaluate_run(path, tta="flip")
    # the mirror must change what the page shows, or this test could not tell the two evaluations apart
    assert flip["accuracy"] != plain["accuracy"] and flip["confusion"] != plain["confusion"]

    at = app("5_evaluate", job=digits_run)
    assert at.radio(key="eval_tta").value == "none"
    acc = _metric(at, "Validation accuracy")
    assert acc.value == f"{plain['accuracy']:.1%}" and not acc.proto.delta

    at.radio(key="eval_tta").set_value("flip").run()
    assert not at.exception and not at.error
    acc = _metric(at, "Validation accuracy")
    assert acc.value == f"{flip['accuracy']:.1%}"
    points = (flip["accuracy"] - plain["accuracy"]) * 100
    assert acc.proto.delta == f"{points:+.3g} pp vs no TTA"
    f1 = (flip["averages"]["macro"]["f1"] - plain["averages"]["macro"]["f1"]) * 100
    assert _metric(at, "Macro F1").proto.delta == f"{f1:+.3g} pp vs no TTA"
    (fig,) = plotly(at, "eval_confusion")
    assert fig["data"][0]["z"] == flip["confusion"]  # the figures below use the flip evaluation too

    at.radio(key="eval_tta").set_value("none").run()
    assert _metric(at, "Validation accuracy").value == f"{plain['accuracy']:.1%}"
    (fig,) = plotly(at, "eval_confusion")
    assert fig["data"][0]["z"] == plain["confusion"]


def test_multicrop_on_evaluate_reads_the_multicrop_evaluation(digits_run):
    from core.results import metrics as core_metrics

    path = runs.open_run(digits_run).path
    plain, crops = core_metrics.evaluate_run(path), core_metrics.evaluate_run(path, tta="multicrop")
    assert crops["accuracy"] != plain["accuracy"]
    at = app("5_evaluate", job=digits_run)
    at.radio(key="eval_tta").set_value("multicrop").run()
    assert not at.exception
    acc = _metric(at, "Validation accuracy")
    assert acc.value == f"{crops['accuracy']:.1%}"
    assert acc.proto.delta == f"{(crops['accuracy'] - plain['accuracy']) * 100:+.3g} pp vs no TTA"

    zh = app("5_evaluate", job=digits_run, lang="zh_CN")
    with i18n.language("zh_CN"):  # AppTest applies the radio's format_func in this thread: in the page's language
        zh.radio(key="eval_tta").set_value("multicrop").run()
    assert not zh.exception
    points = (crops["accuracy"] - plain["accuracy"]) * 100
    assert zh.metric[0].proto.delta == f"{points:+.3g} 个百分点（相对不用 TTA）"


def test_multicrop_on_export_builds_torchscript_and_onnx_files_whose_cards_record_it(trained_run):
    from core.results import formats

    path = runs.open_run(trained_run).path
    at = app("6_export", job=trained_run)
    assert at.selectbox(key="export_tta_onnx").value == "none"
    with pytest.raises(KeyError):  # int8 and the zip bundle cannot carry test-time augmentation
        at.selectbox(key="export_tta_int8")
    for fmt in ("torchscript", "onnx"):
        at.selectbox(key=f"export_tta_{fmt}").set_value("multicrop").run()
        assert "softmax of it gives them" in texts(at.caption)
        at.button(key=f"export_build_{fmt}").click().run()
        assert not at.exception and not at.error, texts(at.error)
        link = at.get_by_key(f"export_fmt_{fmt}").proto
        built = downloads.resolve(link.url.rsplit("/", 1)[-1])
        assert built == formats.default_path(path, fmt, tta="multicrop").resolve() and "-multicrop" in built.name
        assert "multi-crop" in formats.ExportedModel(built).card["tta"]
        assert not formats.default_path(path, fmt).exists()  # no plain file was written in its place
    # back to no TTA: the multi-crop file is not offered as the plain export
    at.selectbox(key="export_tta_onnx").set_value("none").run()
    assert at.button(key="export_build_onnx").label == "Build ONNX (.onnx)"
    with pytest.raises(KeyError):
        at.get_by_key("export_fmt_onnx")


def test_the_test_set_tab_scores_with_the_tta_chosen_at_the_top(digits_run, tmp_path):
    from core.data.datasets import make_sample
    from core.results import metrics as core_metrics

    name = de.unique_name("tta-test-set")
    make_sample("digits", de.root() / name, per_class=10, skip=12)  # images the run never saw
    path = runs.open_run(digits_run).path
    flip, plain = (core_metrics.evaluate_on(path, de.dataset_dir(name), tta=m)["accuracy"] for m in ("flip", "none"))
    assert flip != plain  # else the page's figure could not tell the two apart
    at = app("5_evaluate", job=digits_run)
    at.radio(key="eval_tta").set_value("flip").run()
    at.selectbox(key="eval_test_ds").set_value(name).run()
    at.button(key="eval_test_run").click().run()
    assert not at.exception and not at.error
    assert _metric(at, "Test accuracy").value == f"{flip:.1%}"
    assert "Scored with test-time augmentation (flip)" in texts(at.caption)
    at.radio(key="eval_tta").set_value("none").run()  # another mode: the flip result is no longer shown
    assert not [m for m in at.metric if m.label == "Test accuracy"]
    at.button(key="eval_test_run").click().run()
    assert _metric(at, "Test accuracy").value == f"{plain:.1%}"
