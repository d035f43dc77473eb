"""The guided steps for a text dataset (issue 17): Data, Backbone, Layers and Train.

Each step page hands over here when the current dataset is text (``common.is_text()``) and stops after; the
widget keys are the image steps' own where the setting is the same (``bb_name``, ``layers_preset``,
``train_epochs``...), so links, tests and a reloaded draft treat both alike. Texts, labels and file names are
user data: they reach Markdown through ``common.md()`` and tables as plain cells.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.app import charts, services, text_services
from core.app.engine import i18n
from pages import common, data_tools, train_live

_, N_ = i18n.gettext, i18n.N_


def text_draft() -> dict:
    """This tab's draft, switched to the text recipe when it still holds image choices (a new tab opened on a
    text dataset by a link, say)."""
    if common.draft()["backbone"] not in [r["name"] for r in _all_rows()]:
        common.set_fields(**text_services.text_fields())
    return common.draft()


# --- 1 · Data -----------------------------------------------------------------------------------------------

def upload(up, append: bool = False) -> None:
    """Import an uploaded text file (table, or .zip of class folders of .txt files) as a new text dataset and
    rerun; returns when the upload is not text (the image import takes it). A ValueError says what to fix."""
    if not text_services.is_text_upload(up, up.name):
        return
    with st.spinner(_("Reading the texts…")):
        name, got = text_services.import_upload(up, up.name, owner=common.owner())
    common.set_dataset(name)
    message = _("Imported {file} into text dataset '{name}': {rows} texts in {classes} classes.").format(
        file=up.name, name=name, rows=got["rows"], classes=got["classes"])
    if append:
        message += " " + _("Appending is for image datasets; a text upload always makes a new dataset.")
    if got["encoding_problems"] or got["skipped"]:
        message += " " + _("Some rows need a look: see the health report.")
    common.flash(message)
    st.rerun()


@st.cache_data(show_spinner=False, max_entries=16)
def _health(ds: str, stamp: str, owner: str | None, val_fraction: float, seed: int, max_length: int,
            backbone: str, lang: str) -> dict:  # lang: the report's warnings are sentences in that language
    return text_services.dataset_health(ds, owner, val_fraction=val_fraction, seed=seed, max_length=max_length,
                                        backbone=backbone)


def data(ds: str) -> None:
    """The Data step for a text dataset: counts, lengths, the health report and the split controls."""
    me, draft = common.owner(), text_draft()
    st.header(_("Text dataset: {name}").format(name=common.md(ds)))
    try:
        stamp = text_services.signature(ds, me)
        with st.spinner(_("Checking the texts…")):
            rep = _health(ds, stamp, me, float(draft["val_fraction"]), int(draft["seed"]),
                          int(draft.get("max_length") or 128), str(draft["backbone"]), i18n.current_language())
    except ValueError as e:
        st.error(_("This dataset cannot be used as it is: {problem}").format(problem=common.md(e)))
        data_tools.delete_dataset(ds)
        st.stop()
    c1, c2, c3 = st.columns(3)
    c1.metric(_("Texts"), f"{rep['n']:,}")
    c2.metric(_("Classes"), len(rep["classes"]))
    c3.metric(_("Columns (text / label)"), f"{rep['columns']['text']} / {rep['columns']['label']}")
    fig = charts.class_counts(rep["classes"], title=_("Texts per class"))
    fig.update_layout(xaxis_title=_("class"), yaxis_title=_("texts"))
    fig.update_xaxes(type="category")
    st.plotly_chart(fig, key="data_counts_chart", width="stretch")

    unit = _("tokens") if rep["token_unit"] == "tokens" else _("words")
    lengths = charts.histogram(rep["lengths"], _("Length of each text ({unit})").format(unit=unit), unit)
    lengths.update_layout(yaxis_title=_("texts"))
    st.plotly_chart(lengths, key="data_lengths_chart", width="stretch")
    t = rep["tokens"]
    st.caption(_("Median {median}, 95th percentile {p95}, longest {max} {unit}.").format(
        median=t["median"], p95=t["p95"], max=t["max"], unit=unit)
        + (" " + _("{n} of them are longer than max_length ({max_length}) and will be cut.").format(
            n=rep["truncated"], max_length=draft.get("max_length") or 128) if rep.get("truncated") else ""))

    _health_report(rep)
    _split(rep, draft)
    data_tools.delete_dataset(ds)
    common.link("backbone", _("Next: 2 · Backbone"))


def _health_report(rep: dict) -> None:
    st.subheader(_("Health report"))
    for w in rep["warnings"]:
        st.warning(common.md(w))  # the warnings quote row numbers and class names of the upload
    if not rep["warnings"]:
        st.success(_("No problems found: no empty or duplicate texts, no leakage, no encoding problems."))
    with st.expander(_("Details: empty and duplicate rows, leakage, encoding problems"),
                     expanded=bool(rep["warnings"])):
        st.write(_("Empty texts: {n}").format(n=len(rep["empty_rows"]))
                 + (" (" + _("rows {rows}").format(rows=", ".join(rep["empty_rows"][:20])) + ")"
                    if rep["empty_rows"] else ""))
        st.write(_("Texts that appear more than once: {n}").format(n=len(rep["duplicates"])))
        if rep["duplicates"]:
            st.dataframe([{_("rows"): ", ".join(d["rows"]), _("labels"): ", ".join(d["labels"]), _("text"): d["text"]}
                          for d in rep["duplicates"][:200]], key="data_text_duplicates", hide_index=True,
                         width="stretch")
        leak = rep["leakage"]
        if leak.get("checked"):
            st.write(_("Validation texts that also appear in training: {n} of {n_val}").format(
                n=leak["n"], n_val=leak["n_val"]))
            for example in leak["examples"]:
                st.code(example, language=None)
        else:
            st.write(_("Leakage not checked: {reason}").format(reason=common.md(leak.get("reason", ""))))
        st.write(_("Rows that are not valid UTF-8: {n}").format(n=len(rep["encoding_problems"])))
        if rep["encoding_problems"]:
            st.dataframe([{_("row"): p["row"], _("problem"): text_services.problem_message(p)}
                          for p in rep["encoding_problems"]],
                         key="data_text_encoding", hide_index=True, width="stretch")
        if rep["skipped"]:
            st.write(_("Rows left out (no usable label): {n}").format(n=len(rep["skipped"])))
            st.dataframe([{_("row"): p["row"], _("problem"): p["message"]} for p in rep["skipped"]],
                         key="data_text_skipped", hide_index=True, width="stretch")


def _split(rep: dict, draft: dict) -> None:
    st.subheader(_("Train / validation split"))
    a, b = st.columns(2)
    val_fraction = a.slider(_("Validation fraction"), 0.05, 0.5, float(min(max(draft["val_fraction"], 0.05), 0.5)),
                            0.05, key="data_val_fraction",
                            help=_("Share of each class held out to measure accuracy on texts the model never "
                                   "trains on."))
    seed = b.number_input(_("Split seed"), 0, 10_000, int(draft["seed"]), key="data_seed",
                          help=_("The same seed always gives the same split."))
    common.set_fields(val_fraction=float(val_fraction), seed=int(seed))
    leak = rep["leakage"]
    if leak.get("checked"):
        st.write(_("Random stratified split: **{n_train}** training and **{n_val}** validation texts.").format(
            n_train=rep["n"] - leak["n_val"], n_val=leak["n_val"]))


# --- 2 · Backbone -------------------------------------------------------------------------------------------

WEIGHTS = {"bundled": N_("ships with the app: works with no network"),
           "cached": N_("downloaded before: on this machine"),
           "download": N_("downloaded once from the Hugging Face hub when training starts (network needed)"),
           "adapted": N_("adapted to your texts in a pretraining run (10 · Pretrain): on this machine")}


@st.cache_data(ttl=60, show_spinner=False)
def _text_rows() -> list[dict]:
    return text_services.text_backbone_table()


def _all_rows() -> list[dict]:
    """The registry's text encoders and this user's adapted ones (10 · Pretrain), each with its note."""
    return _text_rows() + text_services.adapted_rows(common.owner())


def backbone(draft: dict) -> None:
    """The Backbone step for a text dataset: the sentence encoders, their weights, the choice saved to the draft."""
    draft = text_draft()
    st.write(_("For text, the backbone is a sentence encoder already trained on a large corpus of sentences. "
               "Its embeddings are reused and a new head learns your classes; on the Layers step you choose "
               "whether some of its transformer blocks adapt too."))
    rows = _all_rows()
    table = pd.DataFrame(rows).set_index("name")
    shown = table.assign(weights=[_(WEIGHTS.get(w, w)) for w in table["weights"]])
    st.dataframe(shown, key="bb_table", width="stretch",
                 column_config={"title": _("title"), "params (M)": st.column_config.NumberColumn(
                     _("params (M)"), format="%.3g"), "dim": _("embedding size"), "blocks": _("transformer blocks"),
                     "weights": _("weights"), "groups": _("layer groups"), "note": _("note")})
    names = list(table.index)
    current = draft["backbone"] if draft["backbone"] in names else text_services.default_backbone()
    name = st.selectbox(_("Text backbone"), names, index=names.index(current), key="bb_name",
                        format_func=lambda n: f"{n} — {table.loc[n, 'title']}")
    random_init = st.checkbox(_("Random initialisation (baseline, no pretrained weights)"),
                              value=not draft["pretrained"], key="bb_random_init",
                              help=_("Trains the same network from scratch: shows how much the pretraining helps."))
    common.set_fields(backbone=name, pretrained=not random_init)
    row = table.loc[name]
    st.write(_("**{title}**: {params} M parameters, sentence embeddings of {dim} numbers, {blocks} transformer "
               "blocks, {groups} layer groups.").format(title=common.md(row["title"]),
                                                          params=f"{row['params (M)']:.3g}",
                                                          dim=row["dim"], blocks=row["blocks"], groups=row["groups"]))
    if row["weights"] == "download" and not random_init:
        offline = [n for n in names if table.loc[n, "weights"] != "download"]
        st.warning(_("The weights of {name} are not on this machine. Training downloads them once from the Hugging "
                     "Face hub (network needed); without a network, pick one available offline: {offline}.").format(
            name=common.md(name), offline=", ".join(offline)))
    elif random_init:
        st.info(_("Random initialisation: every layer starts from scratch, so train all layers (Layers step) and "
                  "expect much lower accuracy — that is the point of the baseline."))
    else:
        st.success(_("Weights: {status}.").format(status=_(WEIGHTS[row["weights"]])))
    common.link("layers", _("Next: 3 · Layers"))


# --- 3 · Layers ---------------------------------------------------------------------------------------------

CHOICES = {"head": (N_("head only"), N_("Only the new classifier learns; each text is encoded once, so training is "
                                        "fast even on a CPU. Best with a few hundred texts per class or fewer.")),
           "last": (N_("last 2 blocks + head"), N_("The new classifier and the encoder's last 2 transformer blocks "
                                                   "adapt to your texts; the embeddings and earlier blocks stay as "
                                                   "they are. Slower: every epoch runs the encoder.")),
           "all": (N_("everything"), N_("Every layer adapts, the word embeddings included. Needs thousands of texts "
                                        "per class, else the pretraining is overwritten by noise.")),
           "custom": (N_("custom"), N_("You pick which layer groups learn; the new classifier always does."))}


@st.cache_resource(show_spinner=False)
def _param_counts(name: str, n_classes: int) -> dict[str, int]:
    return services.group_param_counts(name, n_classes)


def layers(ds: str, draft: dict) -> None:
    """The Layers step for a text dataset: embeddings, block1..N and head, the presets and the share that learns."""
    st.write(_("A sentence encoder is a stack of layer groups: the word embeddings, then transformer blocks, each "
               "building on the one before. Frozen groups keep their pretrained weights; trainable groups adapt "
               "to your texts. The fewer texts you have, the fewer groups should learn."))
    draft = text_draft()
    backbone_name = draft["backbone"]
    if backbone_name not in [r["name"] for r in _all_rows()]:
        st.error(_("{name} is an image backbone; a text dataset needs a text backbone.").format(
            name=common.md(backbone_name)))
        common.link("backbone", _("Choose a backbone on 2 · Backbone"))
        st.stop()
    counts = text_services.class_counts(ds, common.owner())
    n_classes = max(len(counts), 2)
    groups = services.backbone_groups(backbone_name)
    with st.spinner(_("Counting parameters…")):
        sizes = _param_counts(backbone_name, n_classes)
    smallest = min(counts.values()) if counts else 0
    suggested = "head" if smallest < 300 else "last"
    st.info(_("Suggestion: **{choice}** — the smallest class has {n} texts.").format(
        choice=_(CHOICES[suggested][0]), n=smallest))
    if draft["trainable_groups"] is not None and not set(draft["trainable_groups"]) <= set(groups):
        common.set_fields(trainable_groups=None)  # chosen for another backbone
    now = services.describe_layers(backbone_name, draft["trainable"], draft["trainable_groups"], n_classes)
    choices = list(CHOICES)
    preset = st.radio(_("Which layers learn"), choices, index=choices.index(now["choice"]), key="layers_preset",
                      format_func=lambda c: _(CHOICES[c][0]), horizontal=True)
    st.caption(_(CHOICES[preset][1]))
    if preset == "custom":
        chosen = [g for g in groups if st.toggle(_("{group} ({n} parameters)").format(group=g, n=f"{sizes[g]:,}"),
                                                 value=g in now["groups"] or g == "head", key=f"layers_group_{g}",
                                                 disabled=g == "head")]
        common.set_fields(trainable_groups=chosen)
    else:
        chosen = services.trainable_preset(groups, preset)
        common.set_fields(trainable={"last": "last-2"}.get(preset, preset), trainable_groups=None)
    learn, total = sum(sizes[g] for g in chosen), sum(sizes.values())
    c1, c2, c3 = st.columns(3)
    c1.metric(_("Trainable parameters"), f"{learn:,}")
    c2.metric(_("Total parameters"), f"{total:,}")
    c3.metric(_("Share of weights that learn"), f"{100 * learn / total:.3g}%")  # three significant digits
    st.dataframe([{_("group"): g, _("parameters"): sizes[g], _("share (%)"): float(f"{100 * sizes[g] / total:.3g}"),
                   _("learns"): g in chosen} for g in groups], key="layers_table", hide_index=True, width="stretch",
                 column_config={_("parameters"): st.column_config.NumberColumn(format="localized")})
    st.caption(_("The new head has {n} parameters for your {classes} classes; the embeddings hold most of the "
                 "encoder's weights (one vector per word piece of its vocabulary).").format(
        n=f"{sizes['head']:,}", classes=n_classes))
    if len(chosen) > 1 and float(draft["lr"]) > 1e-3:
        st.warning(_("The learning rate is {lr}, made for the head alone: at that rate the transformer blocks lose "
                     "what they learned in pretraining. Set about 1e-4 on the Train step.").format(
            lr=f"{draft['lr']:.3g}"))
    if len(chosen) > 1:
        decay = st.slider(_("Discriminative learning rate: each group toward the embeddings learns at lr × factor^k"),
                          0.1, 1.0, float(draft["lr_decay"]), 0.05, key="layers_lr_decay",
                          help=_("1.0 = the same rate everywhere; 0.5 halves it per group, so early layers change "
                                 "least."))
        a, b = st.columns(2)
        after = a.number_input(_("Head-only epochs first (0 = off)"), 0, max(int(draft["epochs"]) - 1, 0),
                               min(int(draft.get("unfreeze_after") or 0), max(int(draft["epochs"]) - 1, 0)),
                               key="layers_unfreeze_after",
                               help=_("Gradual unfreezing: the new head learns alone first, so its random start does "
                                      "not send large gradients into the pretrained blocks."))
        mode = b.selectbox(_("Then unfreeze"), ["all", "gradual"],
                           index=["all", "gradual"].index(draft.get("unfreeze_mode") or "all"),
                           key="layers_unfreeze_mode", disabled=after == 0,
                           format_func={"all": _("all chosen groups at once"),
                                        "gradual": _("one more group per epoch, toward the embeddings")}.get)
        common.set_fields(lr_decay=float(decay), unfreeze_after=int(after), unfreeze_mode=mode)
    elif draft.get("unfreeze_after"):
        common.set_fields(unfreeze_after=0)
    common.link("train", _("Next: 4 · Train"))


# --- 4 · Train ----------------------------------------------------------------------------------------------

_RECIPE_WIDGETS = ("train_epochs", "train_lr", "train_max_length")


def _recipe(draft: dict) -> None:
    st.subheader(_("Recipe: text classification"))
    st.caption(_("The image recipes (Quick, Balanced, Best) measure how fast image backbones run here and choose "
                 "image sizes and augmentation; a text dataset starts from the text recipe instead."))
    plan = text_services.text_plan(services.dataset_dir(common.dataset(), common.owner()))
    st.table([{_("choice"): k, _("value"): str(plan["fields"].get(k)), _("why"): why}
              for k, why in plan["reasons"].items()], hide_index=True)
    if st.button(_("Apply the text recipe"), key="train_text_recipe"):
        for w in _RECIPE_WIDGETS:
            st.session_state.pop(w, None)
        common.set_fields(**plan["fields"])
        st.rerun()


def train(ds: str, draft: dict) -> None:
    """The Train step for a text dataset: the text recipe, the knobs (max_length among them), the job controls and
    the live charts."""
    draft = text_draft()
    _recipe(draft)
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input(_("Epochs"), 1, 500, int(draft["epochs"]), key="train_epochs")
    batch = c2.number_input(_("Batch size"), 1, 1024, int(draft["batch_size"]), key="train_batch_size")
    lr = c3.number_input(_("Learning rate"), 1e-6, 1.0, float(draft["lr"]), format="%.5f", step=1e-4,
                         key="train_lr", help=_("Head learning rate. 0.01 suits a head on fixed embeddings; when "
                                                "transformer blocks learn too, about 1e-4 keeps their pretraining."))
    max_length = c4.number_input(_("Max length (tokens)"), 8, 512, int(draft.get("max_length") or 128), step=8,
                                 key="train_max_length",
                                 help=_("Tokens kept per text; longer texts are cut. Shorter trains faster."))
    a, b, c = st.columns(3)
    optimizer = a.selectbox(_("Optimizer"), ["adamw", "sgd"], index=["adamw", "sgd"].index(draft["optimizer"]),
                            key="train_optimizer")
    schedules = ["cosine", "onecycle", "constant"]
    scheduler = b.selectbox(_("Learning-rate schedule"), schedules, index=schedules.index(draft["scheduler"]),
                            key="train_scheduler")
    patience = c.number_input(_("Early stopping patience (epochs, 0 = off)"), 0, 100,
                              int(draft["early_stopping_patience"]), key="train_patience")
    common.set_fields(epochs=int(epochs), batch_size=int(batch), lr=float(lr), max_length=int(max_length),
                      optimizer=optimizer, scheduler=scheduler, early_stopping_patience=int(patience))
    with st.expander(_("Advanced")):
        a, b, c = st.columns(3)
        smoothing = a.slider(_("Label smoothing"), 0.0, 0.3, float(draft["label_smoothing"]), 0.05,
                             key="train_label_smoothing")
        wd = b.number_input(_("Weight decay"), 0.0, 1.0, float(draft["weight_decay"]), format="%.5f", step=1e-4,
                            key="train_weight_decay")
        seed = c.number_input(_("Seed"), 0, 10_000, int(draft["seed"]), key="train_seed")
        name = a.text_input(_("Run name (optional)"), draft["name"], key="train_name")
        weights = b.checkbox(_("Class-weighted loss (for imbalanced classes)"), bool(draft["class_weights"]),
                             key="train_class_weights")
        common.set_fields(label_smoothing=float(smoothing), weight_decay=float(wd), seed=int(seed), name=name,
                          class_weights=weights)
    try:
        config = text_services.to_config(draft, ds, common.owner())
    except ValueError as e:
        st.error(_("The settings cannot train yet: {problem}").format(problem=common.md(e)))
        common.link("backbone", _("Choose a text backbone on 2 · Backbone"))
        config = None
    layers_label = services.layer_label(draft["trainable"], draft["trainable_groups"])
    st.caption(_("Text dataset **{ds}** · backbone **{backbone}** · layers **{layers}** · max length {n}").format(
        ds=common.md(ds), backbone=common.md(draft["backbone"]), layers=common.md(layers_label), n=int(max_length)))
    _controls(config)


def _controls(config) -> None:
    """Start, pause, resume and stop, and the live view of the current run (pages/train_live.py)."""
    mgr = common.job_manager()
    job, run = common.current_job(), common.current_run()
    status = job.status() if job is not None else run.status() if run is not None else None
    active = status in common.ACTIVE
    b1, b2, b3, b4, b5 = st.columns(5)
    if b1.button(_("Start training"), key="train_start", type="primary", disabled=active or config is None):
        common.set_job(services.start_job(mgr, config, owner=common.owner()).id)
        st.rerun()
    if b2.button(_("Pause"), key="train_pause", disabled=not (active and status != "paused" and job is not None)):
        job.pause()
        st.rerun()
    can_resume = (status == "paused" and job is not None) or (status not in common.ACTIVE
                                                              and common.resumable(run, job))
    if b3.button(_("Resume"), key="train_resume", disabled=not can_resume):
        if status == "paused":
            job.resume()
        else:
            try:
                common.set_job(services.resume_run(mgr, run.id, owner=common.owner()).id)
            except ValueError as e:
                st.error(common.md(e))
                st.stop()
        st.rerun()
    if b4.button(_("Stop"), key="train_stop", disabled=not (active and job is not None)):
        job.stop()
        st.rerun()
    if config is not None:
        b5.download_button(_("Config (.json)"), config.to_json(), "config.json", "application/json",
                           key="train_download_config")
    train_live.monitor(active)


def sample() -> str:
    """The built-in "topics" text sample as a dataset of this user; its name."""
    with st.spinner(_("Writing the sample texts…")):
        return text_services.import_sample(common.owner())
