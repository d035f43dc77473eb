"""7 · Runs: every run in the workspace; open one to evaluate or export it."""
from __future__ import annotations

import datetime as dt
import json

import streamlit as st

from core.app import charts, services
from core.app.engine import i18n, locks
from pages import common, text_results

_ = i18n.gettext

common.entrypoint()
st.title(_("7 · Runs"))
st.write(_("Every training run keeps its config, event log and checkpoints on disk, so it outlives the app. "
           "Open a run to make it the current one for Train, Evaluate and Export."))

rows = [r.summary() for r in common.user_runs()]
if not rows:
    st.info(_("No runs yet."))
    common.link("train", _("Go to 4 · Train"))
    st.stop()
for r in rows:
    r["started"] = dt.datetime.fromtimestamp(r["started"]).strftime("%Y-%m-%d %H:%M") if r["started"] else ""
    r["duration_s"] = round(r["duration_s"], 1) if r["duration_s"] is not None else None
shown = [{**r, "status": common.status_text(r["status"])} for r in rows]  # the stored status, in words of the session
st.dataframe(shown, key="runs_table", hide_index=True, width="stretch",
             column_config={"id": st.column_config.TextColumn(_("id")),
                            "status": st.column_config.TextColumn(_("status")),
                            "backbone": st.column_config.TextColumn(_("backbone")),
                            "trainable": st.column_config.TextColumn(_("trainable")),
                            "epochs_done": st.column_config.NumberColumn(_("epochs done")),
                            "best_val_acc": st.column_config.NumberColumn(_("best val acc"), format="percent"),
                            "duration_s": st.column_config.NumberColumn(_("duration (s)")),
                            "started": st.column_config.TextColumn(_("started")),
                            "name": st.column_config.TextColumn(_("name")),
                            "problem": st.column_config.TextColumn(_("damaged"))})
damaged = {r["id"]: r["problem"] for r in rows if r.get("problem")}
if damaged:
    st.warning(i18n.ngettext("{n} run has damaged files (column '{column}'): it can be deleted, not compared. {runs}",
                             "{n} runs have damaged files (column '{column}'): they can be deleted, not compared. "
                             "{runs}", len(damaged)).format(
        n=len(damaged), column=_("damaged"),
        runs=" · ".join(f"{rid[:15]}: {common.md(why)}" for rid, why in list(damaged.items())[:5])))

ids = [r["id"] for r in rows]
current = st.session_state.get("job")
pick = st.selectbox(_("Run"), ids, index=ids.index(current) if current in ids else 0, key="runs_pick",
                    format_func=common.run_label)
if st.button(_("Open this run"), key="runs_open", type="primary"):
    common.set_job(pick)
    common.flash(_("Run {run} is now the current run.").format(run=pick[:15]))
    st.rerun()
text_results.try_run(services.open_run(pick, common.owner()))  # issue 17: a text run classifies typed texts
with st.expander(_("Delete this run")):
    st.write(_("Deletes its checkpoints, event log and exports from disk. This cannot be undone."))
    # training = a live process holds the run's lock (any process, any server), or its job is still queued
    held = locks.holder(services.open_run(pick, common.owner()).path)
    job = common.job_manager().get(pick, common.owner())
    busy = held is not None or (job is not None and job.status() in common.ACTIVE)
    if busy:
        st.info(_("This run is training right now: stop it on the Train step first, then delete it."))
    sure = st.checkbox(_("Yes, delete run {run} for good").format(run=pick[:15]), key="runs_delete_confirm",
                       disabled=busy)
    if st.button(_("Delete run"), key="runs_delete", disabled=not sure or busy):
        active = {pick} if job is not None and job.status() in common.ACTIVE else set()
        try:
            services.delete_run(pick, common.owner(), active)
        except ValueError as e:
            st.error(common.md(e))
        else:
            if st.session_state.get("job") == pick:
                common.set_job(None)
            common.flash(_("Deleted run {run}.").format(run=pick[:15]))
            st.rerun()
common.show_flash()

st.subheader(_("Compare runs"))
# the id's last characters keep two runs started in the same second apart in the chart's legend
labels = {r["id"]: f"{r['id'][:15]}…{r['id'][-4:]} {r['name'] or r['backbone']}" for r in rows}
intact = [i for i in ids if i not in damaged]
chosen = st.multiselect(_("Runs"), intact, default=intact[:min(3, len(intact))], key="runs_compare",
                        format_func=labels.get)
metric = st.radio(_("Metric"), ["val_acc", "val_loss", "train_acc", "train_loss"], key="runs_metric", horizontal=True)
if chosen:
    opened = {labels[i]: services.open_run(i, common.owner()) for i in chosen}
    events = {lbl: run.events() for lbl, run in opened.items()}
    st.plotly_chart(charts.compare_runs(events, metric), key="runs_compare_chart", width="stretch")
    configs = {lbl: run.config().to_dict() for lbl, run in opened.items()}
    differ = sorted(k for k in next(iter(configs.values())) if k not in ("data", "dataset", "name")
                    and len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1)
    if len(chosen) > 1:
        st.caption(_("Settings that differ between these runs:") if differ else _("These runs share every setting."))
        if differ:
            st.dataframe({k: [str(configs[lbl][k]) for lbl in configs] for k in differ} | {"run": list(configs)},
                         key="runs_diff", hide_index=True, column_order=["run", *differ],
                         column_config={"run": st.column_config.TextColumn(_("run"))})

if current:
    st.caption(_("Current run: {run}").format(run=common.md(current)))
    common.link("evaluate", _("Evaluate the current run"))
    common.link("export", _("Export the current run"))
