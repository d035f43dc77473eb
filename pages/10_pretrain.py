"""10 · Pretrain: adapt the backbone to the current dataset's images with SimCLR, before fine-tuning."""
from __future__ import annotations

import streamlit as st

from core.app import charts
from core.app import services, text_services
from core.app.engine import i18n
from pages import common, technique_tools as tt

_ = i18n.gettext

common.entrypoint()
st.title(_("10 · Pretrain"))
st.write(_("Self-supervised pretraining adapts an ImageNet backbone to your own kind of images (microscopy, "
           "X-rays, satellite tiles) from the pictures alone, without labels, by teaching it that two random views "
           "of one image belong together. Use it when your images look unlike everyday photos and you have many "
           "more images than labels; on photo-like data or tiny budgets it may not help."))

ds = common.require_dataset()
d = common.draft()
if common.is_text(ds):  # issue 17: masked-language-model pretraining of a text encoder (text_pretrain)
    st.write(_("For text, the encoder keeps learning its language on your own texts: some words are hidden and it "
               "learns to fill them in (masked-language-model pretraining). The labels are not used."))
    bases = text_services.pretrain_bases()
    base = st.selectbox(_("Text encoder to adapt"), bases,
                        index=bases.index(d["backbone"]) if d["backbone"] in bases else 0, key="pretrain_text_base")
    options = [_("The texts of dataset {name}").format(name=common.md(ds)),
               _("Upload unlabelled text (.txt, one text per line, or a table with a text column)")]
    choice = st.radio(_("Texts"), options, key="pretrain_text_source", horizontal=True)
    source = str(services.dataset_dir(ds, common.owner()))
    if choice == options[1]:
        up = st.file_uploader(_("Unlabelled texts"), type=["txt", "csv", "tsv", "jsonl"], key="pretrain_text_upload")
        if up is None:
            st.info(_("Upload a .txt file (one text per line) or a CSV/TSV/JSONL table with a text column."))
            st.stop()
        source = tt.keep_upload(up, "pretrain-text")
    c1, c2, c3 = st.columns(3)
    epochs = c1.number_input(_("Epochs"), 1, 500, 3, key="pretrain_epochs")
    batch = c2.number_input(_("Batch size"), 2, 1024, 32, key="pretrain_batch")
    max_length = c3.number_input(_("Max length (tokens)"), 8, 512, int(d.get("max_length") or 128),
                                 key="pretrain_max_length", help=_("Tokens kept per text; longer texts are cut."))
    st.caption(_("Every layer of {backbone} adapts; 15% of the tokens of each text are hidden. The adapted encoder "
                 "then appears on the Backbone step, to fine-tune like any other.").format(backbone=common.md(base)))
    run, job, active = tt.current("text_pretrain")
    if st.button(_("Start pretraining"), key="pretrain_start", type="primary", disabled=active):
        tt.start(lambda: text_services.pretrain_config(source, base, int(epochs), int(batch), int(max_length),
                                                       owner=common.owner()), "pretrain")

    def draw_text(run, events, status) -> None:
        if any(e.get("type") == "step" for e in events):
            st.plotly_chart(charts.step_loss(events), key="pretrain_chart", width="stretch")
        if status == "finished":
            result = run.result() or {}
            loss = result.get("mlm_loss")
            st.success(_("Done. The adapted encoder **{backbone}** now appears on the Backbone step's text "
                         "encoders: choose it there and fine-tune it like any other.").format(
                backbone=common.md(result.get("backbone_name", ""))))
            if isinstance(loss, (int, float)):
                st.caption(_("Masked-language-model loss on the held-out texts: {loss}").format(loss=f"{loss:.3g}"))
            common.link("backbone", _("Go to 2 · Backbone"))

    tt.live("text_pretrain", "pretrain", draw_text)
    st.stop()
base = d["backbone"]
if str(base).startswith("adapted:"):
    st.info(_("The chosen backbone ({backbone}) is already adapted. Pick a registry backbone to adapt on the "
              "Backbone step.").format(backbone=common.md(base)))
    common.link("backbone", _("Go to 2 · Backbone"))
    st.stop()

st.write(_("Adapts **{backbone}** (from the Backbone step) on the images of **{dataset}**; the labels are not "
           "used.").format(backbone=common.md(base), dataset=common.md(ds)))
c1, c2, c3 = st.columns(3)
epochs = c1.number_input(_("Epochs"), 1, 500, 5, key="pretrain_epochs")
batch = c2.number_input(_("Batch size"), 2, 1024, 32, key="pretrain_batch",
                        help=_("The other images of a batch are the negatives: larger batches give a harder task."))
temperature = c3.number_input(_("Temperature"), 0.05, 1.0, 0.2, 0.05, key="pretrain_temperature",
                              help=_("Softmax temperature of the NT-Xent loss (SimCLR uses 0.1-0.5)."))

run, job, active = tt.current("simclr")


def pretrain_config():
    """The SimCLR config: the draft's backbone and layers, this user's dataset as the unlabelled images."""
    folder = str(services.dataset_dir(ds, common.owner()))
    trainable = "all" if d["trainable"] == "head" else d["trainable"]  # the head is thrown away afterwards
    cfg = services.to_config(d, folder, common.owner(), epochs=int(epochs), batch_size=int(batch), lr=3e-4,
                             augment="none", trainable=trainable, trainable_groups=None, name="")
    cfg.technique, cfg.sources, cfg.simclr_temperature = "simclr", [folder], float(temperature)
    return cfg


if st.button(_("Start pretraining"), key="pretrain_start", type="primary", disabled=active):
    tt.start(pretrain_config, "pretrain")


def draw(run, events, status) -> None:
    if any(e.get("type") == "step" for e in events):
        st.plotly_chart(charts.contrastive_curves(events), key="pretrain_chart", width="stretch")
    if status == "finished":
        result = run.result() or {}
        st.success(_("Done. The adapted backbone **{backbone}** now appears on the Backbone page: choose it there "
                     "and fine-tune it like any other.").format(
            backbone=common.md(result.get("backbone_name", "adapted:" + base))))
        common.link("backbone", _("Go to 2 · Backbone"))


tt.live("simclr", "pretrain", draw)
