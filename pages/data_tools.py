"""Data-step helpers: cached scanning, and the class editor (camera snapshot, add/rename/merge/delete)."""
from __future__ import annotations

import streamlit as st

from core.app import services
from core.app.engine import edits as de, ingest
from pages import common


def import_zip(up, target: str | None = None, append: bool = False) -> tuple[str, list]:
    """(dataset name, files left out) for an uploaded .zip, into ``target`` or a new dataset named after the file;
    an IngestError (a ValueError) says what to fix."""
    target = target or de.unique_name(up.name.rsplit(".", 1)[0])
    return de.import_upload(up, up.name, target, append=append, progress=common.progress_bar(), owner=common.owner())


def import_folder(files, fallback: str = "folder") -> str:
    """The new dataset made from an uploaded folder's files, named after its top folder (else ``fallback``)."""
    top = files[0].name.replace("\\", "/").split("/")[0]
    # the file objects themselves: core spools them to disk one by one (no second copy in memory)
    name, _ = de.import_files(((f.name, f) for f in files), de.unique_name(top or fallback),
                              progress=common.progress_bar(), owner=common.owner())
    return name


@st.cache_data(show_spinner="Scanning the dataset…", max_entries=16)
def _scan(ds: str, signature: str) -> tuple[dict, dict]:
    index = de.scan(ds)
    return index.to_dict(), ingest.health_report(index, sample_limit=300)


def scan_and_check(ds: str) -> tuple[ingest.DatasetIndex, dict]:
    """(index, health report) of one of this user's datasets; cached until a file in it changes."""
    signature = services.dataset_action("signature", ds, owner=common.owner())  # "not found" if not theirs
    index, health = _scan(ds, signature)
    return ingest.DatasetIndex.from_dict(index), health


def _act(action: str, ds: str, *args, done: str) -> None:
    """Run one edit of this user's dataset; on success keep a message and rerun so every view shows it."""
    try:
        services.dataset_action(action, ds, *args, owner=common.owner())
    except ValueError as e:  # covers IngestError and ImageError: the message says what to do
        st.error(common.md(e))
        return
    common.flash(done)
    st.rerun()


def class_editor(ds: str) -> None:
    """Edit the classes of ``ds`` as folder operations; bad names and bad images give clear errors."""
    try:
        counts = services.dataset_action("class_counts", ds, owner=common.owner())
    except ValueError as e:
        st.info(common.md(e))
        return
    classes = list(counts)
    with st.expander("Edit classes: add images from the camera, add, rename, merge or delete classes"):
        st.caption("Counts on disk: " + ", ".join(f"{common.md(c)} ({n})" for c, n in counts.items()))

        st.markdown("**Camera snapshot into a class**")
        if classes:
            target = st.selectbox("Class for the snapshot", classes, key="data_camera_class")
            use_camera = st.toggle("Use the camera", key="data_use_camera")  # asks for access only on demand
            shot = st.camera_input("Take a picture", key="data_camera") if use_camera else None
            if shot is not None and st.button("Add this picture", key="data_camera_add"):
                _act("add_image", ds, target, shot.getvalue(), "snapshot.jpg", done=f"Added the picture to '{target}'.")

        st.markdown("**Add a class**")
        new = st.text_input("New class name", key="data_new_class", placeholder="e.g. bees")
        if st.button("Add class", key="data_add_class"):
            _act("add_class", ds, new,
                 done=f"Added class '{new.strip()}'. It needs at least 2 images: take pictures or upload more.")

        if classes:
            st.markdown("**Rename a class**")
            a, b = st.columns(2)
            old = a.selectbox("Class", classes, key="data_rename_from")
            to = b.text_input("New name", key="data_rename_to")
            if st.button("Rename", key="data_rename"):
                _act("rename_class", ds, old, to, done=f"Renamed '{old}' to '{to.strip()}'.")

            st.markdown("**Merge classes**")
            a, b = st.columns(2)
            sources = a.multiselect("Classes to merge", classes, key="data_merge_sources")
            into = b.text_input("Into class (existing or new)", key="data_merge_target")
            if st.button("Merge", key="data_merge"):
                _act("merge_classes", ds, sources, into, done=f"Merged {', '.join(sources)} into '{into.strip()}'.")

            st.markdown("**Delete a class**")
            a, b = st.columns(2)
            gone = a.selectbox("Class to delete", classes, key="data_delete_class")
            sure = b.checkbox("Yes, delete its images", key="data_delete_confirm")
            if st.button("Delete class", key="data_delete", disabled=not sure):
                _act("delete_class", ds, gone, done=f"Deleted class '{gone}'.")


def delete_dataset(ds: str) -> None:
    """Delete the whole dataset (its kept uploads go with it; runs trained on it stay)."""
    with st.expander("Delete this dataset"):
        st.write("Removes its images from disk for good; runs trained on it are kept. Refused while a run is "
                 "training on it.")
        sure = st.checkbox(f"Yes, delete dataset {common.md(ds)} for good", key="data_delete_dataset_confirm")
        if st.button("Delete dataset", key="data_delete_dataset", disabled=not sure):
            try:
                services.dataset_action("delete_dataset", ds, owner=common.owner())
            except ValueError as e:
                st.error(common.md(e))
                return
            common.set_dataset(None)
            common.flash(f"Deleted dataset '{ds}'.")
            st.rerun()
