"""7 · Runs: every run in the workspace; open one to evaluate or export it."""
from __future__ import annotations

import datetime as dt

import streamlit as st

from core import runs
from pages import common

st.title("7 · Runs")
st.write("Every training run keeps its config, event log and checkpoints on disk, so it outlives the app. "
         "Open a run to make it the current one for Train, Evaluate and Export.")

rows = [r.summary() for r in runs.list_runs()]
if not rows:
    st.info("No runs yet.")
    common.link("train", "Go to 4 · Train")
    st.stop()
for r in rows:
    r["started"] = dt.datetime.fromtimestamp(r["started"]).strftime("%Y-%m-%d %H:%M") if r["started"] else ""
    r["duration_s"] = round(r["duration_s"], 1) if r["duration_s"] is not None else None
st.dataframe(rows, key="runs_table", hide_index=True, width="stretch",
             column_config={"best_val_acc": st.column_config.NumberColumn("best val acc", format="percent")})

ids = [r["id"] for r in rows]
current = st.session_state.get("job")
pick = st.selectbox("Run", ids, index=ids.index(current) if current in ids else 0, key="runs_pick",
                    format_func=common.run_label)
if st.button("Open this run", key="runs_open", type="primary"):
    common.set_job(pick)
    common.flash(f"Run {pick[:15]} is now the current run.")
    st.rerun()
common.show_flash()
if current:
    st.caption(f"Current run: {current}")
    common.link("evaluate", "Evaluate the current run")
    common.link("export", "Export the current run")
