"""Evaluate, Export and predictions for a text run (issue 17): the image steps' shape, texts in place of images.

The step pages dispatch here with a few lines (``if text_results.is_text_run(run): ...``). Texts are user data:
they go into data frames (shown as plain text) or through ``html.escape`` into ``st.html`` (no Markdown there),
never into Markdown.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd
import streamlit as st

from core.app import charts, services, text_services
from core.app.engine import downloads, i18n, runs
from pages import common, eval_tools

_ = i18n.gettext
_PERCENT = st.column_config.NumberColumn(format="%.1f %%")  # values in percent, three significant digits


def is_text_run(run: runs.Run) -> bool:
    """Whether a run trained a text classifier (technique "text", or a student distilled from a text teacher)."""
    return common.technique_of(run) in ("text", "text_distill")


@st.cache_data(show_spinner=False, max_entries=8)
def _evaluation(run_dir: str, mtime: float, owner: str | None) -> dict:
    return text_services.text_evaluate_run(run_dir, owner)  # the owner is in the cache key: one user's result each


def _model(run: runs.Run):
    return eval_tools.model(str(run.best_weights), os.path.getmtime(run.best_weights))


def _items_table(items: list[dict], key: str, empty: str, loss: bool = False) -> None:
    """Evaluation items as rows of text, true class, prediction and confidence (the loss on request)."""
    if not items:
        st.success(common.md(empty))
        return
    rows = pd.DataFrame({_("text"): [it["text"] for it in items], _("true class"): [it["true_class"] for it in items],
                         _("predicted"): [it["pred_class"] for it in items],
                         _("confidence"): [100 * it["confidence"] for it in items]})
    if loss:
        rows[_("loss")] = [float(f"{it['loss']:.3g}") for it in items]
    st.container(key=key).dataframe(rows, hide_index=True, width="stretch", key=f"{key}_df",  # the key names the box (tests)
                                    column_config={_("confidence"): _PERCENT})


def evaluate(run: runs.Run) -> None:
    """The Evaluate step for a text run: metrics, per-class table, confusion cells with their texts, top losses,
    and predictions with a token-level explanation for texts typed here."""
    try:
        with st.spinner(_("Scoring the checkpoint on the validation texts…")):
            rep = _evaluation(str(run.path), os.path.getmtime(run.best_weights), common.owner())
    except (ValueError, OSError) as e:  # OSError: a file of the run is missing (split.json, say)
        st.error(common.md(e))
        st.stop()
    classes = rep["classes"]
    c1, c2, c3 = st.columns(3)
    c1.metric(_("Validation accuracy"), f"{rep['accuracy']:.1%}")
    c2.metric(_("Macro F1"), f"{rep['averages']['macro']['f1']:.1%}")
    c3.metric(_("Validation texts"), len(rep["items"]))
    tab_class, tab_confusion, tab_mistakes, tab_try = st.tabs(
        [_("Per class"), _("Confusion matrix"), _("Mistakes"), _("Try it on new texts")])
    with tab_class:
        table = pd.DataFrame(rep["per_class"]).set_index("class")
        support = int(table["support"].sum())
        for avg in ("macro", "weighted"):
            table.loc[_("{average} avg").format(average=avg)] = {**rep["averages"][avg], "support": support}
        table[["precision", "recall", "f1"]] *= 100  # percentages with three significant digits
        st.container(key="eval_table").dataframe(table, width="stretch", key="eval_table_df", column_config={
            "precision": st.column_config.NumberColumn(_("precision"), format="%.1f %%"),
            "recall": st.column_config.NumberColumn(_("recall"), format="%.1f %%"), "f1": _PERCENT,
            "support": st.column_config.NumberColumn(_("support"), format="%d")})
        st.plotly_chart(charts.per_class_bars(rep["per_class"]), key="eval_per_class", width="stretch")
    with tab_confusion:
        _confusion(rep, classes)
    with tab_mistakes:
        st.caption(_("Highest loss first: the texts the model was most confidently wrong about. Look for wrong "
                     "labels, ambiguous texts and classes that need more examples."))
        _items_table(services.top_losses(rep, limit=24, wrong_only=True), "eval_text_mistakes",
                     _("Every validation text is classified correctly."), loss=True)
    with tab_try:
        preds = predict_texts(run, "eval_texts", len(classes))
        if preds:
            explain(run, [p["text"] for p in preds], classes)
    common.link("export", _("Next: 6 · Export"))


def _confusion(rep: dict, classes: list[str]) -> None:
    """A clickable confusion matrix; a click (or the select, for keyboards) lists the texts of that cell. It
    opens on the largest mistake."""
    matrix = rep["confusion"]
    normalize = st.toggle(_("Show fractions of each true class"), key="eval_normalize")
    fig = charts.confusion(matrix, classes, normalize=normalize, clickable=True)
    fig.update_xaxes(type="category").update_yaxes(type="category")  # digit class names stay labels
    event = st.plotly_chart(fig, key="eval_confusion", width="stretch", on_select="rerun",
                            selection_mode=("points",))
    cells = [f"{i},{j}" for i, j in services.confusion_cells(matrix)]
    clicked, ss = eval_tools._clicked(event), st.session_state
    if clicked is None:
        ss.pop("_eval_text_clicked", None)  # deselected: the same cell clicked again counts as a new click
    elif ss.get("_eval_text_clicked") != clicked:
        ss["_eval_text_clicked"] = clicked  # a new click moves the select; an old selection never undoes it
        ss["eval_text_cell"] = f"{clicked[0]},{clicked[1]}"
    chosen = ss.get("eval_text_cell")
    if chosen is not None and chosen not in cells:
        if clicked is not None and chosen == f"{clicked[0]},{clicked[1]}" and max(clicked) < len(classes):
            cells.append(chosen)  # an empty cell that was clicked stays choosable, to say it is empty
        else:
            del ss["eval_text_cell"]  # left from another run: open on this run's largest mistake
    if not any(i != j for i, j in (map(int, c.split(",")) for c in cells)):
        st.success(_("No errors: every validation text is on the diagonal (predicted as its true class)."))
    st.caption(_("Click a cell to see its texts, or choose one here (largest mistake first)."))

    def label(c: str) -> str:
        t, p = map(int, c.split(","))
        n = matrix[t][p]
        return i18n.ngettext("true {true} → predicted {pred}: {n} text",
                             "true {true} → predicted {pred}: {n} texts", n).format(true=classes[t],
                                                                                    pred=classes[p], n=n)

    cell = st.selectbox(_("Cell"), cells, key="eval_text_cell", format_func=label)
    if cell is not None:
        t, p = map(int, cell.split(","))
        _items_table(services.cell_items(rep, t, p), "eval_cell_texts",
                     _("No validation text of {true} was predicted as {pred}.").format(true=classes[t],
                                                                                       pred=classes[p]))


def try_run(run: runs.Run) -> None:
    """On the Runs page: a text run with a checkpoint classifies texts typed there."""
    if is_text_run(run) and run.best_weights.exists():
        with st.expander(_("Classify texts with this run")):
            predict_texts(run, "runs_texts")


def predict_texts(run: runs.Run, key: str, n_classes: int = 5) -> list[dict]:
    """A box for texts (one per line) and one row per text, in input order: label, confidence, top-k.
    Returns the predictions, each with its ``text``."""
    k = st.slider(_("Show the top k classes"), 1, min(5, n_classes), min(3, n_classes), key=f"{key}_top_k")
    raw = st.text_area(_("Texts to classify, one per line"), key=key, height=120,
                       placeholder=_("The match went to extra time."))
    texts = [line.strip() for line in (raw or "").splitlines() if line.strip()]
    if not texts:
        return []
    if not run.best_weights.exists():
        st.info(_("This run has no checkpoint yet: train at least one epoch first."))
        return []
    model = _model(run)
    k = min(k, len(model.classes))
    preds = [{**p, "text": t} for t, p in zip(texts, model.predict(texts, top_k=k))]
    st.container(key=f"{key}_preds").dataframe(key=f"{key}_preds_df", data=pd.DataFrame({
        _("text"): texts, _("label"): [p["label"] for p in preds],
        _("confidence"): [100 * p["confidence"] for p in preds],
        _("top {k}").format(k=k): [" · ".join(f"{c} {q:.1%}" for c, q in p["top_k"]) for p in preds]}),
        hide_index=True, width="stretch",
        column_config={_("confidence"): _PERCENT})
    return preds


def tokens_html(ex: dict) -> str:
    """The text's tokens coloured by their integrated-gradients score (green raised the class, red lowered it);
    every token is HTML-escaped, word pieces (##) join the piece before them."""
    shown = [(t, s) for t, s, sp in zip(ex["tokens"], ex["scores"], ex["special"]) if not sp]
    peak = max((abs(s) for _t, s in shown), default=0.0) or 1.0
    parts = []
    for tok, s in shown:
        piece = tok.startswith("##") and bool(parts)
        alpha = min(abs(s) / peak, 1.0) * 0.8
        colour = f"rgba(22, 163, 74, {alpha:.2f})" if s >= 0 else f"rgba(220, 38, 38, {alpha:.2f})"
        parts.append(("" if piece or not parts else " ")
                     + f'<span title="{s:+.3g}" style="background: {colour}; padding: 2px 3px; border-radius: 3px">'
                     + f"{html.escape(tok[2:] if piece else tok)}</span>")
    return f'<div class="token-explanation" style="line-height: 2.2">{"".join(parts)}</div>'


def explain(run: runs.Run, texts: list[str], classes: list[str]) -> None:
    """Which tokens of one text pushed the prediction (integrated gradients over the token embeddings)."""
    st.subheader(_("Why this prediction"))
    pick = st.selectbox(_("Text to explain"), range(len(texts)), key="eval_explain_text",
                        format_func=lambda i: texts[i][:80]) if len(texts) > 1 else 0
    target = st.selectbox(_("Explain the score of class"), [None, *range(len(classes))], key="eval_explain_target",
                          format_func=lambda c: _("the predicted class") if c is None else classes[c])
    text = texts[pick if pick is not None else 0]
    with st.spinner(_("Integrating gradients over the tokens…")):
        ex = text_services.text_explain(_model(run), text, target)
    st.html(tokens_html(ex))
    st.caption(_("Tokens that raised the score of {label} are green, tokens that lowered it red; the stronger the "
                 "colour, the larger the effect (hover a token for its score). The scores add up to the change of "
                 "the class's score from an empty text, to within {gap:.2g}.").format(label=common.md(ex["label"]),
                                                                                     gap=abs(ex["gap"])))
    words = [(t, s) for t, s, sp in zip(ex["tokens"], ex["scores"], ex["special"]) if not sp]
    with st.expander(_("Scores per token")):
        st.container(key="eval_explain_table").dataframe(
            pd.DataFrame({_("token"): [t for t, _s in words], _("score"): [float(f"{s:.3g}") for _t, s in words]}),
            hide_index=True, key="eval_explain_df")


# --- Export ----------------------------------------------------------------------------------------------------

def _link(path: Path, label: str, filename: str, key: str, col, **kw) -> None:
    """A link that streams an export from disk (GET /download/<token>), as the image Export step does."""
    try:
        token = downloads.issue(path, filename, common.owner())
    except ValueError as e:  # the file was deleted since the page listed it
        col.error(_("{what}: {error}").format(what=label, error=common.md(e)))
        return
    col.link_button(label, downloads.url(token, st.get_option("server.baseUrlPath") or ""), key=key,
                    icon=":material/download:", **kw)


def _mb(path: Path) -> str:
    return _("{size:.3g} MB").format(size=path.stat().st_size / 1e6)


def export(run: runs.Run) -> None:
    """The Export step for a text run: safetensors with its tokenizer and card, ONNX checked in onnxruntime, the
    zip bundle with predict.py, and the code to load them."""
    owner = common.owner()
    try:
        with st.spinner(_("Writing the safetensors export and its tokenizer…")):
            weights = text_services.text_export(run.path, "safetensors", owner)
            tokenizer = text_services.text_tokenizer_zip(run.path, owner)
            files = text_services.text_export_files(run.path, owner)
    except (ValueError, OSError, RuntimeError, KeyError) as e:  # weights or a card that do not fit together
        st.error(_("Run {run} cannot be exported: {error}").format(run=run.id[:15], error=common.md(e)))
        st.stop()
    stem = f"{run.config().backbone}-{run.id[:15]}"
    c1, c2 = st.columns(2)
    _link(weights, _("Model weights + card (.safetensors)"), f"{stem}.safetensors", "export_safetensors", c1,
          type="primary")
    c1.caption(_("{size}: the weights, with the classes, tokenizer name, maximum length, config and metrics in "
                 "the file's header.").format(size=_mb(weights)))
    _link(tokenizer, _("Tokenizer + encoder config (.zip)"), f"{stem}-tokenizer.zip", "export_tokenizer", c1)
    c1.caption(_("Unzip beside the .safetensors file (a tokenizer folder): the model then loads with no network "
                 "and no encoder package."))
    c2.download_button(_("Model card (.json)"), files["card"], f"{stem}.card.json", "application/json",
                       key="export_card")
    c2.download_button(_("Training config (.json)"), files["config"], f"{stem}.config.json", "application/json",
                       key="export_config")
    c2.caption(_("Retrain the same way: `python -m core train --config config.json`."))

    st.subheader(_("Other formats"))
    st.caption(_("ONNX takes token ids (int64, batch × sequence, both dynamic) and returns logits; it is checked "
                 "in onnxruntime against torch on texts of different lengths before it is kept. The bundle is a "
                 "zip with the weights, the tokenizer, the model card and a standalone predict.py."))
    for col, (fmt, label) in zip(st.columns(2), (("onnx", _("ONNX (.onnx)")),
                                                 ("bundle", _("Zip bundle with predict.py")))):
        ready = text_services.text_export_ready(run.path, fmt, owner)
        if ready is None and col.button(_("Build {format}").format(format=label), key=f"export_build_{fmt}"):
            try:
                with st.spinner(_("Building the {format} export…").format(format=fmt)):
                    ready = text_services.text_export(run.path, fmt, owner)
            except (ValueError, RuntimeError) as e:
                col.error(_("{what}: {error}").format(what=fmt, error=common.md(e)))
        if ready is not None:
            _link(ready, _("Download {format}").format(format=label), f"{stem}{ready.suffix}", f"export_fmt_{fmt}",
                  col)
            col.caption(_mb(ready))
            check = text_services.text_onnx_check(ready) if fmt == "onnx" else None
            if check:
                col.success(_("Checked in onnxruntime: the logits differ from torch by at most {diff:.1e} on {n} "
                              "batches of texts of different lengths.").format(diff=check["max_abs_diff"],
                                                                               n=check["batches"]))

    with st.expander(_("Model card (Markdown)")):
        st.code(text_services.text_card_markdown(run.path, owner), language="markdown")  # source: it quotes labels
    st.subheader(_("Use it in Python"))
    st.code(f'''from core.results.loading import load_model

m = load_model("{stem}.safetensors")   # tokenizer/ unzipped beside it
print(m.classes)
print(m.predict(["some text", "another text"], top_k=3))  # one dict per text: label, confidence, top_k''',
            language="python")
    st.write(_("Without Transfer Studio: build the **zip bundle** above, unzip it, then in that folder:"))
    st.code('pip install -r requirements.txt\npython predict.py "some text" --top-k 3\n'
            'python predict.py --file texts.txt   # one text per line, one JSON line per text', language="bash")
