"""Shared page helpers: state that survives navigation and reloads, the job registry, prerequisites.

Session state is the source of truth inside a tab; the dataset (``ds``), the current job / run
(``job``) and the draft id (``sid``) are mirrored into the URL so a reload finds them again.
Sign-in and the owner of everything listed here: pages/signin.py (``owner()``, re-exported). User data
(class labels, dataset and run names, messages that quote them) goes through ``md()`` (pages/markup.py)
before it reaches anything that renders Markdown. Torch-free: only torch-free core modules are imported.
"""
from __future__ import annotations

import re
import time

import streamlit as st

from core.app import services, text_services
from core.app.engine import i18n, runs
from pages.markup import md
from pages.signin import gate, owner, user_box  # owner() is every page's common.owner()

_, N_ = i18n.gettext, i18n.N_  # N_ marks the tables below; their values are translated where shown

PAGES = {
    "quick": ("pages/0_quick.py", N_("Quick start"), ":material/bolt:"),  # beside the numbered steps (issue 16)
    "data": ("pages/1_data.py", N_("Data"), ":material/folder_open:"),
    "backbone": ("pages/2_backbone.py", N_("Backbone"), ":material/account_tree:"),
    "layers": ("pages/3_layers.py", N_("Layers"), ":material/layers:"),
    "train": ("pages/4_train.py", N_("Train"), ":material/model_training:"),
    "evaluate": ("pages/5_evaluate.py", N_("Evaluate"), ":material/fact_check:"),
    "export": ("pages/6_export.py", N_("Export"), ":material/download:"),
    "runs": ("pages/7_runs.py", N_("Runs"), ":material/history:"),
    "distill": ("pages/8_distill.py", N_("Distill"), ":material/compress:"),
    "multitask": ("pages/9_multitask.py", N_("Multi-task"), ":material/call_split:"),
    "pretrain": ("pages/10_pretrain.py", N_("Pretrain"), ":material/auto_awesome:"),
    "review": ("pages/11_review.py", N_("Review labels"), ":material/rule:"),
}
_URL_KEYS = ("ds", "job", "sid")
_RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{32}$")  # runs.new_id()
ACTIVE = ("queued", "running", "paused")
# A job's / run's status as shown (stored and compared in English: Job.status(), Run.status())
STATUS = {"created": N_("created"), "queued": N_("queued"), "running": N_("running"), "paused": N_("paused"),
          "finished": N_("finished"), "failed": N_("failed"), "stopped": N_("stopped"),
          "interrupted": N_("interrupted")}


def entrypoint() -> None:
    """Sign-in first; then make sure the app's st.navigation is in charge, even on a deep link to a fresh server;
    then the signed-in user's box in the sidebar.

    Streamlit runs a new server in its old "pages/ folder" mode until some session has executed
    st.navigation; a first request for /train would then run this page alone (no shared state, helper
    modules listed as pages). Switch the mode off and rerun through streamlit_app.py instead.
    """
    gate()  # every page, whichever way it was reached
    _one_navigation()
    with st.sidebar:  # drawn by the page, not streamlit_app.py, so that it is there however the page was reached
        user_box()


def _one_navigation() -> None:
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


def init() -> None:
    """Restore ds / job / sid from the URL after a reload, and keep the URL in step with the session."""
    ss, qp = st.session_state, st.query_params
    for key in _URL_KEYS:
        if key not in ss and qp.get(key):
            ss[key] = qp.get(key)
    me = owner()
    # a draft id from a link someone shared is theirs: this user starts a draft of their own
    if not services.valid_sid(ss.get("sid")) or not services.owns_draft(ss["sid"], me):
        ss["sid"] = services.new_sid()
    if ss.get("draft_sid") != ss["sid"]:
        ss["draft"] = services.load(ss["sid"], me)
        ss["draft_sid"] = ss["sid"]
    if ss.get("job") and current_run() is None and current_job() is None:
        # a deep link to a run that is gone, or is not this user's: the same answer for both
        ss["_not_found"] = _("Run {run} was not found in your workspace; pick one on the Runs page.").format(
            run=str(ss["job"])[:64])
        ss.pop("job", None)
        qp.pop("job", None)
    if ss.get("ds") and dataset() is None:
        ss.pop("ds", None)
        qp.pop("ds", None)
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
        services.save(st.session_state["sid"], d, owner())


def set_dataset(name: str | None) -> None:
    """Make ``name`` the current dataset (None clears it)."""
    if name:
        changed = st.session_state.get("ds") != name
        st.session_state["ds"] = name
        st.query_params["ds"] = name
        if changed and is_text(name):  # a text dataset starts from the text recipe (pages/text_steps.py)
            set_fields(**text_services.text_fields())
            return
        if changed:  # propose layer and augmentation defaults that suit this dataset's size
            set_fields(**text_services.image_fields(draft()))  # after a text dataset: image choices again
            try:
                rec = services.recommend(services.dataset_action("class_counts", name, owner=owner()))
            except ValueError:
                return
            set_fields(trainable=rec["trainable"], trainable_groups=None, augment=rec["augment"])
    else:
        st.session_state.pop("ds", None)
        st.query_params.pop("ds", None)


def is_text(name: str | None = None) -> bool:
    """Whether ``name`` (default: the current dataset) is a text dataset; the steps then show pages/text_steps.py."""
    return text_services.is_text_dataset(name or dataset(), owner())


def set_job(job_id: str | None) -> None:
    """Make a job / run the current one (Train, Evaluate and Export show it)."""
    if job_id:
        st.session_state["job"] = job_id
        st.query_params["job"] = job_id
    else:
        st.session_state.pop("job", None)
        st.query_params.pop("job", None)


def datasets() -> list[str]:
    """The datasets this user may see (all of them in single-user mode)."""
    return services.my_datasets(owner())


def dataset() -> str | None:
    """The current dataset name, if it still exists and belongs to this user."""
    name = st.session_state.get("ds")
    return name if name and name in datasets() else None


def link(step: str, label: str | None = None) -> None:
    """A link to one step of the flow."""
    path, title, icon = PAGES[step]
    st.page_link(path, label=label or _("Go to {title}").format(title=_(title)), icon=icon)


def status_text(status: str | None) -> str:
    """A job's or run's status in the session's language (an unknown one as it is)."""
    return _(STATUS[status]) if status in STATUS else str(status)


def require_dataset() -> str:
    """The current dataset, or say it is missing, link to the Data step and stop."""
    name = dataset()
    if name is None:
        st.info(_("This step needs a dataset, and none is chosen yet. Pick a sample or upload images "
                  "on the Data step first."))
        link("data", _("Go to 1 · Data"))
        st.stop()
    return name


def current_job():
    """The in-memory job of this tab's current run, or None (finished before a restart, say)."""
    job_id = st.session_state.get("job")
    return job_manager().get(job_id, owner()) if job_id else None


def current_run() -> runs.Run | None:
    """The run directory of the current job, if it exists in the workspace and this user may see it."""
    job_id = st.session_state.get("job")
    # Only plain run ids from the URL: open_run would also accept a path to any folder on the machine.
    if not job_id or not _RUN_ID.match(str(job_id)):
        return None
    try:
        return services.open_run(job_id, owner())
    except ValueError:
        return None


def user_runs() -> list[runs.Run]:
    """Runs this user may see, newest first."""
    return services.my_runs(owner())


def finished_runs() -> list[str]:
    """Ids of this user's intact runs that have a checkpoint to evaluate or export, newest first."""
    return [r.id for r in user_runs() if r.best_weights.exists() and not r.problem()]


def resumable(run: runs.Run | None, job=None) -> bool:
    """Whether Resume can continue ``run``: no job of this server is alive on it, no process anywhere holds
    its lock, and either its last.pt is intact or it died before writing one (it then starts over)."""
    if run is None or (job is not None and job.alive):
        return False
    status = run.status()  # 'running' whenever a process holds the run's lock
    if status in ACTIVE or status in ("finished", "running"):
        return False
    return run.resumable() or (not run.last_ckpt.exists() and status in ("interrupted", "created"))


def damaged_runs() -> dict[str, str]:
    """This user's damaged runs: id -> what is damaged (Run.problem)."""
    return {r.id: problem for r in user_runs() if (problem := r.problem())}


def show_damaged(current: str | None = None) -> None:
    """Say which runs are damaged and why (they are left out of the choices); the others keep working."""
    bad = damaged_runs()
    if current in bad:
        st.error(_("Run {run} is damaged and cannot be used: {problem}. Delete it on the Runs page, or restore "
                   "its files.").format(run=current[:15], problem=md(bad[current])))
    others = {k: v for k, v in bad.items() if k != current}
    if others:
        with st.expander(i18n.ngettext("{n} damaged run left out", "{n} damaged runs left out",
                                       len(others)).format(n=len(others))):
            for rid, why in others.items():
                st.caption(f"{rid[:15]}: {md(why)}")


def technique_of(run: runs.Run) -> str | None:
    """The technique a run used (RunConfig.technique), None for plain classifier training."""
    try:
        technique = run.config().technique
        return None if technique == "classifier" else technique
    except (OSError, ValueError, TypeError):
        return None


# Runs whose checkpoint is not one classifier: they are evaluated and exported on their own pages.
OWN_PAGE = {"multitask": ("multitask", N_("Go to 9 · Multi-task")), "simclr": ("pretrain", N_("Go to 10 · Pretrain"))}
# issue 17: the text multi-task model and the adapted text encoder likewise (a text_distill student is one text
# classifier: Evaluate and Export take it like a "text" run)
OWN_PAGE |= {"text_multitask": OWN_PAGE["multitask"], "text_pretrain": OWN_PAGE["simclr"]}


def require_run(step: str) -> runs.Run:
    """A classifier run with a checkpoint chosen on this page (default: the current one), or stop with a link."""
    kinds = {i: technique_of(services.open_run(i, owner())) for i in finished_runs()}
    ids = [i for i, kind in kinds.items() if kind not in OWN_PAGE]
    current = st.session_state.get("job")
    show_damaged(current)
    if kinds.get(current) in OWN_PAGE:
        step_, label = OWN_PAGE[kinds[current]]
        st.info(_("The current run ({technique}) is not one classifier: its results and downloads are on its "
                  "own page. Below: the classifier runs.").format(technique=md(kinds[current])))
        link(step_, _(label))
    if not ids:
        st.info(_("This step needs a trained model, and no run has a checkpoint yet. Train one first."))
        link("train", _("Go to 4 · Train"))
        st.stop()
    choice = st.selectbox(i18n.pgettext("noun", "Run"), ids, index=ids.index(current) if current in ids else 0, key=f"{step}_run",
                          format_func=run_label)
    return services.open_run(choice, owner())


def run_label(run_id: str) -> str:
    """A short human label for a run id."""
    s = runs.Run(runs.root() / run_id).summary()
    acc = _(", validation accuracy {acc}").format(acc=i18n.format_percent(s["best_val_acc"])) \
        if s.get("best_val_acc") is not None else ""
    return f"{run_id[:15]} · {s.get('backbone')} · {status_text(s['status'])}{acc}"


@st.cache_data(show_spinner=False, max_entries=2048)
def thumbnail(path: str, px: int = 96):
    """A ``px``-square thumbnail of an image file, centre-cropped, so a gallery's tiles line up evenly."""
    from PIL import Image, ImageOps

    from core.app.engine import imageio

    try:  # a phone photo decodes reduced (at least twice px), EXIF orientation applied; HEIC and AVIF open too
        return ImageOps.fit(imageio.open_image(path, min_side=px), (px, px), Image.Resampling.LANCZOS)
    except (OSError, ValueError):
        return Image.new("RGB", (px, px), (230, 230, 230))  # an unreadable file shows as a grey tile


def progress_bar():
    """A progress bar and the ``progress(stage, done, total)`` callback that fills it, with rate and ETA."""
    bar = st.progress(0.0, text=_("starting…"))
    t0 = time.time()

    def update(stage: str, done: int, total: int) -> None:
        elapsed = max(time.time() - t0, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0
        bar.progress(min(done / max(total, 1), 1.0),
                     text=_("{stage}: {done} / {total} · {rate}/s · about {eta} s left").format(
                         stage=_(stage) if stage else stage, done=f"{done:,}", total=f"{total:,}", rate=f"{rate:,.0f}", eta=f"{eta:.0f}"))
    return update


def flash(message: str, kind: str = "success") -> None:
    """Keep a message for the next run (actions that change data rerun the page right after)."""
    st.session_state["_flash"] = (kind, message)


def show_flash() -> None:
    """Show and forget the message kept by flash()."""
    kind, message = st.session_state.pop("_flash", (None, None))
    if message:
        getattr(st, kind)(md(message))  # messages quote names people typed
