"""5 · Evaluate: accuracy, per-class metrics, confusion matrix, curves, mistakes, and predictions on new images."""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from core.app import charts
from core.app import services
from pages import common, eval_tools

common.entrypoint()
st.title("5 · Evaluate")
st.write("The best checkpoint of a run is scored on the validation images it never trained on. Precision: of "
         "the images predicted as a class, how many are right; recall: of the images of a class, how many "
         "are found; F1 combines both.")
run = common.require_run("eval")


@st.cache_data(show_spinner="Evaluating the checkpoint on the validation images…", max_entries=8)
def evaluation(run_dir: str, mtime: float, owner: str | None) -> dict:
    return services.evaluate_run(run_dir, owner)  # the owner is part of the cache key: one user's result each


try:
    rep = evaluation(str(run.path), os.path.getmtime(run.best_weights), common.owner())
except (ValueError, OSError) as e:  # OSError: a file of the run is missing (split.json, say)
    st.error(common.md(e))
    st.stop()

classes = rep["classes"]
c1, c2, c3 = st.columns(3)
c1.metric("Validation accuracy", f"{rep['accuracy']:.1%}")
c2.metric("Macro F1", f"{rep['averages']['macro']['f1']:.1%}")
c3.metric("Validation images", len(rep["items"]))

tab_class, tab_confusion, tab_curves, tab_mistakes, tab_try, tab_test = st.tabs(
    ["Per class", "Confusion matrix", "ROC · PR · calibration", "Mistakes", "Try it on new images",
     "Test on another dataset"])
with tab_class:
    table = pd.DataFrame(rep["per_class"]).set_index("class")
    support = int(table["support"].sum())
    for avg in ("macro", "weighted"):
        table.loc[f"{avg} avg"] = {**rep["averages"][avg], "support": support}
    table[["precision", "recall", "f1"]] *= 100  # shown as percentages with three significant digits
    pct = st.column_config.NumberColumn(format="%.1f %%")
    st.dataframe(table, key="eval_table", width="stretch", height=min(36 * (len(table) + 1) + 4, 640),
                 column_config={"precision": pct, "recall": pct, "f1": pct,
                                "support": st.column_config.NumberColumn(format="%d")})
    st.plotly_chart(charts.per_class_bars(rep["per_class"]), key="eval_per_class", width="stretch")

with tab_confusion:
    normalize = st.toggle("Show fractions of each true class", key="eval_normalize")
    eval_tools.confusion_explorer(rep, classes, normalize)

with tab_curves:
    curves = services.curves(rep)
    st.plotly_chart(charts.roc_curves(curves["roc"]), key="eval_roc", width="stretch")
    st.plotly_chart(charts.pr_curves(curves["pr"]), key="eval_pr", width="stretch")
    cal = curves["calibration"]
    st.plotly_chart(charts.reliability(cal), key="eval_reliability", width="stretch")
    st.caption(f"Expected calibration error {cal['ece']:.3f}: on average the model's confidence differs from its "
               f"accuracy by {cal['ece']:.1%}. Mean confidence {cal['mean_confidence']:.1%} vs accuracy "
               f"{cal['accuracy']:.1%} — {'over' if cal['mean_confidence'] > cal['accuracy'] else 'under'}confident.")

with tab_mistakes:
    st.caption("Highest loss first: the images the model was most confidently wrong about. Look for wrong "
               "labels, ambiguous images and classes that need more examples.")
    eval_tools.gallery(services.top_losses(rep, limit=24, wrong_only=True),
                       empty="Every validation image is classified correctly.")

with tab_try:
    eval_tools.try_it(run, classes)

with tab_test:
    eval_tools.test_set(run)
common.link("review", "Mislabelled images? 11 · Review labels")
common.link("export", "Next: 6 · Export")
