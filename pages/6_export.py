"""6 · Export: download the fine-tuned model, its card and its config, and the code to load it."""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.app.engine import downloads, i18n
from core.app import services
from pages import common, text_results

_, N_ = i18n.gettext, i18n.N_

common.entrypoint()
st.title(_("6 · Export"))
st.write(_("The model file is all you need: the `.safetensors` file carries the model card (classes, backbone, "
           "preprocessing, config, metrics) in its metadata, so it rebuilds and predicts on its own. Weight files "
           "download straight from disk, through links that work for at least half an hour after this page shows "
           "them."))
run = common.require_run("export")
if text_results.is_text_run(run):  # issue 17: the text formats, the tokenizer beside the weights
    text_results.export(run)
    st.stop()


@st.cache_data(show_spinner=_("Packing the files…"), max_entries=4)
def payloads(run_dir: str, mtime: float, owner: str | None) -> dict:
    return services.export_files(run_dir, owner)


def disk_link(path, label: str, filename: str, key: str, col=st, **kw) -> None:
    """A link that streams a weight file from disk (GET /download/<token>, see core.storage.downloads).

    st.download_button would copy the whole file into Streamlit's in-memory media store while it is
    served (530 MB for VGG-16); the link's token is 128 random bits, valid one hour, and with sign-in on
    it is served only to this signed-in user.
    """
    try:
        token = downloads.issue(path, filename, common.owner())
    except ValueError as e:  # e.g. the file was deleted since the page listed it
        col.error(f"{label}: {common.md(e)}")
        return
    col.link_button(label, downloads.url(token, st.get_option("server.baseUrlPath") or ""), key=key, **kw)


try:
    files = payloads(str(run.path), os.path.getmtime(run.best_weights), common.owner())
except (ValueError, OSError, RuntimeError, KeyError) as e:  # weights or a card that do not fit together
    st.error(_("Run {run} cannot be exported: {error}").format(run=run.id[:15], error=common.md(e)))
    st.stop()

stem = f"{run.config().backbone}-{run.id[:15]}"
c1, c2 = st.columns(2)
disk_link(files["safetensors"], _("Model weights + card (.safetensors)"), f"{stem}.safetensors", "export_safetensors",
          c1, type="primary", icon=":material/download:")
c1.caption(_("{size} MB — load with `core.results.loading.load_model`, or with any safetensors reader.").format(
    size=f"{files['safetensors'].stat().st_size / 1e6:.1f}"))
c2.download_button(_("Model card (.json)"), files["card"], f"{stem}.card.json", "application/json", key="export_card")
c2.caption(_("Classes, preprocessing, metrics and library versions, readable by people."))
disk_link(files["bundle"], _("One-file bundle (.pt)"), f"{stem}.pt", "export_bundle", c1, icon=":material/download:")
c1.caption(_("A plain dict of tensors and strings: `torch.load(path, weights_only=True)`."))
c2.download_button(_("Training config (.json)"), files["config"], f"{stem}.config.json", "application/json",
                   key="export_config")
c2.caption(_("Retrain the same way: `python -m core train --config config.json`."))

st.subheader(_("Other formats"))
st.caption(_("For deployment without this code: TorchScript and ONNX take float RGB in [0, 1] at the card's crop "
             "size (normalisation is inside the graph); int8 is a quantized TorchScript model, smaller and faster "
             "on CPUs; the bundle is a zip with the weights, the card and a standalone predict.py."))
OTHER = {"torchscript": N_("TorchScript (.pt)"), "onnx": N_("ONNX (.onnx)"), "int8": N_("int8 quantized TorchScript"),
         "bundle": N_("Zip bundle with predict.py")}
# test-time augmentation baked into the graph (core.results.tta): only TorchScript and ONNX can carry it
TTA = {"none": N_("none"), "flip": N_("flip"), "multicrop": N_("multi-crop")}
for col, (fmt, label) in zip(st.columns(len(OTHER)), OTHER.items()):
    tta = "none"
    if fmt in ("torchscript", "onnx"):
        tta = col.selectbox(_("Test-time augmentation"), list(TTA), format_func=lambda m: _(TTA[m]),
                            key=f"export_tta_{fmt}", help=_("**flip**: the image and its mirror; **multi-crop**: the "
                                                            "centre and the 4 corners of the image enlarged 1.15×. "
                                                            "Costs 2× / 5× the prediction time."))
        if tta != "none":
            col.caption(_("The graph makes the views itself: give it each image once, as usual. Its output is the "
                          "log of the probabilities averaged over the views (softmax of it gives them); the model "
                          "card records the augmentation."))
    ready = services.export_ready(run.path, fmt, common.owner(), tta=tta)
    if ready is None and col.button(_("Build {format}").format(format=_(label)), key=f"export_build_{fmt}"):
        try:
            with st.spinner(_("Building the {format} export…").format(format=fmt)):
                ready = services.export_format(run.path, fmt, common.owner(), tta=tta)
        except (ValueError, RuntimeError) as e:  # e.g. an operator the exporter cannot convert
            col.error(f"{fmt}: {common.md(e)}")
    if ready is not None:
        disk_link(ready, _("Download {format}").format(format=_(label)), ready.name, f"export_fmt_{fmt}", col,
                  icon=":material/download:")
        col.caption(f"{ready.stat().st_size / 1e6:.1f} MB")
        q = services.int8_summary(ready) if fmt == "int8" else None
        if q and q.get("fp32_val_accuracy") is not None:
            note = col.caption if q.get("within_tolerance") else col.warning
            note(_("Validation accuracy: int8 {int8}, fp32 {fp32} on {n} images ({method})").format(
                int8=f"{q['int8_val_accuracy']:.3f}", fp32=f"{q['fp32_val_accuracy']:.3f}", n=q["n_val"],
                method=q["method"]))

with st.expander(_("Model card (Markdown)")):
    # shown as source, not rendered: it quotes class names, which are user data (links, images, HTML)
    st.code(services.card_markdown(run.path, common.owner()), language="markdown")

st.subheader(_("Use it in Python"))
# `core` is importable only where it is installed: the snippet starts with the install line that makes it so
# (pyproject.toml installs the engine as the package `transfer-studio`); the zip bundle needs none of our code.
load_code = f'''from core.results.loading import load_model

m = load_model("{stem}.safetensors")   # or the .pt bundle
print(m.classes)
print(m.predict(["img.jpg"], top_k=3))  # [{{'label': ..., 'confidence': ..., 'top_k': [...]}}]'''
here, elsewhere, bundle_tab = st.tabs([_("On this computer"), _("On another computer"), _("Without Transfer Studio")])
here.code(f'pip install "{Path(__file__).resolve().parents[1]}"', language="bash")
here.code(load_code)
elsewhere.code('pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu  # CPU-only, optional\n'
               'pip install "git+<this repository\'s URL>"   # or: pip install . in a copy of it', language="bash")
elsewhere.code(load_code)
bundle_tab.write(_("Build the **zip bundle** above, unzip it, then in that folder:"))
bundle_tab.code("pip install -r requirements.txt\npython predict.py img.jpg --top-k 3   # one JSON line per image",
                language="bash")
