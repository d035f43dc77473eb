"""Evaluate-step helpers: image galleries of evaluation items, and predictions (with Grad-CAM) on new images."""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from core import drafts, runs


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def model(path: str, mtime: float):
    """A loaded model, cached until its weights file changes."""
    return drafts.load_model(path)


def gallery(items: list[dict], empty: str, columns: int = 6) -> None:
    """Thumbnails of evaluation items with true class, prediction and confidence."""
    if not items:
        st.success(empty)
        return
    cols = st.columns(columns)
    for i, it in enumerate(items):
        cols[i % columns].image(it["path"], width=110,
                                caption=f"true {it['true_class']} → {it['pred_class']} ({it['confidence']:.0%})")


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
        st.error(str(e))
        return
    for img, p in zip(images, preds):
        left, mid, right = st.columns([1, 1, 2])
        left.image(img.getvalue(), width=160, caption=img.name)
        if cam:
            img.seek(0)
            ex = drafts.explain(m, img, top_k=top_k)
            mid.image(ex.overlay, width=160, caption=f"Grad-CAM for {ex.target}")
        right.markdown(f"**{p['label']}** ({p['confidence']:.1%})")
        right.dataframe(pd.DataFrame(p["top_k"], columns=["class", "probability"]), hide_index=True,
                        key=f"eval_pred_{img.file_id}")
