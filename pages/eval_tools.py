"""Evaluate-step helpers: image galleries of evaluation items, and predictions (with Grad-CAM) on new images."""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from core.app import charts
from core.app import services
from core.app.engine import runs
from pages import common


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def model(path: str, mtime: float):
    """A loaded model, cached until its weights file changes."""
    return services.load_model(path)


def gallery(items: list[dict], empty: str, columns: int = 6) -> None:
    """Thumbnails of evaluation items with true class, prediction and confidence."""
    if not items:
        st.success(common.md(empty))  # the message names classes
        return
    cols = st.columns(columns)
    for i, it in enumerate(items):
        cols[i % columns].image(it["path"], width=110,
                                caption=f"true {common.md(it['true_class'])} → {common.md(it['pred_class'])} "
                                        f"({it['confidence']:.0%})")


def try_it(run: runs.Run, classes: list[str]) -> None:
    """Upload images or take a picture; show the top-k classes and, on request, where the model looked."""
    a, b = st.columns(2)
    top_k = a.slider("Show the top k classes", 1, min(5, len(classes)), min(3, len(classes)), key="eval_top_k")
    cam = b.toggle("Show where the model looked (Grad-CAM)", key="eval_gradcam",
                   help="Highlights the image regions that raised the predicted class's score the most.")
    uploads = st.file_uploader("Images", type=["jpg", "jpeg", "png", "bmp", "webp", "gif", "tif", "tiff"],
                               accept_multiple_files=True, key="eval_upload")
    shot = (st.camera_input("Take a picture", key="eval_camera")
            if st.toggle("Use the camera", key="eval_use_camera") else None)  # asks for camera access only on demand
    images = list(uploads or []) + ([shot] if shot is not None else [])
    if not images:
        return
    m = model(str(run.best_weights), os.path.getmtime(run.best_weights))
    try:
        preds = m.predict(images, top_k=top_k)
    except ValueError as e:  # an upload that is not a readable image
        st.error(common.md(e))
        return
    for img, p in zip(images, preds):
        left, mid, right = st.columns([1, 1, 2])
        left.image(img.getvalue(), width=160, caption=common.md(img.name))
        if cam:
            img.seek(0)
            ex = services.explain(m, img, top_k=top_k)
            mid.image(ex.overlay, width=160, caption=f"Grad-CAM for {common.md(ex.target)}")
        right.markdown(f"**{common.md(p['label'])}** ({p['confidence']:.1%})")
        right.dataframe(pd.DataFrame(p["top_k"], columns=["class", "probability"]), hide_index=True,
                        key=f"eval_pred_{img.file_id}")


def test_set(run: runs.Run) -> None:
    """Score the model on a held-out dataset from the workspace (class folders named like the training classes)."""
    st.caption("A test set the model never saw, not even for choosing the best epoch, gives the honest final "
               "number. Its class folders must be named like the training classes; others are left out.")
    have = common.datasets()
    if not have:
        st.info("No dataset in the workspace; upload a test set on the Data step.")
        return
    name = st.selectbox("Test dataset", have, key="eval_test_ds")
    if st.button("Evaluate on this dataset", key="eval_test_run"):
        try:
            with st.spinner("Predicting every image of the test set…"):
                st.session_state["_eval_test"] = (run.id, name, services.evaluate_on(
                    run.path, services.dataset_dir(name, common.owner()), common.owner()))
        except ValueError as e:
            st.error(common.md(e))
            return
    found = st.session_state.get("_eval_test")
    if not found or found[:2] != (run.id, name):
        return
    rep = found[2]
    a, b, c = st.columns(3)
    a.metric("Test accuracy", f"{rep['accuracy']:.1%}")
    b.metric("Images evaluated", rep["n_evaluated"])
    c.metric("Images left out (unknown class)", rep["n_ignored"])
    if rep["unknown_classes"]:
        st.warning("Classes the model does not know were left out: "
                   + ", ".join(f"{common.md(k)} ({v})" for k, v in rep["unknown_classes"].items()))
    if rep["missing_classes"]:
        st.info("No test images for: " + ", ".join(common.md(c) for c in rep["missing_classes"]))
    fig = charts.confusion(rep["confusion"], rep["classes"])
    fig.update_xaxes(type="category").update_yaxes(type="category")
    st.plotly_chart(fig, key="eval_test_confusion", width="stretch")
