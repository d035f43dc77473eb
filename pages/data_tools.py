"""Data-step helpers: cached scanning, and the class editor (camera snapshot, add/rename/merge/delete)."""
from __future__ import annotations

import streamlit as st

from core.app import services
from core.app.engine import edits as de, i18n, ingest
from pages import common

_, N_ = i18n.gettext, i18n.N_
# How a dataset is laid out on disk (DatasetIndex.layout), as the Data step's metric shows it
LAYOUTS = {"class-folders": N_("class folders"), "split-folders": N_("train/ and val/ folders"), "csv": N_("CSV labels")}


def layout_text(layout: str) -> str:
    """A dataset layout in the session's language (an unknown one as it is)."""
    return _(LAYOUTS[layout]) if layout in LAYOUTS else str(layout)


def import_zip(up, target: str | None = None, append: bool = False) -> tuple[str, list]:
    """(dataset name, files left out) for an uploaded .zip, into ``target`` or a new dataset named after the file;
    an IngestError (a ValueError) says what to fix."""
    target = target or de.unique_name(up.name.rsplit(".", 1)[0])
    return de.import_upload(up, up.name, target, append=append, progress=common.progress_bar(), owner=common.owner())


def import_folder(files, fallback: str = "folder") -> str:
    """The new dataset made from an uploaded folder's files, named after its top folder (else ``fallback``)."""
    top = files[0].name.replace("\\", "/").split("/")[0]
    # the file objects themselves: core spools them to disk one by one (no second copy in memory)
    name, _skipped = de.import_files(((f.name, f) for f in files), de.unique_name(top or fallback),
                                     progress=common.progress_bar(), owner=common.owner())
    return name


@st.cache_data(show_spinner=_("Scanning the dataset…"), max_entries=16)
def _scan(ds: str, signature: str, lang: str) -> tuple[dict, dict]:
    """The index and health report; ``lang`` keys the cache, since the report's warnings are in that language."""
    index = de.scan(ds)
    return index.to_dict(), ingest.health_report(index, sample_limit=300)


def scan_and_check(ds: str) -> tuple[ingest.DatasetIndex, dict]:
    """(index, health report) of one of this user's datasets; cached until a file in it changes."""
    signature = services.dataset_action("signature", ds, owner=common.owner())  # "not found" if not theirs
    index, health = _scan(ds, signature, i18n.current_language())
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
    with st.expander(_("Edit classes: add images from the camera, add, rename, merge or delete classes")):
        st.caption(_("Counts on disk: {counts}").format(
            counts=", ".join(f"{common.md(c)} ({n})" for c, n in counts.items())))

        st.markdown("**" + _("Camera snapshot into a class") + "**")
        if classes:
            target = st.selectbox(_("Class for the snapshot"), classes, key="data_camera_class")
            use_camera = st.toggle(_("Use the camera"), key="data_use_camera")  # asks for access only on demand
            shot = st.camera_input(_("Take a picture"), key="data_camera") if use_camera else None
            if shot is not None and st.button(_("Add this picture"), key="data_camera_add"):
                _act("add_image", ds, target, shot.getvalue(), "snapshot.jpg",
                     done=_("Added the picture to '{name}'.").format(name=target))

        st.markdown("**" + _("Add a class") + "**")
        new = st.text_input(_("New class name"), key="data_new_class", placeholder=_("e.g. bees"))
        if st.button(_("Add class"), key="data_add_class"):
            _act("add_class", ds, new,
                 done=_("Added class '{name}'. It needs at least 2 images: take pictures or upload more.").format(
                     name=new.strip()))

        if classes:
            st.markdown("**" + _("Rename a class") + "**")
            a, b = st.columns(2)
            old = a.selectbox(_("Class"), classes, key="data_rename_from")
            to = b.text_input(_("New name"), key="data_rename_to")
            if st.button(_("Rename"), key="data_rename"):
                _act("rename_class", ds, old, to, done=_("Renamed '{old}' to '{new}'.").format(old=old, new=to.strip()))

            st.markdown("**" + _("Merge classes") + "**")
            a, b = st.columns(2)
            sources = a.multiselect(_("Classes to merge"), classes, key="data_merge_sources")
            into = b.text_input(_("Into class (existing or new)"), key="data_merge_target")
            if st.button(_("Merge"), key="data_merge"):
                _act("merge_classes", ds, sources, into,
                     done=_("Merged {classes} into '{name}'.").format(classes=", ".join(sources), name=into.strip()))

            st.markdown("**" + _("Delete a class") + "**")
            a, b = st.columns(2)
            gone = a.selectbox(_("Class to delete"), classes, key="data_delete_class")
            sure = b.checkbox(_("Yes, delete its images"), key="data_delete_confirm")
            if st.button(_("Delete class"), key="data_delete", disabled=not sure):
                _act("delete_class", ds, gone, done=_("Deleted class '{name}'.").format(name=gone))


def delete_dataset(ds: str) -> None:
    """Delete the whole dataset (its kept uploads go with it; runs trained on it stay)."""
    with st.expander(_("Delete this dataset")):
        st.write(_("Removes its images from disk for good; runs trained on it are kept. Refused while a run is "
                   "training on it."))
        sure = st.checkbox(_("Yes, delete dataset {name} for good").format(name=common.md(ds)),
                           key="data_delete_dataset_confirm")
        if st.button(_("Delete dataset"), key="data_delete_dataset", disabled=not sure):
            try:
                services.dataset_action("delete_dataset", ds, owner=common.owner())
            except ValueError as e:
                st.error(common.md(e))
                return
            common.set_dataset(None)
            common.flash(_("Deleted dataset '{name}'.").format(name=ds))
            st.rerun()
