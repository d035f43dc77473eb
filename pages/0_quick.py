"""Quick start: drop a dataset, press Train, watch the loss, try a photo, download the model — on one screen.

A quick run is an ordinary run (same job, same run folder): it is listed on Runs and opens in the guided steps.
"""
from __future__ import annotations

import streamlit as st

from core.app import charts
from core.app import services
from core.app.engine import downloads, edits as de
from pages import common, data_tools, eval_tools

common.entrypoint()
st.title("Quick start")
st.write("Drop a `.zip` or a folder with one sub-folder per class (`cats/`, `dogs/`), press **Train**, try the "
         "model on a photo and download it. Settings are chosen from your data; for control over every one of "
         "them use the guided steps (1 · Data to 7 · Runs), where every quick run opens like any other.")
common.show_flash()


def _imported(name: str, note: str) -> None:
    common.set_dataset(name)
    common.set_job(None)  # a new dataset starts a new model
    common.flash(note)
    st.rerun()


# --- 1. data: the Data step's upload calls and health messages -------------------------------------
st.subheader("1. Your images")
tab_zip, tab_folder, tab_sample = st.tabs(["Upload .zip", "Upload folder", "Try a sample"], key="quick_tab",
                                          on_change="rerun")
with tab_zip:
    up = st.file_uploader("Dataset .zip", type=["zip"], key="quick_zip")
    if up is not None and st.session_state.get("_quick_zip_done") != up.file_id:
        st.session_state["_quick_zip_done"] = up.file_id  # one import per upload, not one per rerun
        try:
            name, skipped = data_tools.import_zip(up)
            _imported(name, f"Imported {up.name}" + (f"; {len(skipped)} file(s) left out." if skipped else "."))
        except ValueError as e:  # IngestError: the message says what to fix
            st.error(common.md(e))
with tab_folder:
    files = st.file_uploader("Dataset folder", accept_multiple_files="directory", key="quick_folder")
    if files and st.button("Import this folder", key="quick_import_folder"):
        try:
            name = data_tools.import_folder(files)
            _imported(name, f"Imported {len(files)} files.")
        except ValueError as e:
            st.error(common.md(e))
with tab_sample:
    if st.button("Use the shapes sample (circles, squares, triangles)", key="quick_sample"):
        _imported(de.import_sample("shapes", owner=common.owner()), "Using the shapes sample.")

ds = common.dataset()
if ds is None:
    st.info("No images yet: upload a .zip or a folder above, or try the sample.")
    st.stop()
try:
    index, health = data_tools.scan_and_check(ds)
except ValueError as e:
    st.error(f"This dataset cannot be used as it is: {common.md(e)}")
    common.link("data", "Fix it on 1 · Data")
    st.stop()
counts = index.counts()
st.write(f"**{common.md(ds)}**: {len(index.items):,} images in {len(counts)} classes "
         f"({', '.join(f'{common.md(c)} {n}' for c, n in counts.items())}).")
for w in health["warnings"]:
    st.warning(common.md(w))


# --- 2. train: the presets issue's "quick" recipe, fitted to this dataset and this machine --------------
@st.cache_data(show_spinner="Choosing settings for your data…", max_entries=8)
def _plan(ds: str, signature: str) -> dict:
    """{fields, reasons, ...}: RunConfig fields and one reason each (core.train.presets.plan)."""
    return services.preset_plan(services.dataset_dir(ds, common.owner()), "quick", owner=common.owner())


st.subheader("2. Train")
signature = services.dataset_action("signature", ds, owner=common.owner())
try:
    plan = _plan(ds, signature)
except ValueError as e:  # e.g. a class too small to split: the message says what to add
    st.error(common.md(e))
    st.stop()
fields = plan["fields"]
layers = services.layer_label(fields.get("trainable", "head"), fields.get("trainable_groups"))
st.caption(f"Settings: backbone **{common.md(fields.get('backbone', common.draft()['backbone']))}** · image size "
           f"**{fields.get('image_size') or 224} px** · learns: **{layers}** · "
           f"**{fields.get('epochs', common.draft()['epochs'])}** epochs at most")
with st.expander("Why these settings"):
    st.markdown("\n".join(f"- **{common.md(k)}** = {common.md(fields.get(k))}: {common.md(why)}"
                          for k, why in plan["reasons"].items()))
job, run = common.current_job(), common.current_run()
active = job is not None and job.status() in common.ACTIVE
if st.button("Train", key="quick_train", type="primary", disabled=active):
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
        acc = f" · validation accuracy {epochs[-1]['val_acc']:.1%}" if epochs else ""
        st.progress(min(s["step"] / max(s["total_steps"], 1), 1.0),
                    text=f"{status} · step {s['step']} / {s['total_steps']} · epoch {s['epoch']}{acc}")
        st.plotly_chart(charts.step_loss(events), key="quick_chart_loss", width="stretch")
    elif status in common.ACTIVE:
        st.caption("Starting: loading the engine, reading and embedding the images…")
    if status == "failed":
        end = next((e for e in reversed(events) if e.get("type") == "end"), {})
        st.error(f"Training failed: {common.md((job.error if job is not None else None) or end.get('message'))}")


live()
if run is None or active or not run.best_weights.exists():
    st.stop()

# --- 3. try it, 4. download: the Evaluate step's predictions and the Export step's download route ----
st.subheader("3. Try it on a photo")
eval_tools.try_it(run, (run.result() or {}).get("classes") or list(counts))
st.subheader("4. Download")
try:
    token = downloads.issue(run.best_weights, f"{run.config().backbone}-{run.id[:15]}.safetensors", common.owner())
    st.link_button("Download the model (.safetensors)", downloads.url(token, st.get_option("server.baseUrlPath") or ""),
                   key="quick_download", type="primary", icon=":material/download:")
except ValueError as e:
    st.error(common.md(e))
st.caption("The file carries its classes and preprocessing; the Export step shows how to load it and offers other "
           "formats.")
c1, c2, c3 = st.columns(3)
with c1:
    common.link("evaluate", "Look closer: 5 · Evaluate")
with c2:
    common.link("export", "More formats: 6 · Export")
with c3:
    common.link("train", "Change settings: 4 · Train")
