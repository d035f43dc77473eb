"""Evaluate-step helpers: image galleries of evaluation items, and predictions (with Grad-CAM) on new images."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from core.app import charts
from core.app import services
from core.app.engine import i18n, imageio, runs
from pages import common, data_tools

_ = i18n.gettext


# show_spinner is fixed when this module is first imported, in that session's language: the callers show one instead
@st.cache_resource(show_spinner=False, max_entries=4)
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
        cols[i % columns].image(common.thumbnail(it["path"], 112), width=112,
                                caption=_("true {true} → {predicted} ({confidence})").format(
                                    true=common.md(it["true_class"]), predicted=common.md(it["pred_class"]),
                                    confidence=i18n.format_percent(it["confidence"], 0)))


def _clicked(event) -> tuple[int, int] | None:
    """The (true, predicted) cell of the last point clicked in the confusion matrix, if any."""
    points = (event or {}).get("selection", {}).get("points", []) if hasattr(event, "get") else []
    for p in points:
        data = p.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) == 2:
            return int(data[0]), int(data[1])
    return None


def confusion_explorer(rep: dict, classes: list[str], normalize: bool) -> None:
    """A clickable confusion matrix: a click (or the select below, for keyboards) shows that cell's images;
    it opens on the largest off-diagonal cell."""
    matrix = rep["confusion"]
    fig = charts.confusion(matrix, classes, normalize=normalize, clickable=True)
    fig.update_xaxes(type="category").update_yaxes(type="category")  # digit class names stay labels
    event = st.plotly_chart(fig, key="eval_confusion", width="stretch", on_select="rerun",
                            selection_mode=("points",))
    cells = [f"{i},{j}" for i, j in services.confusion_cells(matrix)]
    clicked = _clicked(event)
    ss = st.session_state
    if clicked is None:
        ss.pop("_eval_cell_clicked", None)  # deselected: clicking the same cell again counts as a new click
    elif ss.get("_eval_cell_clicked") != clicked:
        ss["_eval_cell_clicked"] = clicked  # a new click moves the select; an old selection does not undo it later
        ss["eval_cell"] = f"{clicked[0]},{clicked[1]}"
    chosen, click = ss.get("eval_cell"), ss.get("_eval_cell_clicked")
    if chosen is not None and chosen not in cells:
        if click is not None and chosen == f"{click[0]},{click[1]}" and max(click) < len(classes):
            cells.append(chosen)  # a clicked cell without images stays choosable, to say it is empty
        else:
            del ss["eval_cell"]  # left from another run: open on this run's largest mistake instead
    if not any(i != j for i, j in (map(int, c.split(",")) for c in cells)):
        st.success(_("No errors: every validation image is on the diagonal (predicted as its true class)."))
    st.caption(_("Click a cell to see its images, or choose one here (largest mistake first)."))
    cell = st.selectbox(_("Cell"), cells, key="eval_cell", format_func=lambda c: _cell_label(c, matrix, classes))
    if cell is None:
        return
    t, p = map(int, cell.split(","))
    gallery(services.cell_items(rep, t, p),
            empty=_("No validation image of {true} was predicted as {predicted}.").format(true=classes[t],
                                                                                          predicted=classes[p]))


def _cell_label(cell: str, matrix: list[list[int]], classes: list[str]) -> str:
    t, p = map(int, cell.split(","))
    text = (i18n.ngettext("true {true} → predicted {predicted}: {n} image, correct",
                          "true {true} → predicted {predicted}: {n} images, correct", matrix[t][p]) if t == p else
            i18n.ngettext("true {true} → predicted {predicted}: {n} image, mistakes",
                          "true {true} → predicted {predicted}: {n} images, mistakes", matrix[t][p]))
    return text.format(true=classes[t], predicted=classes[p], n=matrix[t][p])


def try_it(run: runs.Run, classes: list[str], tta: str = "none") -> None:
    """Upload images or take a picture; show the top-k classes (averaged over the views of the page's test-time
    augmentation ``tta``) and, on request, where the model looked."""
    a, b = st.columns(2)
    top_k = a.slider(_("Show the top k classes"), 1, min(5, len(classes)), min(3, len(classes)), key="eval_top_k")
    cam = b.toggle(_("Show where the model looked (Grad-CAM)"), key="eval_gradcam",
                   help=_("Highlights the image regions that raised the predicted class's score the most."))
    uploads = st.file_uploader(_("Images"), type=sorted(e.lstrip(".") for e in imageio.IMAGE_EXTENSIONS),
                               accept_multiple_files=True, key="eval_upload")
    shot = (st.camera_input(_("Take a picture"), key="eval_camera")
            if st.toggle(_("Use the camera"), key="eval_use_camera") else None)  # asks for camera access only on demand
    images = list(uploads or []) + ([shot] if shot is not None else [])
    if not images:
        return
    with st.spinner(_("Loading the model…")):
        m = model(str(run.best_weights), os.path.getmtime(run.best_weights))
    try:
        preds = m.predict(images, top_k=top_k, tta=tta)
    except ValueError as e:  # an upload that is not a readable image
        st.error(common.md(e))
        return
    for img, p in zip(images, preds):
        left, mid, right = st.columns([1, 1, 2])
        left.image(img.getvalue(), width=160, caption=common.md(img.name))
        if cam:
            img.seek(0)
            ex = services.explain(m, img, top_k=top_k)
            mid.image(ex.overlay, width=160, caption=_("Grad-CAM for {label}, on the centre crop: the model saw only "
                                                       "this square, not the rest of the photo").format(
                                                         label=common.md(ex.target)))
        right.markdown(f"**{common.md(p['label'])}** ({i18n.format_percent(p['confidence'])})")
        right.dataframe(pd.DataFrame(p["top_k"], columns=[_("class"), _("probability")]), hide_index=True,
                        key=f"eval_pred_{img.file_id}")


def _upload_test_set() -> None:
    """A .zip or folder uploaded here becomes a dataset of this user; the current dataset stays as it is."""
    with st.expander(_("Upload a test set (.zip or folder, laid out like the Data step's uploads)")):
        up = st.file_uploader(_("Test set .zip"), type=["zip"], key="eval_test_zip")
        files = st.file_uploader(_("Test set folder"), accept_multiple_files="directory", key="eval_test_folder")
        try:
            if up is not None and st.session_state.get("_eval_test_zip_done") != up.file_id:
                st.session_state["_eval_test_zip_done"] = up.file_id  # one import per upload, not per rerun
                name = data_tools.import_zip(up)[0]
            elif files and st.button(_("Import this folder as a test set"), key="eval_test_import_folder"):
                name = data_tools.import_folder(files, "test-set")
            else:
                return
        except ValueError as e:  # IngestError: the message says what to fix
            st.error(common.md(e))
            return
        st.session_state["eval_test_ds"] = name  # chosen below; never made the current dataset (common.dataset())
        common.flash(_("Imported test set '{name}'. The current dataset is unchanged.").format(name=name))
        st.rerun()


def _trained_on(run: runs.Run) -> str:
    """The name of the dataset folder a run trained on ('' when its config cannot be read)."""
    try:
        return Path(run.config().data).name
    except (OSError, ValueError, TypeError):
        return ""


@st.cache_data(show_spinner=False, max_entries=16)
def _overlap(run_dir: str, name: str, signature: str, owner: str | None) -> dict | str:
    """The content overlap of a test set with a run, or the reason it cannot test the run (a str)."""
    try:
        return services.test_set_overlap(run_dir, services.dataset_dir(name, owner), owner)
    except ValueError as e:
        return str(e)


def test_set(run: runs.Run, tta: str = "none") -> None:
    """Score the model on a held-out dataset: uploaded here, never the run's own, overlaps flagged and left out;
    with the page's test-time augmentation ``tta``."""
    st.caption(_("A test set the model never saw, not even for choosing the best epoch, gives the honest final "
                 "number. Its class folders must be named like the training classes; others are left out. "
                 "Images identical to ones this run trained or validated on are left out of the score."))
    common.show_flash()
    _upload_test_set()
    trained = _trained_on(run)
    have = sorted(common.datasets(), key=lambda n: n == trained)  # the run's own dataset last, never the default
    if not have:
        st.info(_("No dataset in the workspace yet: upload a test set above."))
        return
    name = st.selectbox(_("Test dataset"), have, index=None, key="eval_test_ds", placeholder=_("Choose a test set"),
                        format_func=lambda n: _("{name} (this run trained on it)").format(name=n) if n == trained
                        else n)
    if name is None:
        return
    with st.spinner(_("Comparing the test images with the run's images…")):
        found = _overlap(str(run.path), name, services.dataset_action("signature", name, owner=common.owner()),
                         common.owner())
    if isinstance(found, str):
        st.error(common.md(found))
        return
    if found["n_overlap"]:
        st.warning(_("{n} of the {total} images of {name} are copies of images this run trained or validated on "
                     "(same file contents). They are left out: the test accuracy counts only the {unseen} images "
                     "the run never saw. Examples: {examples}").format(
            n=found["n_overlap"], total=found["n_total"], name=common.md(name),
            unseen=found["n_total"] - found["n_overlap"],
            examples="; ".join(f"{common.md(Path(e['test']).name)} = {common.md(Path(e['seen']).name)}"
                               for e in found["examples"])))
    if st.button(_("Evaluate on this dataset"), key="eval_test_run"):
        try:
            with st.spinner(_("Predicting every image of the test set…")):
                st.session_state["_eval_test"] = (run.id, name, tta, services.evaluate_on(
                    run.path, services.dataset_dir(name, common.owner()), common.owner(), tta=tta))
        except ValueError as e:
            st.error(common.md(e))
            return
    shown = st.session_state.get("_eval_test")
    if shown and shown[:3] == (run.id, name, tta):  # another test-time augmentation: evaluated again on demand
        _test_report(shown[3])


def _test_report(rep: dict) -> None:
    """Accuracy, counts and the confusion matrix of a test-set evaluation."""
    a, b, c = st.columns(3)
    a.metric(_("Test accuracy"), i18n.format_percent(rep["accuracy"]),
             help=_("Over the images the run never saw: copies of its training or validation images are left out."))
    b.metric(_("Images evaluated"), rep["n_evaluated"])
    c.metric(_("Images left out (unknown class)"), rep["n_ignored"])
    if rep.get("tta"):
        st.caption(_("Scored with test-time augmentation ({mode}), as chosen at the top of the page.").format(
            mode={"flip": _("flip"), "multicrop": _("multi-crop")}.get(rep["tta_mode"], rep["tta_mode"])))
    if rep.get("n_overlap"):
        st.caption(_("Also left out: {n} copies of images the run trained or validated on.").format(
            n=rep["n_overlap"]))
    if rep["unknown_classes"]:
        st.warning(_("Classes the model does not know were left out: {classes}").format(
            classes=", ".join(f"{common.md(k)} ({v})" for k, v in rep["unknown_classes"].items())))
    if rep["missing_classes"]:
        st.info(_("No test images for: {classes}").format(
            classes=", ".join(common.md(c) for c in rep["missing_classes"])))
    fig = charts.confusion(rep["confusion"], rep["classes"])
    fig.update_xaxes(type="category").update_yaxes(type="category")
    st.plotly_chart(fig, key="eval_test_confusion", width="stretch")
