"""6 · Export: download the fine-tuned model, its card and its config, and the code to load it."""
from __future__ import annotations

import os

import streamlit as st

from core import drafts
from pages import common

common.entrypoint()
st.title("6 · Export")
st.write("The model file is all you need: the `.safetensors` file carries the model card (classes, backbone, "
         "preprocessing, config, metrics) in its metadata, so it rebuilds and predicts on its own.")
run = common.require_run("export")


@st.cache_data(show_spinner="Packing the files…", max_entries=4)
def payloads(run_dir: str, mtime: float) -> dict:
    return drafts.export_files(run_dir)


def from_disk(path):
    """Download data read only when the button is clicked: large models are never kept in memory meanwhile."""
    return lambda: path.read_bytes()


try:
    files = payloads(str(run.path), os.path.getmtime(run.best_weights))
except ValueError as e:
    st.error(str(e))
    st.stop()

stem = f"{run.config().backbone}-{run.id[:15]}"
c1, c2 = st.columns(2)
c1.download_button("Model weights + card (.safetensors)", from_disk(files["safetensors"]), f"{stem}.safetensors",
                   "application/octet-stream", key="export_safetensors", type="primary")
c1.caption(f"{files['safetensors'].stat().st_size / 1e6:.1f} MB — load with `core.export.load_model`, or with any "
           "safetensors reader.")
c2.download_button("Model card (.json)", files["card"], f"{stem}.card.json", "application/json", key="export_card")
c2.caption("Classes, preprocessing, metrics and library versions, readable by people.")
c1.download_button("One-file bundle (.pt)", from_disk(files["bundle"]), f"{stem}.pt", "application/octet-stream",
                   key="export_bundle")
c1.caption("A plain dict of tensors and strings: `torch.load(path, weights_only=True)`.")
c2.download_button("Training config (.json)", files["config"], f"{stem}.config.json", "application/json",
                   key="export_config")
c2.caption("Retrain the same way: `python -m core train --config config.json`.")

st.subheader("Other formats")
st.caption("For deployment without this code: TorchScript and ONNX take float RGB in [0, 1] at the card's crop "
           "size (normalisation is inside the graph); int8 is a quantized TorchScript model, smaller and faster "
           "on CPUs; the bundle is a zip with the weights, the card and a standalone predict.py.")
OTHER = {"torchscript": ("TorchScript (.pt)", "application/octet-stream"),
         "onnx": ("ONNX (.onnx)", "application/octet-stream"),
         "int8": ("int8 quantized TorchScript", "application/octet-stream"),
         "bundle": ("Zip bundle with predict.py", "application/zip")}
for col, (fmt, (label, mime)) in zip(st.columns(len(OTHER)), OTHER.items()):
    ready = drafts.export_ready(run.path, fmt)
    if ready is None and col.button(f"Build {label}", key=f"export_build_{fmt}"):
        try:
            with st.spinner(f"Building the {fmt} export…"):
                ready = drafts.export_format(run.path, fmt)
        except (ValueError, RuntimeError) as e:  # e.g. an operator the exporter cannot convert
            col.error(f"{fmt}: {e}")
    if ready is not None:
        col.download_button(f"Download {label}", from_disk(ready), ready.name, mime, key=f"export_fmt_{fmt}")
        col.caption(f"{ready.stat().st_size / 1e6:.1f} MB")

with st.expander("Model card (Markdown)"):
    st.markdown(drafts.card_markdown(run.path))

st.subheader("Use it in Python")
st.code(f'''from core.export import load_model

m = load_model("{stem}.safetensors")   # or the .pt bundle
print(m.classes)
print(m.predict(["img.jpg"], top_k=3))  # [{{'label': ..., 'confidence': ..., 'top_k': [...]}}]''')
