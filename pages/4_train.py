"""4 · Train: the training knobs, a live augmentation preview, start/pause/resume/stop and live charts."""
from __future__ import annotations

import streamlit as st

from core.app import services
from core.app.engine import AUGMENTS, i18n, tracking, workspace
from pages import common, text_steps, train_live

_, N_ = i18n.gettext, i18n.N_
# the choices of the select boxes below as shown (the stored values stay these keys)
SHOWN = {"adamw": "AdamW", "sgd": "SGD", "cosine": N_("cosine"), "onecycle": N_("one-cycle (warm-up, then anneal)"),
         "constant": N_("constant"), "none": N_("none"), "light": N_("light"), "strong": N_("strong"),
         "custom": N_("custom")}


def shown(value: str) -> str:
    """A select box choice in the session's language."""
    return _(SHOWN[value]) if value in SHOWN else str(value)


common.entrypoint()
st.title(_("4 · Train"))
st.write(_("Training shows the network your images batch by batch and nudges the trainable layers to reduce "
           "the loss; after every epoch it measures accuracy on the validation images it never trains on."))
ds = common.require_dataset()
draft = common.draft()
common.show_flash()
if common.is_text(ds):  # a text dataset: the text recipe and max_length (pages/text_steps.py)
    text_steps.train(ds, draft)
    st.stop()
train_live.recipe(ds, draft)

c1, c2, c3, c4 = st.columns(4)
epochs = c1.number_input(_("Epochs"), 1, 500, int(draft["epochs"]), key="train_epochs")
batch = c2.number_input(_("Batch size"), 1, 1024, int(draft["batch_size"]), key="train_batch_size")
lr = c3.number_input(_("Learning rate"), 1e-6, 1.0, float(draft["lr"]), format="%.5f", step=1e-4, key="train_lr",
                     help=_("Head learning rate. 1e-3 suits AdamW; SGD usually wants 1e-2."))
SIZES = sorted({0, 64, 96, 128, 160, 192, 224, 256, 320, 384, int(draft["image_size"])})  # a recipe may pick 240
size = c4.selectbox(_("Image size"), SIZES, index=SIZES.index(draft["image_size"]) if draft["image_size"] in SIZES else 0,
                    key="train_image_size", format_func=lambda s: _("backbone default (224)") if s == 0 else f"{s} px",
                    help=_("Smaller trains much faster on a CPU; the pretrained features are best near 224."))
c1, c2, c3 = st.columns(3)
optimizer = c1.selectbox(_("Optimizer"), ["adamw", "sgd"], index=["adamw", "sgd"].index(draft["optimizer"]),
                         key="train_optimizer", format_func=shown)
SCHEDULES = ["cosine", "onecycle", "constant"]
scheduler = c2.selectbox(_("Learning-rate schedule"), SCHEDULES, index=SCHEDULES.index(draft["scheduler"]),
                         key="train_scheduler", format_func=shown)
augment = c3.selectbox(_("Augmentation"), AUGMENTS, key="train_augment", format_func=shown,
                       index=AUGMENTS.index(draft["augment"]) if draft["augment"] in AUGMENTS else 1,
                       help=_("Random crops and flips (light), plus colour and geometry changes (strong), or your "
                              "own mix (custom): more variety from few images. 'none' with the head only embeds "
                              "each image once, which is much faster."))
train_live.start_custom(draft, augment)
common.set_fields(epochs=int(epochs), batch_size=int(batch), lr=float(lr), image_size=int(size),
                  optimizer=optimizer, scheduler=scheduler, augment=augment)
if augment == "custom":
    train_live.custom_augment(draft)

with st.expander(_("Preview: what the augmentation does to one training image")):
    train_live.augment_grid(ds, draft)

with st.expander(_("Advanced")):
    a, b, c = st.columns(3)
    smoothing = a.slider(_("Label smoothing"), 0.0, 0.3, float(draft["label_smoothing"]), 0.05, key="train_label_smoothing")
    wd = b.number_input(_("Weight decay"), 0.0, 1.0, float(draft["weight_decay"]), format="%.5f", step=1e-4,
                        key="train_weight_decay")
    clip = c.number_input(_("Gradient clipping (max norm, 0 = off)"), 0.0, 100.0, float(draft["grad_clip"]),
                          key="train_grad_clip")
    patience = a.number_input(_("Early stopping patience (epochs, 0 = off)"), 0, 100,
                              int(draft["early_stopping_patience"]), key="train_patience")
    seed = b.number_input(_("Seed"), 0, 10_000, int(draft["seed"]), key="train_seed")
    name = c.text_input(_("Run name (optional)"), draft["name"], key="train_name")
    weights = a.checkbox(_("Class-weighted loss (for imbalanced classes)"), bool(draft["class_weights"]),
                         key="train_class_weights")
    determ = b.checkbox(_("Deterministic algorithms (reproducible, slower)"), bool(draft["deterministic"]),
                        key="train_deterministic")
    if "early_stopping_metric" in draft:
        metric = c.selectbox(_("Best epoch and early stopping by"), ["val_acc", "val_loss"], key="train_es_metric",
                             index=["val_acc", "val_loss"].index(draft["early_stopping_metric"]),
                             format_func={"val_acc": _("validation accuracy"), "val_loss": _("validation loss")}.get)
        common.set_fields(early_stopping_metric=metric)
    common.set_fields(label_smoothing=float(smoothing), weight_decay=float(wd), grad_clip=float(clip),
                      early_stopping_patience=int(patience), seed=int(seed), name=name, class_weights=weights,
                      deterministic=determ)

with st.expander(_("Experiment tracking (optional)")):
    a, b = st.columns(2)
    use_tb = a.checkbox(_("Write TensorBoard event files"), bool(draft.get("tensorboard")), key="train_tensorboard")
    a.caption(_("Each run's files go to its `tensorboard/` folder; watch every run with {command}").format(
        command=f"`tensorboard --logdir {workspace.home() / 'runs'}`"))
    use_mlflow = b.checkbox(_("Log to an MLflow tracking server"), bool(draft.get("mlflow_uri")), key="train_mlflow")
    uri = b.text_input(_("MLflow tracking URI"), draft.get("mlflow_uri") or "http://127.0.0.1:5000",
                       key="train_mlflow_uri", disabled=not use_mlflow,
                       help=_("http://HOST:PORT of `mlflow server`, or file:///absolute/folder"))
    experiment = b.text_input(_("MLflow experiment"), draft.get("mlflow_experiment", "transfer-studio"),
                              key="train_mlflow_experiment", disabled=not use_mlflow)
    common.set_fields(tensorboard=use_tb, mlflow_uri=uri.strip() if use_mlflow else "", mlflow_experiment=experiment)
    for problem in tracking.missing(use_tb, draft["mlflow_uri"]):
        st.warning(_("{problem}. Training still works without it.").format(problem=common.md(problem)))

try:
    config = services.to_config(draft, services.dataset_dir(ds, common.owner()), owner=common.owner())
    config.validate()
except ValueError as e:
    st.error(_("The settings cannot train yet: {problem}").format(problem=common.md(e)))
    config = None
if config is not None:
    with st.expander(_("Find a learning rate (a short sweep over the training images)")):
        train_live.lr_finder(config)
layers = services.layer_label(draft['trainable'], draft['trainable_groups'])
st.caption(_("Dataset {name} · backbone {backbone} · layers {layers}").format(
    name=f"**{common.md(ds)}**",
    backbone=f"**{common.md(draft['backbone'])}**" + ("" if draft["pretrained"] else _(" (random init)")),
    layers=f"**{common.md(layers)}**"))

mgr = common.job_manager()
job, run = common.current_job(), common.current_run()
status = job.status() if job is not None else run.status() if run is not None else None
active = status in common.ACTIVE
gpus = common.gpus()
nproc = st.selectbox(_("GPUs (torchrun, DistributedDataParallel)"), list(range(1, gpus + 1)), index=gpus - 1,
                     key="train_gpus") if gpus > 1 else 1
b1, b2, b3, b4, b5 = st.columns(5)
if b1.button(_("Start training"), key="train_start", type="primary", disabled=active or config is None):
    job = services.start_job(mgr, config, owner=common.owner(), nproc=nproc)
    common.set_job(job.id)
    st.rerun()
if b2.button(_("Pause"), key="train_pause", disabled=not (active and status != "paused" and job is not None)):
    job.pause()
    st.rerun()
# Resume: a paused job of this server, or any run whose last.pt is intact and that no process holds (after a
# SIGKILL, an OOM kill, a full disk or a restart) — the lock, not this server's memory, says who trains it.
can_resume = (status == "paused" and job is not None) or (status not in common.ACTIVE and common.resumable(run, job))
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
