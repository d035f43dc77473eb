"""Helpers shared by the technique pages (Distill, Multi-task, Pretrain): the run of a technique and its live view."""
from __future__ import annotations

import streamlit as st

from core.app import services
from core.app.engine import events as run_events
from core.app.engine import i18n
from pages import common

_ = i18n.gettext


def current(technique: str):
    """(run, job, active) for this tab's current run when it used ``technique``, else (None, None, False)."""
    run = common.current_run()
    if run is None or common.technique_of(run) != technique:
        return None, None, False
    job = common.current_job()
    return run, job, job is not None and job.status() in common.ACTIVE


def start(make_config, key: str) -> None:
    """Start ``make_config()`` as a job of this user, make it the current run, and redraw the page."""
    try:  # building the config checks that its data and backbone are this user's
        job = services.start_job(common.job_manager(), make_config(), owner=common.owner())
    except ValueError as e:
        st.error(_("Could not start: {error}").format(error=common.md(e)))
        return
    common.set_job(job.id)
    st.session_state.pop(f"{key}_result", None)
    st.rerun()


def live(technique: str, key: str, draw) -> None:
    """Status, progress and ``draw(run, events, status)`` for the current run of ``technique``; polls while active."""
    active = current(technique)[2]

    @st.fragment(run_every=1.0 if active else None)
    def body() -> None:
        run, job = current(technique)[:2]
        if run is None:
            st.caption(_("No run of this kind yet: choose the settings above and press Start."))
            return
        status = job.status() if job is not None else run.status()
        if active and status not in common.ACTIVE:
            st.rerun()  # it just ended: redraw the whole page (buttons, results) and stop polling
        events = run.events()
        st.subheader(_("Run {run} — {status}").format(run=run.id[:15], status=common.status_text(status)))
        steps = [e for e in events if e.get("type") == "step"]
        if steps and status in common.ACTIVE:
            s = steps[-1]
            st.progress(min(s["step"] / max(s["total_steps"], 1), 1.0),
                        text=_("step {step} / {total} · epoch {epoch}").format(step=s["step"], total=s["total_steps"],
                                                                               epoch=s["epoch"]))
            if job is not None and st.button(_("Stop"), key=f"{key}_stop"):
                job.stop()
        if status == "failed":
            end = next((e for e in reversed(events) if e.get("type") == "end"), {})
            st.error(_("The run failed: {error}").format(
                error=common.md((job.error if job is not None else None) or run_events.text(end))))
        draw(run, events, status)

    body()


def keep_upload(up, prefix: str) -> str:
    """Write an uploaded file once into an upload folder of this user, named by owner and content (the same
    upload on every rerun is written once); its path, the file's suffix kept (readers go by it)."""
    import hashlib
    from pathlib import Path

    from core.app.engine import owners, runs, workspace

    payload = up.getvalue()
    digest = hashlib.sha256(f"{common.owner()}\n".encode() + payload).hexdigest()[:16]
    folder = workspace.sub("uploads") / f"{prefix}-{digest}"
    target = folder / f"upload{Path(up.name).suffix.lower()}"
    if not target.exists():
        folder.mkdir(exist_ok=True)
        owners.record(folder, common.owner())
        runs.atomic_write_bytes(target, payload)
    return str(target)
