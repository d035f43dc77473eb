"""Class labels and names are user data: every page escapes them on the way out (Markdown, HTML, Plotly),
so a label can neither load an image beacon nor show a clickable link nor inject HTML."""
from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from accounts import key, tab
from core.app import charts
from core.data import edits as de
from core.storage import owners
from pages.markup import md

PAYLOAD = "![x](http://evil/beacon.png) <img src=x onerror=alert(1)> [click](http://phish)"
MORE = ["# heading", "1. list", "www.evil.example", "mail@evil.example", ":red[colour]", "$x^2$", "`code`",
        "a\nb <script>alert(1)</script>", "&lt;img src=x&gt;"]


def _safe_markdown(text: str) -> None:
    """Fails when Markdown ``text`` would render a link, an image or an HTML element."""
    assert "<" not in text, f"raw '<' reaches the page: {text!r}"
    assert not re.search(r"(?<!\\)[\[\]]", text), f"an unescaped bracket can open a link or image: {text!r}"
    assert not re.search(r"(?<!\\)(https?|ftp):(?=//)", text), f"a bare URL becomes a link: {text!r}"
    assert not re.search(r"(?<!\\)\$", text), f"math: {text!r}"
    assert not re.search(r"(?i)www\.", text), f"a www. autolink: {text!r}"
    markdown = pytest.importorskip("markdown")  # a second opinion from a real renderer
    html = markdown.markdown(text)
    assert not re.search(r"<(img|a|script|iframe|svg|h\d|ol|ul|li)\b", html), html


def test_md_leaves_no_link_image_html_or_block_in_a_label():
    for label in [PAYLOAD, *MORE]:
        out = md(label)
        _safe_markdown(out)
        assert "\n" not in out
    assert md("Using the digits sample.") == "Using the digits sample."  # plain text stays as it was
    assert md(PAYLOAD).count("&lt;img") == 1


def test_chart_text_is_shown_as_text_by_plotly():
    classes = ["cat", PAYLOAD]
    figures = [
        charts.class_counts({c: 3 for c in classes}),
        charts.confusion([[1, 0], [0, 1]], classes),
        charts.per_class_bars([{"class": c, "precision": 1.0, "recall": 1.0, "f1": 1.0} for c in classes]),
        charts.roc_curves([{"class": c, "auc": 0.5, "fpr": [0, 1], "tpr": [0, 1]} for c in classes]),
        charts.pr_curves([{"class": c, "ap": 0.5, "recall": [0, 1], "precision": [1, 0]} for c in classes]),
        charts.compare_runs({PAYLOAD: [{"type": "epoch", "epoch": 1, "val_acc": 0.5}]}),
        charts.task_curves([{"type": "epoch", "epoch": 1, "tasks": {PAYLOAD: {"val_acc": 0.5, "val_f1": 0.5}}}]),
        charts.distill_comparison([{"model": PAYLOAD, "accuracy": 1, "agreement_with_teacher": 1, "size_mb": 1,
                                    "latency_ms": 1}]),
    ]
    for fig in figures:
        spec = fig.to_json()
        assert "<img" not in spec and "<a" not in spec, spec[:300]
        assert "&lt;img src=x onerror=alert(1)&gt;" in json.loads(spec).__repr__()
    assert charts.text("a<b>&c") == "a&lt;b&gt;&amp;c"


@pytest.fixture(scope="module")
def labelled_dataset(tmp_path_factory):
    """A CSV-labelled dataset whose second class is the payload: 8 cats and 3 of the payload class."""
    folder = tmp_path_factory.mktemp("payload") / "payload-data"
    folder.mkdir()
    rows = []
    for i in range(11):
        label = "cat" if i < 8 else PAYLOAD
        colour = (40 * (i % 5), 200 - 15 * i, 90) if label == "cat" else (230, 20 * i, 20)
        Image.new("RGB", (40, 40), colour).save(folder / f"img{i}.png")
        rows.append(f'img{i}.png,"{label}"')
    (folder / "labels.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    name = de.unique_name("payload")
    de.import_files([(p.name, p.read_bytes()) for p in sorted(folder.iterdir())], name,
                    owner=key("eve"))
    assert owners.owner_of(de.root() / name) == key("eve")
    return name


def _rendered(at) -> list[str]:
    """Every string the page hands to a Markdown renderer: texts, widget labels, metric labels, image captions."""
    out = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        out += [str(e.value) for e in at.get(kind)]
    for el in at.get("metric"):
        out.append(str(el.label))
    for kind in ("selectbox", "checkbox", "button", "radio", "text_input", "number_input", "multiselect",
                 "toggle", "slider"):
        out += [str(getattr(w, "label", "")) for w in at.get(kind)]
    for el in at.get("imgs"):
        out += [str(img.caption) for img in getattr(el.proto, "imgs", [])]
    return out


def test_a_hostile_label_reaches_the_health_report_warnings_gallery_and_chart_as_plain_text(labelled_dataset):
    at = tab("eve", "1_data", ds=labelled_dataset)
    shown = [t for t in _rendered(at) if "beacon" in t]
    # the label is on the page (gallery heading, health warnings) — escaped every time
    assert any("has 3 images" in t for t in shown), shown
    assert len(shown) >= 2
    for text in shown:
        _safe_markdown(text)
    (fig,) = [json.loads(el.proto.spec) for el in at.get("plotly_chart") if "data_counts_chart" in el.proto.id]
    assert PAYLOAD not in json.dumps(fig)
    assert any("&lt;img src=x onerror=alert(1)&gt;" in x for x in fig["data"][0]["x"])
    # pages that name the dataset or its classes elsewhere escape them too
    for page in ("3_layers", "4_train"):
        other = tab("eve", page, ds=labelled_dataset)
        for text in _rendered(other):
            if "beacon" in text or "payload" in text:
                _safe_markdown(text)


def test_the_exported_model_card_carries_class_names_as_inert_text():
    """The Markdown card inside every export is read elsewhere (GitHub, model hubs): a label cannot turn into an
    image beacon, a link, HTML or a broken table there."""
    from core.results.formats import card_markdown

    evil = "![x](http://evil/beacon.png) <img src=x onerror=alert(1)> [click](http://phish) a|b"
    card = {"backbone": "efficientnet_lite0", "num_classes": 2, "classes": [evil, "cat"],
            "preprocessing": {"resize_size": 256, "crop_size": 224, "interpolation": "bilinear",
                              "mean": [0.5] * 3, "std": [0.5] * 3},
            "evaluation": {"on": "validation", "accuracy": 0.5, "classes": [evil, "cat"], "confusion": [[1, 0], [1, 0]],
                           "per_class": [{"class": evil, "precision": 0.5, "recall": 1.0, "f1": 0.67, "support": 1}],
                           "averages": {}}}
    text = card_markdown(card)
    assert "<img" not in text and "](http" not in text and "![" not in text
    assert "\\|" in text  # the pipe cannot split a table row
