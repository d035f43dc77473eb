"""The zh_CN sweep (issue 15): every page of the app, and its sidebar, shown in Chinese shows no English source text.

Each page of ``pages.common.PAGES`` runs through AppTest with ``?lang=zh_CN``, a dataset and a finished one-epoch
run, so it draws its main content (Evaluate's tabs, Export's downloads, Review's suspects, Multi-task's tasks).
Every visible text is collected: headings, Markdown, captions, alerts, widget labels / help / options /
placeholders, buttons and links, metric labels, tab and expander labels, image captions, table headers. A text
fails when it is a msgid of the catalog (wrapped, but shown untranslated), or, once user data (class, dataset,
run and file names, backbone names, config fields) and the glossary's kept technical names are taken out, it is
still English: any English word in a text without Chinese (a label, an option, a status), or three English words
in a row inside Chinese text. The failure lists the texts per page, so it points at the string to wrap or translate.
Charts (Plotly figures) are not read here.

Set ``I18N_SWEEP_REPORT=path`` to also write that list to a file (every page, passing or not).
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from babel.messages import pofile
from streamlit.testing.v1 import AppTest

from core import i18n
from core.data import edits as de
from core.models import backbones
from pages import common

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
LANG = "zh_CN"

# The glossary's "Kept in English" names (locale/GLOSSARY.md), the app's own name and the language switch's names.
KEPT = {"F1", "ONNX", "TorchScript", "safetensors", "int8", "fp32", "CUDA", "MPS", "CPU", "GPU", "SimCLR",
        "Grad-CAM", "ImageNet", "JSON", "CSV", "ZIP", "TensorBoard", "MLflow", "torchrun", "Transfer Studio",
        "English", "Python", "PyTorch", "NT-Xent", "cleanlab", "Hinton", "et al", "ROC", "PR", "ECE", "top-k",
        "Softmax", "softmax", "px", "MB", "GB", "KB", "s", "ms", "bash", "pip", "zip", "predict.py",
        "Apache", "Plotly", "Streamlit"}
_WORD = re.compile(r"[(\"'“‘]*([A-Za-z][a-z'’]*(?:-[a-z]+)*)[)\"'”’,.:;!?…]*")
_CJK = re.compile(r"[\u3400-\u9fff]")
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'’]*(?:-[A-Za-z]+)*|[\u3400-\u9fff]+")
_FIELDS = {"body", "label", "help", "placeholder", "options", "caption", "captions", "text", "content", "message"}


def _msgids() -> set[str]:
    """Catalog messages that should never be seen as they are in Chinese: those whose translation differs."""
    with (ROOT / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po").open("rb") as f:
        po = pofile.read_po(f, locale=LANG)
    with (ROOT / "locale" / "messages.pot").open("rb") as f:
        pot = pofile.read_po(f)
    out = set()
    for m in pot:
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        done = po.get(m.id if not isinstance(m.id, tuple) else m.id[0], context=m.context)
        same = done is not None and (done.string if not isinstance(done.string, tuple) else done.string[0]) == ids[0]
        for mid in ids:
            if mid and not same and _english_words(mid):
                out.add(mid.strip())
    return out


def _english_words(text: str) -> list[str]:
    return [m.group(1) for tok in text.split() if (m := _WORD.fullmatch(tok))]


def _clean(text: str, user: list[str]) -> str:
    """A shown text without markup, code, links, icons and the names that stay English."""
    text = re.sub(r"`[^`]*`", " ", text)                      # code spans: file names, commands
    text = re.sub(r":material/[a-z_]+:", " ", text)           # icons
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)      # links keep their words
    text = re.sub(r"https?://\S+", " ", text)
    text = re.sub(r"\*\*\w+\*\*\s*=\s*[^\s:：]+", " ", text)  # "**scheduler** = cosine": a config field and its value
    text = text.replace("\\", "").replace("**", "").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    for name in user:                                         # longest first: "Transfer Studio" before "Studio"
        text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", " ", text)
    text = re.sub(r"\S*[_/\\]\S*|\S+\.[a-z0-9]{1,12}\b", " ", text)  # identifiers, paths, file names
    # names mixing letters and digits: resnet18, MobileNetV3-Small, top-1, 3e-4, run ids
    text = re.sub(r"[^\s（(]*(?:[A-Za-z][^\s\u3400-\u9fff]*\d|\d[^\s\u3400-\u9fff]*[A-Za-z])"
                  r"[^\s\u3400-\u9fff）)]*", " ", text)
    return text


def problem(text: str, user: list[str], msgids: set[str]) -> bool:
    """Whether a shown text is still English: a msgid of the catalog; or, without user data and kept names, an
    English word in a text with no Chinese at all (a label, an option, a status), or three English words in a row
    inside Chinese text."""
    text = text.strip()
    if not text:
        return False
    if text in msgids:
        return True
    run, words, cjk = 0, 0, False
    for tok in _TOKEN.findall(_clean(text, user)):
        if _CJK.match(tok):
            run, cjk = 0, True
        elif tok in KEPT or not tok[1:].islower() and len(tok) > 1:  # a kept name or an acronym (ROC, PR)
            run = 0
        else:
            run, words = run + 1, words + 1
            if run >= 3:
                return True
    return words > 0 and not cjk


def _proto_texts(proto, out: list[str]) -> None:
    """The strings a person can read in an element's message (labels, bodies, help, options ...)."""
    for field, value in proto.ListFields():
        if field.name in ("code_text", "spec", "data", "id", "form_id", "url", "default", "value"):
            continue
        many = not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and not hasattr(value, "ListFields")
        if field.message_type is not None:
            for item in (value if many else [value]):
                _proto_texts(item, out)
        elif field.name in _FIELDS:
            out += [v for v in (value if many else [value]) if isinstance(v, str)]


def _table_headers(el) -> list[str]:
    """The column headers a dataframe shows: the column config's label, else the column's name."""
    config = json.loads(el.proto.columns or "{}")
    try:
        names = [str(c) for c in el.value.columns]
    except Exception:  # noqa: BLE001 - a table AppTest cannot decode still has its configured labels
        names = []
    shown = [config.get(n, {}).get("label") or n for n in names
             if not config.get(n, {}).get("hidden")]
    order = list(el.proto.column_order)
    return [s for n, s in zip(names, shown) if not order or n in order]


def visible_texts(at: AppTest) -> list[str]:
    """Every text of the page and its sidebar, in order, each once."""
    out: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        kind = getattr(node, "type", "")
        if kind in ("code",):
            return
        if kind in ("arrow_data_frame", "dataframe") or node.__class__.__name__ == "Dataframe":
            out.extend(_table_headers(node))
        elif proto is not None:
            _proto_texts(proto, out)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return list(dict.fromkeys(t for t in out if t and t.strip()))


# --- the workspace the pages show --------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _own_workspace(tmp_path_factory):
    """A workspace of this module's own: what other test modules leave behind (runs of every technique, adapted
    backbones, damaged runs) would make the pages, and so the sweep, depend on the order tests run in."""
    old = os.environ.get("TRANSFER_STUDIO_HOME")
    os.environ["TRANSFER_STUDIO_HOME"] = str(tmp_path_factory.mktemp("i18n-sweep-home"))
    yield
    if old is None:
        os.environ.pop("TRANSFER_STUDIO_HOME", None)
    else:
        os.environ["TRANSFER_STUDIO_HOME"] = old


@pytest.fixture(scope="module")
def sweep_ds(shapes_dir) -> str:
    name = de.unique_name("sweep-shapes")
    folder = de.root() / name
    shutil.copytree(shapes_dir, folder)
    # one circle filed under square too: the Review page then has a suspect (a duplicate across classes) to show
    first = sorted((folder / "circle").glob("*.png"))[0]
    shutil.copy(first, folder / "square" / f"copy-{first.name}")
    return name


@pytest.fixture(scope="module")
def sweep_run(sweep_ds, tiny_config) -> str:
    """A finished one-epoch, head-only run on the dataset."""
    from core.techniques import fit

    result = fit(tiny_config(de.dataset_dir(sweep_ds), epochs=1, trainable="head"))
    assert result["status"] == "finished"
    return Path(result["run_dir"]).name


@pytest.fixture(scope="module")
def sweep_mt_ds(sweep_ds) -> str:
    """The dataset again, with a CSV of two label columns (the Multi-task page's input)."""
    name = de.unique_name("sweep-mt")
    folder = de.root() / name
    shutil.copytree(de.dataset_dir(sweep_ds), folder)
    rows = [[p.relative_to(folder).as_posix(), p.parent.name, "round" if p.parent.name == "circle" else "sharp"]
            for p in sorted(folder.rglob("*.png"))]
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["filename", "shape", "corners"], *rows])
    return name


def user_names(*datasets: str, run: str) -> list[str]:
    """What the pages may show as it was typed or stored: every dataset and run of the session's workspace (other
    test modules leave theirs), their class folders, run names and backbones, this sweep's tasks and file names."""
    from core.storage import runs

    names = {run, "round", "sharp", "shape", "corners", "labels.csv", *backbones.names()}
    for folder in (p for p in de.root().iterdir() if p.is_dir()):
        names |= {folder.name} | {p.name for p in folder.iterdir() if p.is_dir()}
    for ds in datasets:
        names |= {p.name for p in de.dataset_dir(ds).rglob("*.png")}
    for folder in (p for p in runs.root().iterdir() if p.is_dir()):
        names |= {folder.name, folder.name[:15], folder.name[-4:]}  # the Runs page shows id[:15]…id[-4:]
        try:
            cfg = json.loads((folder / "config.json").read_text())
            if isinstance(cfg, dict):  # another test's damaged run may hold any JSON
                names |= {str(cfg.get("name") or ""), str(cfg.get("backbone") or "")} - {""}
        except (OSError, ValueError):
            pass
    return sorted(names | KEPT, key=len, reverse=True)


def _prepare(page: str, at: AppTest, ds: str) -> None:
    """Bring a page to its main content where that takes a click."""
    if page == "multitask":
        source = at.radio(key="mt_source")
        source.set_value(source.options[-1]).run()  # the dataset's CSV, whatever the option is called
    elif page == "review":
        with i18n.language(LANG):  # AppTest applies a select's format_func in this thread: in the page's language
            at.selectbox(key="review_size").set_value(64).run()
            at.button(key="review_find").click().run()


_REPORT: dict[str, list[str]] = {}
# a widget of each page's main content: its presence shows the sweep saw the page itself, past its prerequisites
MAIN = {"quick": "quick_zip", "data": "data_sample", "backbone": "bb_name", "layers": "layers_preset",
        "train": "train_epochs", "evaluate": "eval_normalize", "export": "export_card", "runs": "runs_pick",
        "distill": "distill_start", "multitask": "mt_start", "pretrain": "pretrain_start", "review": "review_keep"}


def widget_ids(at: AppTest) -> list[str]:
    out = []

    def walk(node) -> None:
        out.append(str(getattr(getattr(node, "proto", None), "id", "") or ""))
        for child in getattr(node, "children", {}).values():
            walk(child)
    walk(at._tree)
    return out


@pytest.mark.parametrize("page", list(common.PAGES))
def test_every_page_shows_no_english_source_text_in_chinese(page, sweep_ds, sweep_run, sweep_mt_ds):
    ds = sweep_mt_ds if page == "multitask" else sweep_ds
    at = AppTest.from_file(APP, default_timeout=90)
    for k, v in {"lang": LANG, "ds": ds, "job": sweep_run}.items():
        at.query_params[k] = v
    at.switch_page(common.PAGES[page][0]).run()  # straight to the page, through streamlit_app.py's navigation
    assert not at.exception, at.exception
    # AppTest runs the page script alone on later reruns (no app sidebar): the sidebar is read from this first run
    first = visible_texts(at)
    _prepare(page, at, ds)
    assert not at.exception, at.exception
    assert at.session_state["lang"] == LANG
    assert any(MAIN[page] in i for i in widget_ids(at)), f"{page}: its main content (widget {MAIN[page]}) is missing"
    user = user_names(sweep_ds, sweep_mt_ds, run=sweep_run)
    msgids = _msgids()
    shown = list(dict.fromkeys(first + visible_texts(at)))
    with i18n.language(LANG):
        assert i18n.gettext("Language") in first  # the sidebar (its language switch) is part of the sweep
    bad = [t for t in shown if problem(t, user, msgids)]
    _REPORT[page] = bad
    report = os.environ.get("I18N_SWEEP_REPORT")
    if report:
        Path(report).write_text("".join(f"== {p} ({common.PAGES[p][0]}): {len(b)} English text(s)\n"
                                        + "".join(f"  {t!r}\n" for t in b) for p, b in _REPORT.items()),
                                encoding="utf-8")
    assert not bad, (f"{common.PAGES[page][0]} in {LANG} still shows {len(bad)} English text(s) — wrap them in _() "
                     f"and translate them (po_sync):\n" + "\n".join(f"  {t!r}" for t in bad))


# --- the detector itself ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, english", [
    ("Start distillation", True),                     # a short English label
    ("Keep", True),
    ("The best checkpoint of a run is scored", True),  # prose
    ("开始蒸馏", False),
    ("用 ONNX 导出 efficientnet_lite0", False),        # kept names and identifiers inside Chinese
    ("circle", False),                                 # a class name: user data
    ("**circle** (93.3%)", False),
    ("F1", False),
    ("验证集准确率 `python -m core train --config config.json`", False),
    ("Grad-CAM", False),
    ("下载 model.safetensors (12.3 MB)", False),
    ("来自 Backbone 步骤的 circle", False),            # one English word in Chinese prose is not flagged
    ("true square → predicted circle: 2 image(s), mistakes", True),  # English around user data
    ("针对 shapes 的建议：**head only** — the smallest class has 10 images", True),  # half translated
    ("- **scheduler** = cosine: 学习率按余弦退火到零", False),  # a config field and its value
    ("20261203-032030…34f7 efficientnet_lite0", False),
    ("ImageNet top-1（%）", False),
])
def test_the_detector_tells_english_from_chinese_with_kept_names(text, english):
    user = sorted({"circle", "square", "shapes", *KEPT, *backbones.names()}, key=len, reverse=True)
    assert problem(text, user, set()) is english


def test_a_catalog_msgid_shown_as_it_is_fails():
    assert problem("Validation", [], {"Validation"}) and not problem("验证", [], {"Validation"})
