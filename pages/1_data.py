"""1 · Data: bring a dataset (sample, .zip or folder), look at it, fix its classes, choose the split."""
from __future__ import annotations

import streamlit as st

from core.app import charts
from core.app.engine import edits as de
from pages import common, data_tools

common.entrypoint()
st.title("1 · Data")
st.write("A dataset is a set of images with one label each: one folder per class (`cats/`, `dogs/`), "
         "optionally under `train/` and `val/`, or a CSV of file names and labels. Several uploads can "
         "be appended to the same dataset.")
common.show_flash()

# key + state tracking: the tab in use stays open across the rerun that follows an upload
tab_sample, tab_zip, tab_folder, tab_existing = st.tabs(["Sample", "Upload .zip", "Upload folder", "Existing"],
                                                        key="data_tab", on_change="rerun")
with tab_sample:
    sample = st.selectbox("Built-in sample", ["digits", "shapes"], key="data_sample",
                          format_func={"digits": "digits — 10 handwritten digits (scikit-learn)",
                                       "shapes": "shapes — circles, squares, triangles"}.get)
    if st.button("Use this sample", key="data_use_sample", type="primary"):
        with st.spinner("Writing the sample images…"):
            common.set_dataset(de.import_sample(sample, owner=common.owner()))
        common.flash(f"Using the {sample} sample.")
        st.rerun()

with tab_zip:
    current = common.dataset()
    append = st.checkbox(f"Append to the current dataset ({common.md(current)})" if current
                         else "Append to the current dataset",
                         key="data_append", disabled=current is None)
    up = st.file_uploader("Dataset .zip", type=["zip"], key="data_zip",
                          help="Class folders at the root or under one top folder; train/ and val/ folders; "
                               "or a CSV of file names and labels.")
    if up is not None and st.session_state.get("_data_zip_done") != up.file_id:
        st.session_state["_data_zip_done"] = up.file_id  # one import per upload, not one per rerun
        target = current if append and current else de.unique_name(up.name)
        try:
            # keeps a copy of the upload (deleted at once if it is rejected) and imports from that copy
            name, skipped = data_tools.import_zip(up, target, append=bool(append and current))
            common.set_dataset(name)
            common.flash(f"Imported {up.name} into dataset '{name}'"
                         + (f"; {len(skipped)} file(s) left out (see the health report)." if skipped else "."))
            st.rerun()
        except ValueError as e:  # IngestError is a ValueError: the message says what to fix
            st.error(common.md(e))

with tab_folder:
    files = st.file_uploader("Dataset folder", accept_multiple_files="directory", key="data_folder")
    if files and st.button("Import this folder", key="data_import_folder"):
        try:
            name = data_tools.import_folder(files)
            common.set_dataset(name)
            common.flash(f"Imported {len(files)} files into dataset '{name}'.")
            st.rerun()
        except ValueError as e:
            st.error(common.md(e))

with tab_existing:
    have = common.datasets()
    if have:
        pick = st.selectbox("Datasets in the workspace", have, key="data_existing",
                            index=have.index(common.dataset()) if common.dataset() in have else 0)
        if st.button("Use this dataset", key="data_open"):
            common.set_dataset(pick)
            st.rerun()
    else:
        st.caption("No dataset in the workspace yet.")

ds = common.dataset()
if ds is None:
    st.info("No dataset chosen yet — pick a sample, upload a .zip or a folder above. "
            "Every later step needs one.")
    st.stop()

st.header(f"Dataset: {common.md(ds)}")
try:
    index, health = data_tools.scan_and_check(ds)
except ValueError as e:
    st.error(f"This dataset cannot be used as it is: {common.md(e)}")
    data_tools.class_editor(ds)
    st.stop()

counts = index.counts()
c1, c2, c3 = st.columns(3)
c1.metric("Images", f"{len(index.items):,}")
c2.metric("Classes", len(index.classes))
c3.metric("Layout", index.layout)
counts_fig = charts.class_counts(counts)
counts_fig.update_xaxes(type="category")  # class names such as "0".."9" are labels, not numbers
st.plotly_chart(counts_fig, key="data_counts_chart", width="stretch")

st.subheader("A few images per class")
cols = st.columns(3)
for i, (cls, paths) in enumerate(de.gallery(index).items()):
    with cols[i % 3]:
        st.markdown(f"**{common.md(cls)}** · {counts[cls]} images")
        st.image([common.thumbnail(p, 96) for p in paths], width=96)  # even squares, centre-cropped

st.subheader("Health report")
for w in health["warnings"]:
    st.warning(common.md(w))  # warnings quote class names and file names from the upload
if not health["warnings"]:
    st.success("No problems found: no duplicates, no skipped files, classes balanced.")
with st.expander("Details: image sizes, duplicates, skipped files"):
    sizes = health["image_sizes"]
    if sizes:
        title = (f"Shorter side of a sample of {len(sizes):,} of the {len(index.items):,} images"
                 if len(sizes) < len(index.items) else f"Shorter side of all {len(sizes):,} images")
        st.plotly_chart(charts.histogram([min(w, h) for w, h in sizes], title, "pixels"),
                        key="data_sizes_chart", width="stretch")
    st.write(f"Exact duplicate copies: {health['duplicate_images']}")
    for group in health["duplicates"][:20]:
        st.code("\n".join(group))
    skipped = health["skipped"] + health["unreadable"]
    if skipped:
        st.dataframe(skipped, key="data_skipped_table", hide_index=True)
    else:
        st.write("No file was skipped.")

st.subheader("Train / validation split")
draft = common.draft()
split = de.split_summary(index, draft["val_fraction"])
if split["own_val"]:
    st.info(f"The data has its own validation folder: it is used as is ({split['n_train']} train / "
            f"{split['n_val']} validation images); the fraction below is ignored.")
col_a, col_b = st.columns(2)
val_fraction = col_a.slider("Validation fraction", 0.05, 0.5, float(min(max(draft["val_fraction"], 0.05), 0.5)),
                            0.05, key="data_val_fraction", disabled=split["own_val"],
                            help="Share of each class held out to measure accuracy on images the model never trains on.")
seed = col_b.number_input("Split seed", 0, 10_000, int(draft["seed"]), key="data_seed",
                          help="The same seed always gives the same split.")
common.set_fields(val_fraction=float(val_fraction), seed=int(seed))
if not split["own_val"]:
    split = de.split_summary(index, val_fraction)
    st.write(f"Random stratified split: **{split['n_train']}** training and **{split['n_val']}** validation images.")

data_tools.class_editor(ds)
data_tools.delete_dataset(ds)
common.link("review", "Find and fix bad labels: 11 · Review labels")
common.link("backbone", "Next: 2 · Backbone")
