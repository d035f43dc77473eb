"""Translations: the catalog covers the code exactly, plurals, per-thread languages, locale formats, the CLI's
--lang and the app's sidebar in Chinese."""
from __future__ import annotations

import datetime as dt
import re
import threading
from pathlib import Path

import pytest
from babel.messages import extract, pofile
from babel.messages.frontend import parse_mapping_cfg

from core import i18n

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po"
POT = ROOT / "locale" / "messages.pot"
APP = str(ROOT / "streamlit_app.py")
_PLACEHOLDER = re.compile(r"\{(\w*)[^{}]*\}")


def _key(message, context) -> tuple[str | None, str]:
    return context or None, message[0] if isinstance(message, tuple) else message


def _extracted() -> dict[tuple, str]:
    """(context, msgid) -> where it is used, as `pybabel extract -F babel.cfg ... core pages streamlit_app.py` finds it."""
    with (ROOT / "babel.cfg").open() as f:
        method_map, options = parse_mapping_cfg(f)
    found: dict[tuple, str] = {}

    def keep(source: str, messages) -> None:
        for lineno, message, _comments, context in messages:
            found.setdefault(_key(message, context), f"{source}:{lineno}")

    for folder in ("core", "pages"):
        for filename, lineno, message, comments, context in extract.extract_from_dir(
                ROOT / folder, method_map, options):
            keep(f"{folder}/{filename}", [(lineno, message, comments, context)])
    keep("streamlit_app.py", extract.extract_from_file("python", APP))
    return found


def _catalog(path: Path):
    with path.open("rb") as f:
        return pofile.read_po(f, locale="zh_CN" if path.suffix == ".po" else None)


def test_every_message_of_the_code_has_a_chinese_translation_and_the_catalog_has_nothing_stale():
    code = _extracted()
    catalog = _catalog(PO)
    entries = {_key(m.id, m.context): m for m in catalog if m.id}
    hint = " — run the update commands of README 'Translating' and fill locale/zh_CN/LC_MESSAGES/messages.po"
    missing = sorted(f"{code[k]}: {k!r}" for k in code.keys() - entries.keys())
    assert not missing, "messages in the code but not in the zh_CN catalog:\n" + "\n".join(missing) + hint
    stale = sorted(k for k in entries.keys() - code.keys())
    assert not stale and not catalog.obsolete, f"catalog entries no longer in the code: {stale}" + hint
    untranslated = sorted(f"{code[k]}: {k!r}" for k, m in entries.items()
                          if m.fuzzy or not all(m.string if isinstance(m.string, tuple) else (m.string,)))
    assert not untranslated, "empty or fuzzy zh_CN translations:\n" + "\n".join(untranslated)
    assert {_key(m.id, m.context) for m in _catalog(POT) if m.id} == code.keys(), \
        "locale/messages.pot is out of date" + hint


def test_every_translation_keeps_the_placeholders_of_its_message():
    wrong = []
    for m in _catalog(PO):
        if not m.id:
            continue
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        strings = m.string if isinstance(m.string, tuple) else (m.string,)
        want = set(_PLACEHOLDER.findall(ids[-1]))
        wrong += [f"{ids[0]!r} -> {s!r}" for s in strings if set(_PLACEHOLDER.findall(s)) != want]
    assert not wrong, "translations that lose or invent a {placeholder}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("lang, one, five", [
    ("en", "1 run in W", "5 runs in W"),
    ("zh_CN", "W 中有 1 条训练记录", "W 中有 5 条训练记录"),  # nplurals=1 in the catalog's header: one form
])
def test_plural_forms_follow_each_languages_rule_for_1_and_5(lang, one, five):
    with i18n.language(lang):
        said = [i18n.ngettext("{n} run in {folder}", "{n} runs in {folder}", n).format(n=n, folder="W")
                for n in (1, 5)]
    assert said == [one, five]


def test_two_threads_with_different_languages_do_not_see_each_others():
    barrier, seen = threading.Barrier(2), {}

    def worker(lang: str) -> None:
        i18n.set_language(lang)
        barrier.wait()  # both have set theirs before either reads
        seen[lang] = {i18n.gettext("Dataset:") for _ in range(200)} | {i18n.current_language()}

    threads = [threading.Thread(target=worker, args=(lang,)) for lang in ("en", "zh_CN")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"en": {"Dataset:", "en"}, "zh_CN": {"数据集：", "zh_CN"}}
    assert i18n.current_language() == "en"  # and the thread that started them was not touched


def test_a_thread_without_a_language_asks_the_registered_fallback(monkeypatch):
    monkeypatch.setattr(i18n, "_fallback", lambda: "zh-CN")
    seen = []
    t = threading.Thread(target=lambda: seen.append(i18n.gettext("Device:")))
    t.start()
    t.join(10)
    assert seen == ["设备："]


def test_numbers_percentages_and_dates_follow_the_locale():
    when = dt.datetime(2026, 12, 2, 19, 5)
    out = {}
    for lang in ("en", "zh_CN"):
        with i18n.language(lang):
            out[lang] = (i18n.format_number(1234567.891), i18n.format_number(0.5, decimals=2),
                         i18n.format_number(12345, compact=True), i18n.format_percent(0.873),
                         i18n.format_datetime(when))
    # both write 1,234,567.891 and 87.3%; Chinese counts large numbers in 万 and writes dates year first
    assert out["en"] == ("1,234,567.891", "0.50", "12.3K", "87.3%", "Dec 2, 2026, 7:05:00\u202fPM")  # CLDR: a narrow space before PM
    assert out["zh_CN"] == ("1,234,567.891", "0.50", "1.2万", "87.3%", "2026年12月2日 19:05:00")


@pytest.mark.parametrize("env, lang", [
    ({"LANG": "zh_CN.UTF-8"}, "zh_CN"),
    ({"LANGUAGE": "fr:zh_TW", "LANG": "en_US.UTF-8"}, "zh_CN"),  # LANGUAGE is a list, best first
    ({"LC_ALL": "de_DE.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),  # LC_ALL wins; no German catalog: the source
    ({"LANG": "C.UTF-8"}, "en"),
    ({}, "en"),
])
def test_the_language_comes_from_the_environment_as_gettext_reads_it(env, lang):
    assert i18n.language_from_env(env) == lang


def test_an_unknown_language_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"unknown language 'fr'; choose one of en, zh_CN"):
        i18n.set_language("fr")


def test_the_cli_speaks_chinese_with_lang_or_the_environment_and_leaves_the_caller_in_its_own(capsys,
                                                                                             monkeypatch):
    from core import cli

    assert cli.main(["runs", "--lang", "zh_CN"]) == 0
    assert "条训练记录" in capsys.readouterr().err
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert cli.main(["train"]) == 2  # no --data
    assert capsys.readouterr().err.startswith("错误：")
    assert i18n.current_language() == "en"


# --- the app ------------------------------------------------------------------------------------------

def _app(query: dict | None = None, locale: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(query or {})
    if locale:
        at.context["locale"] = locale
    at.run()
    assert not at.exception, at.exception
    return at


def _sidebar(at) -> str:
    return "\n".join(str(e.value) for e in at.sidebar.markdown)


def test_the_app_with_lang_zh_cn_in_the_url_shows_the_sidebar_in_chinese():
    at = _app({"lang": "zh_CN"})
    side = _sidebar(at)
    assert "**数据集：**" in side and "**设备：**" in side and "Dataset" not in side
    assert at.sidebar.segmented_control(key="lang_switch").value == "zh_CN"


def test_a_chinese_browser_gets_chinese_without_pinning_it_in_the_url():
    at = _app(locale="zh-CN")
    assert "**数据集：**" in _sidebar(at)
    assert "lang" not in at.query_params  # a shared link follows its reader's browser


def test_switching_the_language_pins_it_in_the_url_and_keeps_the_rest_of_the_session():
    at = _app()
    assert "**Dataset:**" in _sidebar(at)
    at.session_state["unsaved_note"] = "keep me"
    sid = at.session_state["sid"]
    at.sidebar.segmented_control(key="lang_switch").set_value("zh_CN").run()
    assert not at.exception, at.exception
    assert (at.session_state["lang"], at.query_params["lang"]) == ("zh_CN", "zh_CN")
    assert (at.session_state["sid"], at.session_state["unsaved_note"]) == (sid, "keep me")
    assert at.query_params["sid"] == sid
    # AppTest reruns the page alone (not streamlit_app.py), so the sidebar is checked on a reload of the URL
    reloaded = _app(dict(at.query_params))
    assert "**数据集：**" in _sidebar(reloaded) and reloaded.session_state["sid"] == sid


def test_an_unknown_language_in_the_url_falls_back_to_the_browser_and_leaves_the_url():
    at = _app({"lang": "fr"}, locale="zh-CN")
    assert "**数据集：**" in _sidebar(at)
    assert "lang" not in at.query_params


# --- the CLI's help, the model card, plans and training events (helper I4) -------------------------------

_CJK = re.compile(r"[\u4e00-\u9fff]")
_ENGLISH_RUN = re.compile(r"\b[a-z]{2,}(?: [a-z]{2,}){2,}\b")  # three English words in a row: a sentence left over


def _flag_entries(help_text: str) -> dict[str, str]:
    """Flag -> its help text, from argparse's --help output (argparse's own -h left out)."""
    out, flag = {}, None
    for line in help_text.split("\n\n", 1)[1].splitlines():  # after the usage block
        if not line.startswith(" "):  # a section's title ("options:", a group's)
            flag = None
        elif line.startswith("  -"):
            invocation, _, text = line.strip().partition("  ")
            flag = invocation.split()[0].rstrip(",")
            flag = None if flag == "-h" else flag
            if flag:
                out[flag] = text.strip()
        elif flag:
            out[flag] = f"{out[flag]} {line.strip()}".strip()
    return out


def test_python_m_core_train_help_with_lang_zh_cn_explains_every_flag_in_chinese():
    import subprocess
    import sys

    def helps(*lang):
        done = subprocess.run([sys.executable, "-m", "core", "train", "--help", *lang], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env={k: v for k, v in __import__("os").environ.items()
                                                           if k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")})
        assert done.returncode == 0, done.stderr
        return done.stdout, _flag_entries(done.stdout)

    zh_text, zh = helps("--lang", "zh_CN")
    en_text, en = helps()
    assert set(zh) == set(en) and {"--epochs", "--lr", "--preset", "--groups", "--mlflow-uri", "--lang"} <= set(zh)
    assert "（默认 5）" in zh["--epochs"] and "(default 5)" in en["--epochs"]  # every help states its default
    english = {flag: text for flag, text in zh.items()
               if not _CJK.search(text) or _ENGLISH_RUN.search(re.sub(r"`[^`]*`|\"[^\"]*\"", "", text))}
    assert not english, "flags whose help is (partly) English under --lang zh_CN — add a RunConfig comment to " \
                        f"core/cli.py _FIELD_HELP or wrap the help in _(), then translate it: {english}"
    assert "实验跟踪" in zh_text and not _CJK.search(en_text)


def test_an_exported_model_card_is_written_in_chinese_with_english_field_names(shapes_dir, tiny_config, tmp_path):
    import json
    import zipfile

    from core.results import formats
    from core.techniques import fit

    run_dir = fit(tiny_config(shapes_dir, epochs=1))["run_dir"]
    cards = {}
    for lang in ("en", "zh_CN"):
        with i18n.language(lang), zipfile.ZipFile(formats.export(run_dir, "bundle", tmp_path / f"{lang}.zip")) as z:
            cards[lang] = (z.read("MODEL_CARD.md").decode("utf-8"), json.loads(z.read("model_card.json")))
    (en_md, en_json), (zh_md, zh_json) = cards["en"], cards["zh_CN"]
    assert en_md.startswith("# Model card: efficientnet_lite0 for 3 classes") and "Confusion matrix" in en_md
    assert zh_md.startswith("# 模型卡片：efficientnet_lite0，3 个类别")
    for heading in ("## 类别", "## 输入", "## 评估（验证集，", "混淆矩阵（行：真实类别，列：预测类别）", "| 类别 | 精确率 | 召回率 | F1 值 |",
                    "## 数据", "## 训练配置", "## 使用方法"):
        assert heading in zh_md, heading
    assert not re.search(r"^## [A-Za-z]|Confusion matrix|Exported by", zh_md, re.M)
    assert all(c in zh_md for c in ("circle", "square", "triangle"))  # the user's class names stay as they are
    assert set(zh_json) == set(en_json) and zh_json["classes"] == en_json["classes"]  # the JSON card: same fields
    assert zh_json["input"] == en_json["input"]  # its contract (and its words) do not depend on the language


def test_a_preset_plan_gives_its_reasons_in_the_language_it_is_shown_in(monkeypatch):
    from core.train import presets

    stats = {"counts": {str(c): 40 for c in range(10)}, "sides": [32] * 64, "n": 400, "n_train": 320, "n_val": 80}
    monkeypatch.setattr(presets, "dataset_stats", lambda data, sample=64: dict(stats))
    monkeypatch.setattr(presets, "throughput", lambda backbone, size, device="auto", trainable="head", batch=8:
                        (4000.0, 1200.0))
    monkeypatch.setattr(presets, "_with_found_lr", lambda data, fields, reasons, *a: (fields, reasons))
    plans = {}
    for lang in ("en", "zh_CN"):
        with i18n.language(lang):
            p = presets.plan("unused", "balanced", time_budget_s=300, device="cpu", overrides={"seed": 3})
            plans[lang] = (p, presets.describe(p))
    (en, en_text), (zh, zh_text) = plans["en"], plans["zh_CN"]
    assert en.fields == zh.fields and set(en.reasons) == set(zh.reasons) and len(zh.reasons) >= 10
    assert not any(_CJK.search(r) for r in en.reasons.values())
    left = {k: r for k, r in zh.reasons.items() if not _CJK.search(r) or _ENGLISH_RUN.search(r)}
    assert not left, f"plan reasons left in English under zh_CN: {left}"
    assert zh.reasons["seed"] == "由你设定" and en.reasons["seed"] == "set by you"
    assert zh_text.startswith("训练方案 balanced：预计约") and en_text.startswith("preset balanced: expected about")


def test_a_training_event_is_stored_in_english_and_shown_in_the_readers_language():
    import json

    from core.i18n import N_
    from core.train import events

    ev = events.event("budget", 1.0, **events.said(
        N_("stopped at the time budget of {budget:g} s after epoch {epoch} of {epochs}; keeping epoch {best}"),
        budget=30.0, epoch=2, epochs=5, best=1))
    stored = json.loads(json.dumps(ev))  # as events.jsonl keeps it
    assert stored["message"] == "stopped at the time budget of 30 s after epoch 2 of 5; keeping epoch 1"
    with i18n.language("zh_CN"):
        assert events.text(stored) == "在第 2/5 轮后达到 30 秒的时间预算而停止；保留第 1 轮"
        assert events.text({"type": "warning", "message": "an old run's warning"}) == "an old run's warning"
    assert events.text(stored) == stored["message"]


def _png(path: Path, size: int = 40, colour=(200, 30, 30)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def test_a_bad_upload_is_refused_in_chinese_with_the_users_file_name_intact(tmp_path):
    from core.data import ingest

    upload = tmp_path / "假期 <b>照片 #1.zip"
    _png(upload.with_suffix(".png"))
    upload.write_bytes(upload.with_suffix(".png").read_bytes())  # a PNG renamed .zip: not an archive
    said = {}
    for lang in ("en", "zh_CN"):
        with i18n.language(lang), pytest.raises(ingest.IngestError) as e:
            ingest.extract_archive(upload, tmp_path / f"out-{lang}")
        said[lang] = str(e.value)
    assert said["en"] == ("假期 <b>照片 #1.zip is not a zip archive (it looks like a single image; put the images in "
                          "class folders and zip them) — upload a .zip file")
    assert said["zh_CN"] == ("假期 <b>照片 #1.zip 不是 zip 压缩包（看起来是单张图像；请把图像放进类别文件夹后再打包成 zip）"
                             "——请上传 .zip 文件")


def test_health_warnings_and_skip_reasons_are_shown_in_chinese_and_stored_in_english(tmp_path):
    import json

    from core.data import ingest

    for i in range(3):
        _png(tmp_path / "cats" / f"c{i}.png", colour=(10 * i, 0, 0))
        _png(tmp_path / "dogs" / f"d{i}.png", colour=(0, 10 * i, 0))
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    index = ingest.scan_folder(tmp_path)
    with i18n.language("zh_CN"):
        report = ingest.health_report(index)
    assert "类别 'cats' 有 3 张图像；建议至少 20 张" in report["warnings"]
    assert "1 个文件未纳入数据集——原因见“skipped”" in report["warnings"]
    assert report["skipped"] == [{"path": "dogs/notes.txt", "reason": "不是图像（.txt）；支持的类型为 "
                                  ".avif, .bmp, .gif, .heic, .heif, .jpeg, .jpg, .png, .tif, .tiff, "
                                  ".webp"}]
    # what a cache or a run folder keeps is English, and it reads in Chinese again after a round trip through JSON
    stored = json.loads(json.dumps(index.to_dict()))
    assert stored["skipped"][0]["reason"].startswith("not an image (.txt); supported types are ")
    back = ingest.DatasetIndex.from_dict(stored).skipped[0]
    with i18n.language("zh_CN"):
        assert back.shown() == report["skipped"][0]["reason"]
    assert ingest.health_report(index)["warnings"][0] == "class 'cats' has 3 images; 20 or more are recommended"


def test_a_damaged_image_in_a_dataset_keeps_its_file_name_in_the_chinese_reason(tmp_path):
    from core.data import ingest

    for cls in ("a", "b"):
        for i in range(2):
            _png(tmp_path / cls / f"{i}.png", colour=(60 * i, 0, 0))
    (tmp_path / "b" / "破损 #1.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    index = ingest.scan_folder(tmp_path)
    (bad,) = [s for s in index.skipped if s.path == "b/破损 #1.jpg"]
    assert bad.reason.startswith("破损 #1.jpg is ")  # the English record
    with i18n.language("zh_CN"):
        assert re.fullmatch(r"破损 #1\.jpg (不是可识别的图像|不完整或已损坏).*", bad.shown())


def test_chart_titles_axes_and_legends_are_chinese_under_zh_cn():
    from core.app import charts

    events = [{"type": "epoch", "epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_acc": 0.5, "val_acc": 0.4}]
    with i18n.language("zh_CN"):
        curves = charts.epoch_curves(events)
        matrix = charts.confusion([[3, 1], [0, 4]], ["猫 <i>", "dog"])
    assert curves.layout.title.text == "每轮" and curves.layout.xaxis.title.text == "轮"
    assert [t.name for t in curves.data] == ["训练损失", "验证损失", "训练准确率", "验证准确率"]
    assert (matrix.layout.xaxis.title.text, matrix.layout.yaxis.title.text) == ("预测类别", "真实类别")
    assert list(matrix.data[0].x) == ["猫 &lt;i&gt;", "dog"]  # the user's labels as they are, escaped for Plotly
    assert charts.epoch_curves(events).layout.xaxis.title.text == "epoch"  # and English outside the block


def test_a_plural_message_without_translation_falls_back_to_the_english_form_for_n(tmp_path, monkeypatch):
    po = tmp_path / "zh_CN" / "LC_MESSAGES" / "messages.po"
    po.parent.mkdir(parents=True)
    po.write_text('msgid ""\nmsgstr ""\n"Plural-Forms: nplurals=1; plural=0;\\n"\n"Content-Type: text/plain; '
                  'charset=utf-8\\n"\n\nmsgid "{n} image"\nmsgid_plural "{n} images"\nmsgstr[0] ""\n\n'
                  'msgid "{n} run"\nmsgid_plural "{n} runs"\nmsgstr[0] "{n} 条训练记录"\n', encoding="utf-8")
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    i18n.translations.cache_clear()
    try:
        with i18n.language("zh_CN"):
            assert i18n.ngettext("{n} image", "{n} images", 5).format(n=5) == "5 images"
            assert i18n.ngettext("{n} image", "{n} images", 1).format(n=1) == "1 image"
            assert i18n.ngettext("{n} run", "{n} runs", 5).format(n=5) == "5 条训练记录"
    finally:
        i18n.translations.cache_clear()
