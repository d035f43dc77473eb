"""1 · Data: bring a dataset (sample, .zip or folder), look at it, fix its classes, choose the split."""
from __future__ import annotations

import streamlit as st

from core.app import charts
from core.app.engine import edits as de, i18n
from pages import common, data_tools, text_steps

_ = i18n.gettext

common.entrypoint()
st.title(_("1 · Data"))
st.write(_("A dataset is a set of images with one label each: one folder per class (`cats/`, `dogs/`), "
           "optionally under `train/` and `val/`, or a CSV of file names and labels. Several uploads can "
           "be appended to the same dataset."))
common.show_flash()

# key + state tracking: the tab in use stays open across the rerun that follows an upload
tab_sample, tab_zip, tab_folder, tab_existing = st.tabs([_("Sample"), _("Upload .zip"), _("Upload folder"), _("Existing")],
                                                        key="data_tab", on_change="rerun")
with tab_sample:
    sample = st.selectbox(_("Built-in sample"), ["digits", "shapes", "topics"], key="data_sample",
                          format_func={"digits": _("digits — 10 handwritten digits (scikit-learn)"),
                                       "shapes": _("shapes — circles, squares, triangles"),
                                       "topics": _("topics — sentences about 4 topics (text classification)")}.get)
    if st.button(_("Use this sample"), key="data_use_sample", type="primary"):
        with st.spinner(_("Writing the sample images…")):
            common.set_dataset(text_steps.sample() if sample == "topics"  # the text sample
                               else de.import_sample(sample, owner=common.owner()))
        common.flash(_("Using the {sample} sample.").format(sample=sample))
        st.rerun()

with tab_zip:
    current = common.dataset()
    append = st.checkbox(_("Append to the current dataset ({name})").format(name=common.md(current)) if current
                         else _("Append to the current dataset"),
                         key="data_append", disabled=current is None)
    up = st.file_uploader(_("Dataset .zip, or a text table (.csv, .tsv, .jsonl)"), type=["zip", "csv", "tsv", "jsonl"],
                          key="data_zip", help=_("Class folders at the root or under one top folder; train/ and val/ "
                                                 "folders; or a CSV of file names and labels.") + " " +
                          _("Text: a .csv, .tsv or .jsonl of text,label (or one free-text and one label column), or "
                            "a .zip of class folders of .txt files."))
    if up is not None and st.session_state.get("_data_zip_done") != up.file_id:
        st.session_state["_data_zip_done"] = up.file_id  # one import per upload, not one per rerun
        target = current if append and current else de.unique_name(up.name)
        try:
            # keeps a copy of the upload (deleted at once if it is rejected) and imports from that copy
            text_steps.upload(up, bool(append and current))  # text: a table of text,label or .zip of .txt folders
            name, skipped = data_tools.import_zip(up, target, append=bool(append and current))
            common.set_dataset(name)
            common.flash(i18n.ngettext("Imported {file} into dataset '{name}'; {n} file left out (see the health "
                                       "report).", "Imported {file} into dataset '{name}'; {n} files left out (see "
                                       "the health report).", len(skipped)).format(file=up.name, name=name,
                                                                                   n=len(skipped))
                         if skipped else _("Imported {file} into dataset '{name}'.").format(file=up.name, name=name))
            st.rerun()
        except ValueError as e:  # IngestError is a ValueError: the message says what to fix
            st.error(common.md(e))

with tab_folder:
    files = st.file_uploader(_("Dataset folder"), accept_multiple_files="directory", key="data_folder")
    if files and st.button(_("Import this folder"), key="data_import_folder"):
        try:
            name = data_tools.import_folder(files)
            common.set_dataset(name)
            common.flash(i18n.ngettext("Imported {n} file into dataset '{name}'.",
                                       "Imported {n} files into dataset '{name}'.", len(files)).format(n=len(files),
                                                                                                      name=name))
            st.rerun()
        except ValueError as e:
            st.error(common.md(e))

with tab_existing:
    have = common.datasets()
    if have:
        pick = st.selectbox(_("Datasets in the workspace"), have, key="data_existing",
                            index=have.index(common.dataset()) if common.dataset() in have else 0)
        if st.button(_("Use this dataset"), key="data_open"):
            common.set_dataset(pick)
            st.rerun()
    else:
        st.caption(_("No dataset in the workspace yet."))

ds = common.dataset()
if ds is None:
    st.info(_("No dataset chosen yet — pick a sample, upload a .zip or a folder above. "
              "Every later step needs one."))
    st.stop()

if common.is_text(ds):  # a text dataset: its own view (pages/text_steps.py)
    text_steps.data(ds)
    st.stop()
st.header(_("Dataset: {name}").format(name=common.md(ds)))
try:
    index, health = data_tools.scan_and_check(ds)
except ValueError as e:
    st.error(_("This dataset cannot be used as it is: {problem}").format(problem=common.md(e)))
    data_tools.class_editor(ds)
    st.stop()

counts = index.counts()
c1, c2, c3 = st.columns(3)
c1.metric(_("Images"), f"{len(index.items):,}")
c2.metric(_("Classes"), len(index.classes))
c3.metric(_("Layout"), data_tools.layout_text(index.layout))
counts_fig = charts.class_counts(counts)
counts_fig.update_xaxes(type="category")  # class names such as "0".."9" are labels, not numbers
st.plotly_chart(counts_fig, key="data_counts_chart", width="stretch")

st.subheader(_("A few images per class"))
cols = st.columns(3)
for i, (cls, paths) in enumerate(de.gallery(index).items()):
    with cols[i % 3]:
        st.markdown(f"**{common.md(cls)}** · "
                    + i18n.ngettext("{n} image", "{n} images", counts[cls]).format(n=counts[cls]))
        st.image([common.thumbnail(p, 96) for p in paths], width=96)  # even squares, centre-cropped

st.subheader(_("Health report"))
for w in health["warnings"]:
    st.warning(common.md(w))  # warnings quote class names and file names from the upload
if not health["warnings"]:
    st.success(_("No problems found: no duplicates, no skipped files, classes balanced."))
with st.expander(_("Details: image sizes, duplicates, skipped files")):
    sizes = health["image_sizes"]
    if sizes:
        title = (_("Shorter side of a sample of {n} of the {total} images").format(
                     n=f"{len(sizes):,}", total=f"{len(index.items):,}")
                 if len(sizes) < len(index.items) else _("Shorter side of all {n} images").format(n=f"{len(sizes):,}"))
        st.plotly_chart(charts.histogram([min(w, h) for w, h in sizes], title, _("pixels")),
                        key="data_sizes_chart", width="stretch")
    st.write(_("Exact duplicate copies: {n}").format(n=health["duplicate_images"]))
    for group in health["duplicates"][:20]:
        st.code("\n".join(group))
    skipped = health["skipped"] + health["unreadable"]
    if skipped:
        st.dataframe(skipped, key="data_skipped_table", hide_index=True)
    else:
        st.write(_("No file was skipped."))

st.subheader(_("Train / validation split"))
draft = common.draft()
split = de.split_summary(index, draft["val_fraction"])
if split["own_val"]:
    st.info(_("The data has its own validation folder: it is used as is ({n_train} train / {n_val} validation "
              "images); the fraction below is ignored.").format(n_train=split["n_train"], n_val=split["n_val"]))
col_a, col_b = st.columns(2)
val_fraction = col_a.slider(_("Validation fraction"), 0.05, 0.5, float(min(max(draft["val_fraction"], 0.05), 0.5)),
                            0.05, key="data_val_fraction", disabled=split["own_val"],
                            help=_("Share of each class held out to measure accuracy on images the model never "
                                   "trains on."))
seed = col_b.number_input(_("Split seed"), 0, 10_000, int(draft["seed"]), key="data_seed",
                          help=_("The same seed always gives the same split."))
common.set_fields(val_fraction=float(val_fraction), seed=int(seed))
if not split["own_val"]:
    split = de.split_summary(index, val_fraction)
    st.write(_("Random stratified split: **{n_train}** training and **{n_val}** validation images.").format(
        n_train=split["n_train"], n_val=split["n_val"]))

data_tools.class_editor(ds)
data_tools.delete_dataset(ds)
common.link("review", _("Find and fix bad labels: 11 · Review labels"))
common.link("backbone", _("Next: 2 · Backbone"))
