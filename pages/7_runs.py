"""7 · Runs: every run in the workspace; open one to evaluate or export it."""
from __future__ import annotations

import datetime as dt
import json

import streamlit as st

from core.app import charts, services
from core.app.engine import locks
from pages import common

common.entrypoint()
st.title("7 · Runs")
st.write("Every training run keeps its config, event log and checkpoints on disk, so it outlives the app. "
         "Open a run to make it the current one for Train, Evaluate and Export.")

rows = [r.summary() for r in common.user_runs()]
if not rows:
    st.info("No runs yet.")
    common.link("train", "Go to 4 · Train")
    st.stop()
for r in rows:
    r["started"] = dt.datetime.fromtimestamp(r["started"]).strftime("%Y-%m-%d %H:%M") if r["started"] else ""
    r["duration_s"] = round(r["duration_s"], 1) if r["duration_s"] is not None else None
st.dataframe(rows, key="runs_table", hide_index=True, width="stretch",
             column_config={"best_val_acc": st.column_config.NumberColumn("best val acc", format="percent"),
                            "problem": st.column_config.TextColumn("damaged")})
damaged = {r["id"]: r["problem"] for r in rows if r.get("problem")}
if damaged:
    st.warning(f"{len(damaged)} run(s) have damaged files (column 'damaged'): they can be deleted, not compared. "
               + " · ".join(f"{rid[:15]}: {common.md(why)}" for rid, why in list(damaged.items())[:5]))

ids = [r["id"] for r in rows]
current = st.session_state.get("job")
pick = st.selectbox("Run", ids, index=ids.index(current) if current in ids else 0, key="runs_pick",
                    format_func=common.run_label)
if st.button("Open this run", key="runs_open", type="primary"):
    common.set_job(pick)
    common.flash(f"Run {pick[:15]} is now the current run.")
    st.rerun()
with st.expander("Delete this run"):
    st.write("Deletes its checkpoints, event log and exports from disk. This cannot be undone.")
    # training = a live process holds the run's lock (any process, any server), or its job is still queued
    held = locks.holder(services.open_run(pick, common.owner()).path)
    job = common.job_manager().get(pick, common.owner())
    busy = held is not None or (job is not None and job.status() in common.ACTIVE)
    if busy:
        st.info("This run is training right now: stop it on the Train step first, then delete it.")
    sure = st.checkbox(f"Yes, delete run {pick[:15]} for good", key="runs_delete_confirm", disabled=busy)
    if st.button("Delete run", key="runs_delete", disabled=not sure or busy):
        active = {pick} if job is not None and job.status() in common.ACTIVE else set()
        try:
            services.delete_run(pick, common.owner(), active)
        except ValueError as e:
            st.error(common.md(e))
        else:
            if st.session_state.get("job") == pick:
                common.set_job(None)
            common.flash(f"Deleted run {pick[:15]}.")
            st.rerun()
common.show_flash()

st.subheader("Compare runs")
# the id's last characters keep two runs started in the same second apart in the chart's legend
labels = {r["id"]: f"{r['id'][:15]}…{r['id'][-4:]} {r['name'] or r['backbone']}" for r in rows}
intact = [i for i in ids if i not in damaged]
chosen = st.multiselect("Runs", intact, default=intact[:min(3, len(intact))], key="runs_compare",
                        format_func=labels.get)
metric = st.radio("Metric", ["val_acc", "val_loss", "train_acc", "train_loss"], key="runs_metric", horizontal=True)
if chosen:
    opened = {labels[i]: services.open_run(i, common.owner()) for i in chosen}
    events = {lbl: run.events() for lbl, run in opened.items()}
    st.plotly_chart(charts.compare_runs(events, metric), key="runs_compare_chart", width="stretch")
    configs = {lbl: run.config().to_dict() for lbl, run in opened.items()}
    differ = sorted(k for k in next(iter(configs.values())) if k not in ("data", "dataset", "name")
                    and len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1)
    if len(chosen) > 1:
        st.caption("Settings that differ between these runs:" if differ else "These runs share every setting.")
        if differ:
            st.dataframe({k: [str(configs[lbl][k]) for lbl in configs] for k in differ} | {"run": list(configs)},
                         key="runs_diff", hide_index=True, column_order=["run", *differ])

if current:
    st.caption(f"Current run: {common.md(current)}")
    common.link("evaluate", "Evaluate the current run")
    common.link("export", "Export the current run")
