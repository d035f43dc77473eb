"""Data-step helpers: cached scanning, and the class editor (camera snapshot, add/rename/merge/delete)."""
from __future__ import annotations

import streamlit as st

from core.data import edits as de
from core.data import ingest
from pages import common


@st.cache_data(show_spinner="Scanning the dataset…", max_entries=16)
def _scan(ds: str, signature: str) -> tuple[dict, dict]:
    index = de.scan(ds)
    return index.to_dict(), ingest.health_report(index, sample_limit=300)


def scan_and_check(ds: str, signature: str) -> tuple[ingest.DatasetIndex, dict]:
    """(index, health report) of a dataset; cached until a file in it changes (``signature``)."""
    index, health = _scan(ds, signature)
    return ingest.DatasetIndex.from_dict(index), health


def _act(fn, done: str) -> None:
    """Run one edit; on success keep a message and rerun so every view shows the new data."""
    try:
        fn()
    except ValueError as e:  # covers IngestError and ImageError: the message says what to do
        st.error(str(e))
        return
    common.flash(done)
    st.rerun()


def class_editor(ds: str) -> None:
    """Edit the classes of ``ds`` as folder operations; bad names and bad images give clear errors."""
    try:
        counts = de.class_counts(ds)
    except ValueError as e:
        st.info(str(e))
        return
    classes = list(counts)
    with st.expander("Edit classes: add images from the camera, add, rename, merge or delete classes"):
        st.caption("Counts on disk: " + ", ".join(f"{c} ({n})" for c, n in counts.items()))

        st.markdown("**Camera snapshot into a class**")
        if classes:
            target = st.selectbox("Class for the snapshot", classes, key="data_camera_class")
            use_camera = st.toggle("Use the camera", key="data_use_camera")  # asks for access only on demand
            shot = st.camera_input("Take a picture", key="data_camera") if use_camera else None
            if shot is not None and st.button("Add this picture", key="data_camera_add"):
                _act(lambda: de.add_image(ds, target, shot.getvalue(), "snapshot.jpg"),
                     f"Added the picture to '{target}'.")

        st.markdown("**Add a class**")
        new = st.text_input("New class name", key="data_new_class", placeholder="e.g. bees")
        if st.button("Add class", key="data_add_class"):
            _act(lambda: de.add_class(ds, new),
                 f"Added class '{new.strip()}'. It needs at least 2 images: take pictures or upload more.")

        if classes:
            st.markdown("**Rename a class**")
            a, b = st.columns(2)
            old = a.selectbox("Class", classes, key="data_rename_from")
            to = b.text_input("New name", key="data_rename_to")
            if st.button("Rename", key="data_rename"):
                _act(lambda: de.rename_class(ds, old, to), f"Renamed '{old}' to '{to.strip()}'.")

            st.markdown("**Merge classes**")
            a, b = st.columns(2)
            sources = a.multiselect("Classes to merge", classes, key="data_merge_sources")
            into = b.text_input("Into class (existing or new)", key="data_merge_target")
            if st.button("Merge", key="data_merge"):
                _act(lambda: de.merge_classes(ds, sources, into), f"Merged {', '.join(sources)} into '{into.strip()}'.")

            st.markdown("**Delete a class**")
            a, b = st.columns(2)
            gone = a.selectbox("Class to delete", classes, key="data_delete_class")
            sure = b.checkbox("Yes, delete its images", key="data_delete_confirm")
            if st.button("Delete class", key="data_delete", disabled=not sure):
                _act(lambda: de.delete_class(ds, gone), f"Deleted class '{gone}'.")
