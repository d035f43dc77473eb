"""Shared page helpers: state that survives navigation and reloads, the job registry, prerequisites.

Session state is the source of truth inside a tab; the dataset (``ds``), the current job / run
(``job``) and the draft id (``sid``) are mirrored into the URL so a reload finds them again.
Torch-free: only torch-free core modules are imported here.
"""
from __future__ import annotations

import json
import re
import time

import streamlit as st

from core.data import edits
from core.app import services
from core.storage import runs

PAGES = {
    "data": ("pages/1_data.py", "Data", ":material/folder_open:"),
    "backbone": ("pages/2_backbone.py", "Backbone", ":material/account_tree:"),
    "layers": ("pages/3_layers.py", "Layers", ":material/layers:"),
    "train": ("pages/4_train.py", "Train", ":material/model_training:"),
    "evaluate": ("pages/5_evaluate.py", "Evaluate", ":material/fact_check:"),
    "export": ("pages/6_export.py", "Export", ":material/download:"),
    "runs": ("pages/7_runs.py", "Runs", ":material/history:"),
    "distill": ("pages/8_distill.py", "Distill", ":material/compress:"),
    "multitask": ("pages/9_multitask.py", "Multi-task", ":material/call_split:"),
    "pretrain": ("pages/10_pretrain.py", "Pretrain", ":material/auto_awesome:"),
}
_URL_KEYS = ("ds", "job", "sid")
_RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{32}$")  # runs.new_id()
ACTIVE = ("queued", "running", "paused")


def entrypoint() -> None:
    """Make sure the app's st.navigation is in charge, even on a deep link to a fresh server.

    Streamlit runs a new server in its old "pages/ folder" mode until some session has executed
    st.navigation; a first request for /train would then run this page alone (no shared state, helper
    modules listed as pages). Switch the mode off and rerun through streamlit_app.py instead.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the old mode: nothing to correct
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        if "draft" not in st.session_state:  # a new tab: start over through the app's navigation
            st.rerun()
        init()  # Streamlit's AppTest re-enters the old mode on every run; keep the shared state in step


@st.cache_resource
def job_manager():
    """The process-wide job registry (one per server process, shared by every tab)."""
    return services.new_job_manager()


@st.cache_resource
def device() -> str:
    """The device 'auto' resolves to on this machine."""
    return services.device_label()


@st.cache_resource
def gpus() -> int:
    """CUDA devices on this machine (two or more offer a torchrun job)."""
    return services.gpu_count()


def owner() -> str | None:
    """The signed-in user's e-mail (or name) when st.login is configured, else None (single user)."""
    try:
        if st.user.is_logged_in:
            return st.user.get("email") or st.user.get("name")
    except Exception:  # auth not configured: the single-user default
        return None
    return None


def init() -> None:
    """Restore ds / job / sid from the URL after a reload, and keep the URL in step with the session."""
    ss, qp = st.session_state, st.query_params
    for key in _URL_KEYS:
        if key not in ss and qp.get(key):
            ss[key] = qp.get(key)
    if not services.valid_sid(ss.get("sid")):
        ss["sid"] = services.new_sid()
    if ss.get("draft_sid") != ss["sid"]:
        ss["draft"] = services.load(ss["sid"])
        ss["draft_sid"] = ss["sid"]
    for key in _URL_KEYS:
        # Page switches drop the query string; put our keys back so a reload still finds them.
        if ss.get(key) and qp.get(key) != ss[key]:
            qp[key] = ss[key]


def draft() -> dict:
    """The config draft of this tab."""
    return st.session_state["draft"]


def set_fields(**values) -> None:
    """Update draft fields and persist the draft when anything changed."""
    d = draft()
    changed = {k: v for k, v in values.items() if d.get(k) != v}
    if changed:
        d.update(changed)
        services.save(st.session_state["sid"], d)


def set_dataset(name: str | None) -> None:
    """Make ``name`` the current dataset (None clears it)."""
    if name:
        changed = st.session_state.get("ds") != name
        st.session_state["ds"] = name
        st.query_params["ds"] = name
        if changed:  # propose layer and augmentation defaults that suit this dataset's size
            try:
                rec = services.recommend(edits.class_counts(name))
            except ValueError:
                return
            set_fields(trainable=rec["trainable"], trainable_groups=None, augment=rec["augment"])
    else:
        st.session_state.pop("ds", None)
        st.query_params.pop("ds", None)


def set_job(job_id: str | None) -> None:
    """Make a job / run the current one (Train, Evaluate and Export show it)."""
    if job_id:
        st.session_state["job"] = job_id
        st.query_params["job"] = job_id
    else:
        st.session_state.pop("job", None)
        st.query_params.pop("job", None)


def dataset() -> str | None:
    """The current dataset name, if it still exists."""
    name = st.session_state.get("ds")
    return name if name and name in edits.list_datasets() else None


def link(step: str, label: str | None = None) -> None:
    """A link to one step of the flow."""
    path, title, icon = PAGES[step]
    st.page_link(path, label=label or f"Go to {title}", icon=icon)


def require_dataset() -> str:
    """The current dataset, or say it is missing, link to the Data step and stop."""
    name = dataset()
    if name is None:
        st.info("This step needs a dataset, and none is chosen yet. Pick a sample or upload images "
                "on the Data step first.")
        link("data", "Go to 1 · Data")
        st.stop()
    return name


def current_job():
    """The in-memory job of this tab's current run, or None (finished before a restart, say)."""
    job_id = st.session_state.get("job")
    return job_manager().get(job_id, owner()) if job_id else None


def _run_owner(run: runs.Run) -> str | None:
    try:
        return json.loads((run.path / "config.json").read_text()).get("extra", {}).get("owner")
    except (OSError, ValueError, AttributeError):
        return None


def visible(run: runs.Run) -> bool:
    """Whether this user may see a run: everyone in single-user mode, only its owner once signed in."""
    me = owner()
    return me is None or _run_owner(run) == me


def current_run() -> runs.Run | None:
    """The run directory of the current job, if it exists in the workspace and this user may see it."""
    job_id = st.session_state.get("job")
    # Only plain run ids from the URL: open_run would also accept a path to any folder on the machine.
    if not job_id or not _RUN_ID.match(str(job_id)):
        return None
    run = runs.Run(runs.root() / job_id)
    return run if (run.path / "config.json").exists() and visible(run) else None


def user_runs() -> list[runs.Run]:
    """Runs this user may see, newest first."""
    return [r for r in runs.list_runs() if visible(r)]


def finished_runs() -> list[str]:
    """Ids of runs that have a checkpoint to evaluate or export, newest first."""
    return [r.id for r in user_runs() if r.best_weights.exists()]


def technique_of(run: runs.Run) -> str | None:
    """The technique a run used (config.extra['technique']), None for plain training."""
    try:
        return run.config().extra.get("technique")
    except (OSError, ValueError, TypeError):
        return None


# Runs whose checkpoint is not one classifier: they are evaluated and exported on their own pages.
OWN_PAGE = {"multitask": ("multitask", "Go to 9 · Multi-task"), "simclr": ("pretrain", "Go to 10 · Pretrain")}


def require_run(step: str) -> runs.Run:
    """A classifier run with a checkpoint chosen on this page (default: the current one), or stop with a link."""
    kinds = {i: technique_of(runs.open_run(i)) for i in finished_runs()}
    ids = [i for i, kind in kinds.items() if kind not in OWN_PAGE]
    current = st.session_state.get("job")
    if kinds.get(current) in OWN_PAGE:
        step_, label = OWN_PAGE[kinds[current]]
        st.info(f"The current run ({kinds[current]}) is not one classifier: its results and downloads are on "
                f"its own page. Below: the classifier runs.")
        link(step_, label)
    if not ids:
        st.info("This step needs a trained model, and no run has a checkpoint yet. Train one first.")
        link("train", "Go to 4 · Train")
        st.stop()
    choice = st.selectbox("Run", ids, index=ids.index(current) if current in ids else 0, key=f"{step}_run",
                          format_func=run_label)
    return runs.open_run(choice)


def run_label(run_id: str) -> str:
    """A short human label for a run id."""
    s = runs.Run(runs.root() / run_id).summary()
    acc = f", val acc {s['best_val_acc']:.1%}" if s.get("best_val_acc") is not None else ""
    return f"{run_id[:15]} · {s.get('backbone')} · {s['status']}{acc}"


def progress_bar():
    """A progress bar and the ``progress(stage, done, total)`` callback that fills it, with rate and ETA."""
    bar = st.progress(0.0, text="starting…")
    t0 = time.time()

    def update(stage: str, done: int, total: int) -> None:
        elapsed = max(time.time() - t0, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0
        bar.progress(min(done / max(total, 1), 1.0),
                     text=f"{stage}: {done:,} / {total:,} · {rate:,.0f}/s · about {eta:.0f} s left")
    return update


def flash(message: str, kind: str = "success") -> None:
    """Keep a message for the next run (actions that change data rerun the page right after)."""
    st.session_state["_flash"] = (kind, message)


def show_flash() -> None:
    """Show and forget the message kept by flash()."""
    kind, message = st.session_state.pop("_flash", (None, None))
    if message:
        getattr(st, kind)(message)
