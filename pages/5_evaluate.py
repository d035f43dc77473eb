"""5 · Evaluate: accuracy, per-class metrics, confusion matrix, mistakes, and predictions on new images."""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from core import charts, drafts
from pages import common

st.title("5 · Evaluate")
st.write("The best checkpoint of a run is scored on the validation images it never trained on. Precision: of "
         "the images predicted as a class, how many are right; recall: of the images of a class, how many "
         "are found; F1 combines both.")
run = common.require_run("eval")


@st.cache_data(show_spinner="Evaluating the checkpoint on the validation images…", max_entries=8)
def evaluation(run_dir: str, mtime: float) -> dict:
    return drafts.evaluate_run(run_dir)


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def model(path: str, mtime: float):
    return drafts.load_model(path)


try:
    rep = evaluation(str(run.path), os.path.getmtime(run.best_weights))
except ValueError as e:
    st.error(str(e))
    st.stop()

classes = rep["classes"]
c1, c2, c3 = st.columns(3)
c1.metric("Validation accuracy", f"{rep['accuracy']:.1%}")
c2.metric("Macro F1", f"{rep['averages']['macro']['f1']:.3f}")
c3.metric("Validation images", len(rep["items"]))

table = pd.DataFrame(rep["per_class"]).set_index("class")
support = int(table["support"].sum())
for avg in ("macro", "weighted"):
    table.loc[f"{avg} avg"] = {**rep["averages"][avg], "support": support}
st.dataframe(table.style.format({"precision": "{:.3f}", "recall": "{:.3f}", "f1": "{:.3f}"}),
             key="eval_table", width="stretch", height=min(36 * (len(table) + 1) + 4, 640))
normalize = st.toggle("Show the confusion matrix as fractions of each true class", key="eval_normalize")
confusion = charts.confusion(rep["confusion"], classes, normalize=normalize)
confusion.update_xaxes(type="category").update_yaxes(type="category")  # digit class names stay labels
st.plotly_chart(confusion, key="eval_confusion", width="stretch")

st.subheader("Mistakes, most confident first")
wrong = drafts.misclassified(rep, limit=24)
if not wrong:
    st.success("Every validation image is classified correctly.")
else:
    cols = st.columns(6)
    for i, it in enumerate(wrong):
        cols[i % 6].image(it["path"], width=110, caption=f"true {classes[it['label']]} → "
                                                         f"{classes[it['pred']]} ({it['confidence']:.0%})")

st.subheader("Try it on new images")
top_k = st.slider("Show the top k classes", 1, min(5, len(classes)), min(3, len(classes)), key="eval_top_k")
uploads = st.file_uploader("Images", type=["jpg", "jpeg", "png", "bmp", "webp", "gif", "tif", "tiff"],
                           accept_multiple_files=True, key="eval_upload")
shot = (st.camera_input("Take a picture", key="eval_camera")
        if st.toggle("Use the camera", key="eval_use_camera") else None)  # asks for camera access only on demand
images = list(uploads or []) + ([shot] if shot is not None else [])
if images:
    m = model(str(run.best_weights), os.path.getmtime(run.best_weights))
    try:
        preds = m.predict(images, top_k=top_k)
    except ValueError as e:  # an upload that is not a readable image
        st.error(str(e))
        st.stop()
    for img, p in zip(images, preds):
        a, b = st.columns([1, 3])
        a.image(img.getvalue(), width=140, caption=img.name)
        b.markdown(f"**{p['label']}** ({p['confidence']:.1%})")
        b.dataframe(pd.DataFrame(p["top_k"], columns=["class", "probability"]), hide_index=True,
                    key=f"eval_pred_{img.file_id}")
common.link("export", "Next: 6 · Export")
