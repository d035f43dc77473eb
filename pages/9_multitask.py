"""9 · Multi-task: one shared backbone, one head per label column of a CSV."""
from __future__ import annotations

import hashlib

import streamlit as st

from core.app import charts
from core.app import services, text_services
from core.app.engine import i18n, owners, runs, workspace
from pages import common, technique_tools as tt

_ = i18n.gettext

common.entrypoint()
st.title(_("9 · Multi-task"))
st.write(_("Multi-task learning trains one backbone with a separate head for each label of an image (say species "
           "and health), so every task shares what the others teach the features. Use it when your images carry "
           "several related labels, or some labels are scarce and can lean on a better-labelled task."))

ds = common.dataset()
text = bool(ds) and common.is_text(ds)  # issue 17: a text table with several label columns (text_multitask)
if text:
    options = [_("The table of text dataset {name}").format(name=common.md(ds)),
               _("Upload a text table (CSV, TSV or JSONL)")]
    choice = st.radio(_("Data"), options, key="mt_source", horizontal=True,
                      help=_("A table with a text column and one column per task; an empty cell means no label."))
    source = None
    if choice == options[1]:
        up = st.file_uploader(_("Table with a text column and several label columns"), type=["csv", "tsv", "jsonl"],
                              key="mt_text_upload")
        if up is not None:
            source = tt.keep_upload(up, "multitask-text")
    else:  # the dataset's own table (a choice from the other language is stale: the dataset's table too)
        source = str(text_services.dataset_table(ds, common.owner()))
    if source is None:
        st.info(_("Multi-task training on text needs a table with a text column and several label columns "
                  "(text, topic, sentiment, ...): upload one above."))
        st.stop()
    try:
        table = text_services.task_table(source, owner=common.owner())
    except ValueError as e:
        st.error(common.md(e))
        st.stop()
    st.caption(i18n.ngettext("{n} text with at least one label (text column {column}); {tasks}",
                             "{n} texts with at least one label (text column {column}); {tasks}",
                             table["rows"]).format(
        n=table["rows"], column=common.md(table["text_column"]),
        tasks=", ".join(i18n.ngettext("{task}: {n} class", "{task}: {n} classes", len(c)).format(
            task=common.md(t), n=len(c)) for t, c in table["tasks"].items())))
    if table["skipped"]:
        with st.expander(i18n.ngettext("{n} row left out", "{n} rows left out", len(table["skipped"])).format(
                n=len(table["skipped"]))):
            st.text("\n".join(table["skipped"][:200]))
else:
    options = [_("Upload a zip (CSV + images)")] + ([_("The CSV in dataset {name}").format(name=common.md(ds))] if ds
                                                    else [])
    choice = st.radio(_("Data"), options, key="mt_source", horizontal=True,
                      help=_("A CSV with a filename column and one column per task; an empty cell means no label."))
    source = None
    if choice == options[0] or choice not in options:  # the upload (a choice from the other language is stale)
        up = st.file_uploader(_("Zip with one CSV and the images it names"), type=["zip"], key="mt_upload")
        if up is not None:
            payload = up.getvalue()
            # named by owner and content: the same upload on every rerun is written once, into a folder of its owner
            digest = hashlib.sha256(f"{common.owner()}\n".encode() + payload).hexdigest()[:16]
            folder = workspace.sub("uploads") / f"multitask-{digest}"
            target = folder / "upload.zip"
            if not target.exists():
                folder.mkdir(exist_ok=True)
                owners.record(folder, common.owner())
                runs.atomic_write_bytes(target, payload)
            source = str(target)
    else:
        source = str(services.dataset_dir(ds, common.owner()))
    if source is None:
        st.info(_("Multi-task training needs images with several label columns: upload a zip holding a CSV "
                  "(filename, task_a, task_b, ...) and its images, or choose a dataset that has such a CSV on the "
                  "Data step."))
        common.link("data", _("Go to 1 · Data"))
        st.stop()

    try:
        table = services.task_table(source, owner=common.owner())
    except ValueError as e:
        st.error(common.md(e))
        common.link("data", _("Go to 1 · Data"))
        st.stop()
    st.caption(i18n.ngettext("{n} image with at least one label; {tasks}",
                             "{n} images with at least one label; {tasks}", table["rows"]).format(
        n=table["rows"], tasks=", ".join(i18n.ngettext("{task}: {n} class", "{task}: {n} classes", len(c)).format(
            task=common.md(t), n=len(c)) for t, c in table["tasks"].items())))
    if table["skipped"]:
        with st.expander(i18n.ngettext("{n} row left out", "{n} rows left out", len(table["skipped"])).format(
                n=len(table["skipped"]))):
            st.text("\n".join(table["skipped"][:200]))

d = common.draft()
if not set(st.session_state.get("mt_tasks") or []) <= set(table["tasks"]):
    del st.session_state["mt_tasks"]  # chosen in another table (the source changed): start from all of this one's
tasks = st.multiselect(_("Tasks"), list(table["tasks"]), default=list(table["tasks"]), key="mt_tasks")
cols = st.columns(max(len(tasks), 1))
weights = {t: cols[i].number_input(_("Weight of {task}").format(task=common.md(t)), 0.0, 10.0, 1.0, 0.1,
                                   key=f"mt_weight_{t}")
           for i, t in enumerate(tasks)}
epochs = st.number_input(_("Epochs"), 1, 500, int(d["epochs"]), key="mt_epochs")
if text:
    max_length = st.number_input(_("Max length (tokens)"), 8, 512, int(d.get("max_length") or 128),
                                 key="mt_max_length", help=_("Tokens kept per text; longer texts are cut. "
                                                             "Default: your draft's (128 in the text recipe)."))
st.caption(_("Backbone {backbone} with the layer and optimizer settings of your draft. Loss = sum over tasks of "
             "weight × cross-entropy, over the rows labelled for that task.").format(
    backbone=common.md(d["backbone"] if not text or text_services.is_text_backbone(d["backbone"])
                       else text_services.default_backbone())))

kind = "text_multitask" if text else "multitask"
run, job, active = tt.current(kind)
ready = bool(tasks) and any(w > 0 for w in weights.values())
if not ready:
    st.warning(_("Choose at least one task with a weight above 0."))


def multitask_config():
    """One head per chosen task, on this user's CSV (upload or dataset), with the draft's settings."""
    if text:
        return text_services.multitask_config(d, source, list(tasks), [weights[t] for t in tasks], int(epochs),
                                              int(max_length), common.owner())
    cfg = services.to_config(d, source, common.owner(), epochs=int(epochs), trainable_groups=None,
                             name=f"multi-task: {', '.join(tasks)}")
    cfg.technique, cfg.tasks = "multitask", list(tasks)
    cfg.task_weights = [float(weights[t]) for t in tasks]
    return cfg


if st.button(_("Start multi-task training"), key="mt_start", type="primary", disabled=active or not ready):
    tt.start(multitask_config, "mt")


def draw(run, events, status) -> None:
    epochs_ev = [e for e in events if e.get("type") == "epoch" and "tasks" in e]
    if epochs_ev:
        st.plotly_chart(charts.task_curves(events), key="mt_chart_tasks", width="stretch")
        last = epochs_ev[-1]
        st.dataframe([{"task": t, **{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}}
                      for t, m in last["tasks"].items()], key="mt_task_table", hide_index=True, width="stretch",
                     column_config={"task": st.column_config.TextColumn(_("task"))})
    if status == "finished":
        st.success(_("Done. The checkpoint carries every task's head; export it on the Export step."))


tt.live(kind, "mt", draw)
