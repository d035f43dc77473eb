"""Train-step helpers: the augmentation preview grid and the live job monitor (a polling fragment)."""
from __future__ import annotations

import streamlit as st

from core.app import charts
from core.app.engine import edits as de
from core.app import services
from core.app.engine import POLICIES, PRESETS, i18n
from core.app.engine import events as run_events
from pages import common, data_tools

_, N_ = i18n.gettext, i18n.N_


@st.cache_data(show_spinner=False, max_entries=32)
def _preview(path: str, backbone: str, size: int, augment: str, seed: int, aug: tuple) -> list:
    return services.augment_preview(path, backbone, size, augment, n=8, seed=seed, aug=dict(aug))


def augment_grid(ds: str, draft: dict) -> None:
    """Eight augmented versions of one image of the dataset, as training will see them."""
    try:
        index, _health = data_tools.scan_and_check(ds)
    except ValueError as e:
        st.info(_("No preview: {problem}").format(problem=common.md(e)))
        return
    paths = [p for ps in de.gallery(index, 1).values() for p in ps]
    a, b = st.columns([3, 1])
    path = a.selectbox(_("Image"), paths, key="train_preview_image", format_func=lambda p: p.rsplit("/", 2)[-2])
    seed = b.number_input(_("Preview seed"), 0, 999, 0, key="train_preview_seed")
    aug = tuple(sorted((k, v) for k, v in draft.items() if k.startswith("aug_")))
    images = _preview(path, draft["backbone"], int(draft["image_size"]), draft["augment"], int(seed), aug)
    st.image(images, width=112, caption=[f"#{i + 1}" for i in range(len(images))])


def start_custom(draft: dict, augment: str) -> None:
    """When switching from a preset to 'custom', start from that preset's settings, not from scratch."""
    previous = draft["augment"]
    if augment == "custom" and previous != "custom" and previous in PRESETS:
        common.set_fields(**PRESETS[previous].to_config_fields())


def custom_augment(draft: dict) -> None:
    """The custom augmentation settings (the aug_* config fields)."""
    a, b, c = st.columns(3)
    flip = a.checkbox(_("Random horizontal flip"), bool(draft["aug_flip"]), key="train_aug_flip",
                      help=_("Off for images whose left and right differ in meaning (text, arrows)."))
    rotation = b.slider(_("Random rotation (± degrees)"), 0, 180, int(draft["aug_rotation"]), 5, key="train_aug_rotation")
    jitter = c.slider(_("Colour jitter strength"), 0.0, 1.0, float(draft["aug_color_jitter"]), 0.1,
                      key="train_aug_color_jitter", help=_("Brightness, contrast, saturation and hue; 0 = off."))
    scale = a.slider(_("Random crop: smallest share of the image kept"), 0.05, 1.0, float(draft["aug_scale_min"]), 0.05,
                     key="train_aug_scale_min", help=_("1.0 = always the centre crop."))
    policy = b.selectbox(_("Automatic policy"), POLICIES, index=POLICIES.index(draft["aug_policy"]),
                         key="train_aug_policy", format_func=lambda p: _("none") if p == "none" else p,
                         help=_("RandAugment / TrivialAugment apply random photometric and geometric operations "
                                "from a fixed list."))
    common.set_fields(aug_flip=bool(flip), aug_rotation=float(rotation), aug_color_jitter=float(jitter),
                      aug_scale_min=float(scale), aug_policy=policy)


def lr_finder(config) -> None:
    """Run the learning-rate sweep on demand, chart it, and offer to use its suggestion."""
    st.caption(_("Trains briefly while the learning rate grows from 1e-7 to 10 and records the loss; a good rate "
                 "is where the loss falls fastest. The model and the run history are left untouched."))
    key = config.to_json()
    if st.button(_("Run the sweep"), key="train_lr_find"):
        bar = st.progress(0.0, text=_("sweeping…"))
        try:
            result = services.lr_find(config, on_progress=lambda d, t: bar.progress(min(d / max(t, 1), 1.0),
                                                                                   text=_("step {done} / {total}").format(
                                                                                       done=d, total=t)))
        except ValueError as e:
            st.error(common.md(e))
            return
        st.session_state["_lr_find"] = (key, result)
    found = st.session_state.get("_lr_find")
    if not found:
        return
    if found[0] != key:
        st.caption(_("The settings changed since the last sweep; run it again for a current suggestion."))
    result = found[1]
    st.plotly_chart(charts.lr_finder(result), key="train_lr_chart", width="stretch")
    st.write(_("Suggested learning rate: {lr}").format(lr=f"**{result['suggestion']:.2e}**"))
    if st.button(_("Use the suggestion"), key="train_lr_use"):
        common.set_fields(lr=float(result["suggestion"]))
        st.session_state.pop("train_lr", None)  # let the number box pick up the new value
        st.rerun()


RECIPES = {"balanced": N_("Balanced (recommended)"), "quick": N_("Quick"), "best": N_("Best"), "custom": N_("Custom")}
# widgets below that show a recipe's fields: forgotten when a recipe is applied, so they show its values
_WIDGETS = ("train_epochs", "train_batch_size", "train_lr", "train_image_size", "train_optimizer", "train_scheduler",
            "train_augment", "train_label_smoothing", "train_weight_decay")
_OWN_BODIES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")  # the recipes' own choices


def recipe(ds: str, draft: dict) -> None:
    """The first choice of the Train step: a recipe fitted to this dataset and machine (every choice shown
    with its reason and the expected time), or Custom; the controls below still change any field."""
    c1, c2 = st.columns([3, 1])
    # a new draft records no recipe yet: it starts with balanced, as the CLI does without flags
    current = draft.get("preset") if draft.get("preset") in RECIPES else "balanced"
    choice = c1.radio(_("Recipe"), list(RECIPES), index=list(RECIPES).index(current), key="train_preset",
                      horizontal=True, format_func=lambda r: _(RECIPES[r]),
                      help=_("Quick: the head only, about a minute. Balanced: fine-tunes the last layers. Best: a "
                             "larger backbone and more epochs. Custom: only the settings below."))
    budget = c2.number_input(_("Time budget (seconds, 0 = the recipe's)"), 0, 86_400, 0, step=60, key="train_budget")
    if choice == "custom":
        common.set_fields(preset="custom", time_budget_s=float(budget))
        return
    key = (ds, choice, int(budget))
    plans = st.session_state.setdefault("train_plans", {})
    if key not in plans:
        keep = {} if draft["backbone"] in _OWN_BODIES else {"backbone": draft["backbone"]}  # the user's pick
        with st.spinner(_("Measuring this machine's speed for the recipe…")):
            try:
                plans[key] = services.preset_plan(services.dataset_dir(ds, common.owner()), choice, budget or None,
                                                  owner=common.owner(), overrides=keep)
            except ValueError as e:
                st.error(_("The recipe cannot be planned: {problem}").format(problem=common.md(e)))
                return
    plan = plans[key]
    # applied once per choice: the draft remembers it (a reload keeps what the user changed afterwards)
    if draft.get("preset") != choice or float(draft.get("time_budget_s") or 0) != plan["budget_s"]:
        for w in _WIDGETS:
            st.session_state.pop(w, None)
        common.set_fields(**plan["fields"], trainable_groups=None)
    st.markdown(_("**Expected time: about {expected}** on this machine · stops at {budget} with the best weights "
                  "so far").format(expected=_fmt_s(plan["expected_s"]), budget=_fmt_s(plan["budget_s"])))
    # a static table wraps the reasons (a data grid cut them at the column's edge); its headers in the session's language
    st.table([{_("choice"): k, _("value"): str(plan["fields"].get(k)), _("why"): r}
              for k, r in plan["reasons"].items()], hide_index=True)
    st.caption(_("Every setting below starts at the recipe's choice; what you change there wins."))


def _best_accuracy(epochs: list[dict], events: list[dict]) -> float:
    """The best epoch's validation accuracy, or the weight-averaged mix's when the run kept one (WiSE-FT)."""
    best = max(e["val_acc"] for e in epochs)
    for e in events:
        if e.get("type") == "weight_average" and e.get("share", 1.0) < 1:
            best = max([best] + [t["val_acc"] for t in e.get("tried", []) if t.get("share") == e["share"]])
    return best


def more(run) -> None:
    """Says when a finished run stopped while still improving, and offers to train N more epochs (a resume)."""
    verdict = services.unfinished(run.path, common.owner())
    if not verdict:
        return
    st.warning(_("This model looks unfinished: {why}.").format(why=common.md(verdict["message"])))
    c1, c2 = st.columns([1, 3])
    n = c1.number_input(_("More epochs"), 1, 500, int(verdict["more_epochs"]), key="train_more_n")
    if c2.button(i18n.ngettext("Train {n} more epoch", "Train {n} more epochs", int(n)).format(n=int(n)),
                 key="train_more"):
        try:
            job = services.train_more(common.job_manager(), run.id, int(n), owner=common.owner())
        except ValueError as e:
            st.error(common.md(e))
            return
        common.set_job(job.id)
        st.rerun()


# the epoch table's columns (event keys) and their headers as shown
_EPOCH_COLUMNS = {"epoch": N_("epoch"), "train_loss": N_("training loss"), "train_acc": N_("training accuracy"),
                  "val_loss": N_("validation loss"), "val_acc": N_("validation accuracy"), "time_s": N_("time (s)")}


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(s)
    if s >= 3600:
        return _("{h}h{m}m").format(h=s // 3600, m=f"{s % 3600 // 60:02d}")
    return _("{m}m{s}s").format(m=s // 60, s=f"{s % 60:02d}")


def monitor(active: bool) -> None:
    """Status, progress, live charts of the current job; polls every second only while it is active."""

    @st.fragment(run_every=1.0 if active else None)
    def live() -> None:
        job, run = common.current_job(), common.current_run()
        if run is None:
            st.caption(_("No training run yet: choose the settings above and press Start training."))
            return
        status = job.status() if job is not None else run.status()
        if active and status not in common.ACTIVE:
            st.rerun()  # the job just ended: redraw the buttons and stop polling
        events = run.events()  # the run's log on disk holds the full history, resumes included
        st.subheader(_("Run {run} — {status}").format(run=run.id[:15], status=common.status_text(status)))
        problem = run.problem()
        if problem:
            st.error(_("Some of this run's files are damaged: {problem}. What is intact is shown below.").format(
                problem=common.md(problem)))
        if status == "running" and not any(e.get("type") == "start" for e in events):
            st.caption(_("Starting the training process: loading the engine and the data…"))
        if status == "queued":
            pos = common.job_manager().queue_position(job.id)
            st.info(_("Waiting in the queue (position {pos}): other jobs are using the machine.").format(pos=pos))
        if status in ("interrupted", "failed", "stopped") and not active and common.resumable(run, job):
            st.warning(_("This run stopped without finishing (its process ended or was killed). Press Resume to "
                         "continue from the last completed epoch (from the start when none completed)."))
        last = events[-1] if events else {}
        steps = [e for e in events if e.get("type") == "step"]
        epochs = [e for e in events if e.get("type") == "epoch"]
        if last.get("type") == "phase" and last.get("total"):
            st.progress(min(last["done"] / last["total"], 1.0),
                        text=f"{_(last['phase']) if last['phase'] else ''}: {last['done']} / {last['total']}")
        if steps:
            s = steps[-1]
            st.progress(min(s["step"] / max(s["total_steps"], 1), 1.0),
                        text=(_("step {step} / {steps} · epoch {epoch} · {rate} texts/s · ETA {eta}")
                              if common.technique_of(run) == "text" else  # a text run counts texts
                              _("step {step} / {steps} · epoch {epoch} · {rate} images/s · ETA {eta}")).format(
                            step=s["step"], steps=s["total_steps"], epoch=s["epoch"], rate=f"{s['images_per_s']:.0f}",
                            eta=_fmt_s(s["eta_s"] if active else 0)))
        if epochs:
            e = epochs[-1]
            c1, c2, c3, c4 = st.columns(4)
            c1.metric(_("Epoch"), f"{e['epoch']} / {e['epochs']}")
            c2.metric(_("Validation accuracy"), i18n.format_percent(e["val_acc"]))
            c3.metric(_("Best validation accuracy"), i18n.format_percent(_best_accuracy(epochs, events)))
            c4.metric(_("Validation loss"), f"{e['val_loss']:.3f}")
        for e in events:
            if e.get("type") in ("early_stop", "weight_average"):
                st.info(common.md(run_events.text(e)))
        end = next((e for e in reversed(events) if e.get("type") == "end"), None)
        if status == "failed":
            st.error(_("Training failed: {error}").format(
                error=common.md((job.error if job is not None else None) or run_events.text(end or {}))))
            tb = (job.traceback if job is not None else None) or (end or {}).get("traceback")
            if tb:
                with st.expander(_("Traceback")):
                    st.code(tb, language="text")
        elif status == "finished":
            st.success(_("Training finished. The best epoch's weights are saved with the run."))
            more(run)
            common.link("evaluate", _("Next: 5 · Evaluate"))
        elif status == "stopped":
            st.info(_("Stopped by you; the best checkpoint so far is kept."))
        if steps:
            st.plotly_chart(charts.step_loss(events), key="train_chart_loss", width="stretch")
        if epochs:
            st.plotly_chart(charts.epoch_curves(events), key="train_chart_epochs", width="stretch")
            st.dataframe([{k: e[k] for k in _EPOCH_COLUMNS} for e in epochs], key="train_epoch_table",
                         hide_index=True, width="stretch",
                         column_config={k: _(label) for k, label in _EPOCH_COLUMNS.items()})  # keys stay the metric keys
        if steps:
            st.plotly_chart(charts.learning_rate(events), key="train_chart_lr", width="stretch")

    live()
