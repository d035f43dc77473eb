"""Quick start: drop a dataset, press Train, watch the loss, try a photo, download the model — on one screen.

A quick run is an ordinary run (same job, same run folder): it is listed on Runs and opens in the guided steps.
"""
from __future__ import annotations

import streamlit as st

from core.app import charts
from core.app import services
from core.app.engine import downloads, edits as de, i18n
from pages import common, data_tools, eval_tools

_ = i18n.gettext

common.entrypoint()
st.title(_("Quick start"))
st.write(_("Drop a `.zip` or a folder with one sub-folder per class (`cats/`, `dogs/`), press **Train**, try the "
           "model on a photo and download it. Settings are chosen from your data; for control over every one of "
           "them use the guided steps (1 · Data to 7 · Runs), where every quick run opens like any other."))
common.show_flash()


def _imported(name: str, note: str) -> None:
    common.set_dataset(name)
    common.set_job(None)  # a new dataset starts a new model
    common.flash(note)
    st.rerun()


# --- 1. data: the Data step's upload calls and health messages -------------------------------------
st.subheader(_("1. Your images"))
tab_zip, tab_folder, tab_sample = st.tabs([_("Upload .zip"), _("Upload folder"), _("Try a sample")], key="quick_tab",
                                          on_change="rerun")
with tab_zip:
    up = st.file_uploader(_("Dataset .zip"), type=["zip"], key="quick_zip")
    if up is not None and st.session_state.get("_quick_zip_done") != up.file_id:
        st.session_state["_quick_zip_done"] = up.file_id  # one import per upload, not one per rerun
        try:
            name, skipped = data_tools.import_zip(up)
            _imported(name, i18n.ngettext("Imported {file}; {n} file left out.", "Imported {file}; {n} files left out.",
                                          len(skipped)).format(file=up.name, n=len(skipped))
                      if skipped else _("Imported {file}.").format(file=up.name))
        except ValueError as e:  # IngestError: the message says what to fix
            st.error(common.md(e))
with tab_folder:
    files = st.file_uploader(_("Dataset folder"), accept_multiple_files="directory", key="quick_folder")
    if files and st.button(_("Import this folder"), key="quick_import_folder"):
        try:
            name = data_tools.import_folder(files)
            _imported(name, i18n.ngettext("Imported {n} file.", "Imported {n} files.", len(files)).format(n=len(files)))
        except ValueError as e:
            st.error(common.md(e))
with tab_sample:
    if st.button(_("Use the shapes sample (circles, squares, triangles)"), key="quick_sample"):
        _imported(de.import_sample("shapes", owner=common.owner()), _("Using the shapes sample."))

ds = common.dataset()
if ds is None:
    st.info(_("No images yet: upload a .zip or a folder above, or try the sample."))
    st.stop()
if common.is_text():  # Quick start trains photos; a text table goes through the guided steps
    st.info(_("{name} is a text dataset. Quick start is for photos: train it on the guided steps, which read "
              "text as well (the text health report on 1 · Data, then the sentence encoder, layers and "
              "training).").format(name=f"**{common.md(ds)}**"))
    common.link("data", _("Open 1 · Data"))
    st.stop()
try:
    index, health = data_tools.scan_and_check(ds)
except ValueError as e:
    st.error(_("This dataset cannot be used as it is: {problem}").format(problem=common.md(e)))
    common.link("data", _("Fix it on 1 · Data"))
    st.stop()
counts = index.counts()
st.write(_("{name}: {images} in {classes} ({counts}).").format(
    name=f"**{common.md(ds)}**",
    images=i18n.ngettext("{n} image", "{n} images", len(index.items)).format(n=f"{len(index.items):,}"),
    classes=i18n.ngettext("{n} class", "{n} classes", len(counts)).format(n=len(counts)),
    counts=", ".join(f"{common.md(c)} {n}" for c, n in counts.items())))
for w in health["warnings"]:
    st.warning(common.md(w))


# --- 2. train: the presets issue's "quick" recipe, fitted to this dataset and this machine --------------
@st.cache_data(show_spinner=_("Choosing settings for your data…"), max_entries=8)
def _plan(ds: str, signature: str) -> dict:
    """{fields, reasons, ...}: RunConfig fields and one reason each (core.train.presets.plan)."""
    return services.preset_plan(services.dataset_dir(ds, common.owner()), "quick", owner=common.owner())


st.subheader(_("2. Train"))
signature = services.dataset_action("signature", ds, owner=common.owner())
try:
    plan = _plan(ds, signature)
except ValueError as e:  # e.g. a class too small to split: the message says what to add
    st.error(common.md(e))
    st.stop()
fields = plan["fields"]
layers = services.layer_label(fields.get("trainable", "head"), fields.get("trainable_groups"))
n_epochs = int(fields.get("epochs", common.draft()["epochs"]))
st.caption(_("Settings: backbone {backbone} · image size {size} · learns: {layers} · {epochs} at most").format(
    backbone=f"**{common.md(fields.get('backbone', common.draft()['backbone']))}**",
    size=f"**{fields.get('image_size') or 224} px**", layers=f"**{common.md(layers)}**",
    epochs=i18n.ngettext("{n} epoch", "{n} epochs", n_epochs).format(n=f"**{n_epochs}**")))
with st.expander(_("Why these settings")):
    st.markdown("\n".join(f"- **{common.md(k)}** = {common.md(fields.get(k))}: {common.md(why)}"
                          for k, why in plan["reasons"].items()))
job, run = common.current_job(), common.current_run()
active = job is not None and job.status() in common.ACTIVE
if st.button(_("Train"), key="quick_train", type="primary", disabled=active):
    # The guided steps show (and can change) the visible settings this run used; the plan's other fields
    # (time budget, probe) go into this run's config only, not into later guided runs.
    common.set_fields(**{k: v for k, v in fields.items() if k in services.defaults()})
    try:
        config = services.to_config(common.draft(), services.dataset_dir(ds, common.owner()), owner=common.owner(),
                                    **fields)
        common.set_job(services.start_job(common.job_manager(), config, owner=common.owner()).id)
    except ValueError as e:
        st.error(common.md(e))
        st.stop()
    st.rerun()


@st.fragment(run_every=1.0 if active else None)
def live() -> None:
    """One progress bar and the loss chart, redrawn every second while the job runs."""
    job, run = common.current_job(), common.current_run()
    if run is None:
        return
    status = job.status() if job is not None else run.status()
    if active and status not in common.ACTIVE:
        st.rerun()  # the job just ended: show the try-it and download parts
    events = run.events()
    steps = [e for e in events if e.get("type") == "step"]
    epochs = [e for e in events if e.get("type") == "epoch"]
    if steps:
        s = steps[-1]
        acc = _(" · validation accuracy {acc}").format(acc=i18n.format_percent(epochs[-1]["val_acc"])) if epochs else ""
        st.progress(min(s["step"] / max(s["total_steps"], 1), 1.0),
                    text=_("{status} · step {step} / {steps} · epoch {epoch}").format(
                        status=common.status_text(status), step=s["step"], steps=s["total_steps"], epoch=s["epoch"]) + acc)
        st.plotly_chart(charts.step_loss(events), key="quick_chart_loss", width="stretch")
    elif status in common.ACTIVE:
        st.caption(_("Starting: loading the engine, reading and embedding the images…"))
    if status == "failed":
        end = next((e for e in reversed(events) if e.get("type") == "end"), {})
        st.error(_("Training failed: {error}").format(
            error=common.md((job.error if job is not None else None) or end.get("message"))))


live()
if run is None or active or not run.best_weights.exists():
    st.stop()

# --- 3. try it, 4. download: the Evaluate step's predictions and the Export step's download route ----
st.subheader(_("3. Try it on a photo"))
eval_tools.try_it(run, (run.result() or {}).get("classes") or list(counts))
st.subheader(_("4. Download"))
try:
    token = downloads.issue(run.best_weights, f"{run.config().backbone}-{run.id[:15]}.safetensors", common.owner())
    st.link_button(_("Download the model (.safetensors)"), downloads.url(token, st.get_option("server.baseUrlPath") or ""),
                   key="quick_download", type="primary", icon=":material/download:")
except ValueError as e:
    st.error(common.md(e))
st.caption(_("The file carries its classes and preprocessing; the Export step shows how to load it and offers "
             "other formats."))
c1, c2, c3 = st.columns(3)
with c1:
    common.link("evaluate", _("Look closer: 5 · Evaluate"))
with c2:
    common.link("export", _("More formats: 6 · Export"))
with c3:
    common.link("train", _("Change settings: 4 · Train"))
