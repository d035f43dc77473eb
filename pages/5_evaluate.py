"""5 · Evaluate: accuracy, per-class metrics, confusion matrix, curves, mistakes, and predictions on new images."""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from core.app import charts
from core.app import services
from core.app.engine import i18n
from pages import common, eval_tools, text_results

_, N_ = i18n.gettext, i18n.N_

common.entrypoint()
st.title(_("5 · Evaluate"))
st.write(_("The best checkpoint of a run is scored on the validation images it never trained on. Precision: of "
           "the images predicted as a class, how many are right; recall: of the images of a class, how many "
           "are found; F1 combines both."))
run = common.require_run("eval")
if text_results.is_text_run(run):  # issue 17: a text classifier's report, texts in place of images
    text_results.evaluate(run)
    st.stop()


@st.cache_data(show_spinner=_("Evaluating the checkpoint on the validation images…"), max_entries=8)
def evaluation(run_dir: str, mtime: float, owner: str | None, tta: str = "none") -> dict:
    return services.evaluate_run(run_dir, owner, tta=tta)  # the owner is part of the cache key: one user's result each


# the modes of core.results.tta, averaged over each image's views; every figure below uses the chosen one
TTA = {"none": N_("none"), "flip": N_("flip"), "multicrop": N_("multi-crop")}
tta = st.radio(_("Test-time augmentation"), list(TTA), format_func=lambda m: _(TTA[m]), key="eval_tta",
               horizontal=True, help=_("Predict on a few views of each validation image and average their "
                                       "probabilities. **flip**: the image and its mirror (2× the prediction time). "
                                       "**multi-crop**: the centre and the 4 corners of the image enlarged 1.15× (5× "
                                       "the prediction time). Flip helps when a mirrored image shows the same class, "
                                       "and hurts where it does not (digits, text)."))
try:
    key = (str(run.path), os.path.getmtime(run.best_weights), common.owner())
    rep, plain = evaluation(*key, tta), evaluation(*key, "none")  # the plain one: the delta's reference
except (ValueError, OSError) as e:  # OSError: a file of the run is missing (split.json, say)
    st.error(common.md(e))
    st.stop()


def gain(field: str) -> dict:
    """st.metric's delta arguments: the change TTA brings to a metric, in percentage points (none without TTA;
    no arrow when nothing changed)."""
    if tta == "none":
        return {}
    new, old = (r["accuracy"] if field == "accuracy" else r["averages"]["macro"]["f1"] for r in (rep, plain))
    text = _("{delta} pp vs no TTA").format(delta=f"{(new - old) * 100:+.3g}")
    return {"delta": text, **({"delta_color": "off", "delta_arrow": "off"} if new == old else {})}


classes = rep["classes"]
c1, c2, c3 = st.columns(3)
c1.metric(_("Validation accuracy"), i18n.format_percent(rep["accuracy"]), **gain("accuracy"))
c2.metric(_("Macro F1"), i18n.format_percent(rep["averages"]["macro"]["f1"]), **gain("f1"))
c3.metric(_("Validation images"), len(rep["items"]))

tab_class, tab_confusion, tab_curves, tab_mistakes, tab_try, tab_test = st.tabs(
    [_("Per class"), _("Confusion matrix"), _("ROC · PR · calibration"), _("Mistakes"), _("Try it on new images"),
     _("Test on another dataset")])
with tab_class:
    table = pd.DataFrame(rep["per_class"]).set_index("class")
    support = int(table["support"].sum())
    for avg, row in (("macro", _("macro avg")), ("weighted", _("weighted avg"))):
        table.loc[row] = {**rep["averages"][avg], "support": support}
    table[["precision", "recall", "f1"]] *= 100  # shown as percentages with three significant digits
    def pct(label: str):
        return st.column_config.NumberColumn(label, format="%.1f %%")
    st.dataframe(table, key="eval_table", width="stretch", height=min(36 * (len(table) + 1) + 4, 640),
                 column_config={"_index": st.column_config.Column(_("class")), "precision": pct(_("precision")),
                                "recall": pct(_("recall")), "f1": pct(_("F1")),
                                "support": st.column_config.NumberColumn(_("support"), format="%d",
                                                                         help=_("Validation images of the class"))})
    st.plotly_chart(charts.per_class_bars(rep["per_class"]), key="eval_per_class", width="stretch")

with tab_confusion:
    normalize = st.toggle(_("Show fractions of each true class"), key="eval_normalize")
    eval_tools.confusion_explorer(rep, classes, normalize)

with tab_curves:
    curves = services.curves(rep)
    st.plotly_chart(charts.roc_curves(curves["roc"]), key="eval_roc", width="stretch")
    st.plotly_chart(charts.pr_curves(curves["pr"]), key="eval_pr", width="stretch")
    cal = curves["calibration"]
    st.plotly_chart(charts.reliability(cal), key="eval_reliability", width="stretch")
    calibration = (_("Expected calibration error {ece}: on average the model's confidence differs from its accuracy "
                     "by {gap}. Mean confidence {confidence} vs accuracy {accuracy} — overconfident.")
                   if cal["mean_confidence"] > cal["accuracy"] else
                   _("Expected calibration error {ece}: on average the model's confidence differs from its accuracy "
                     "by {gap}. Mean confidence {confidence} vs accuracy {accuracy} — underconfident."))
    st.caption(calibration.format(ece=f"{cal['ece']:.3f}", gap=i18n.format_percent(cal["ece"]),
                                  confidence=i18n.format_percent(cal["mean_confidence"]),
                                  accuracy=i18n.format_percent(cal["accuracy"])))

with tab_mistakes:
    st.caption(_("Highest loss first: the images the model was most confidently wrong about. Look for wrong "
                 "labels, ambiguous images and classes that need more examples."))
    eval_tools.gallery(services.top_losses(rep, limit=24, wrong_only=True),
                       empty=_("Every validation image is classified correctly."))

with tab_try:
    eval_tools.try_it(run, classes, tta)

with tab_test:
    eval_tools.test_set(run, tta)
common.link("review", _("Mislabelled images? 11 · Review labels"))
common.link("export", _("Next: 6 · Export"))
