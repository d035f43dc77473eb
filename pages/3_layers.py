"""3 · Layers: decide which layer groups of the backbone learn, with live parameter counts."""
from __future__ import annotations

import streamlit as st

from core.app.engine import edits as de
from core.app import services
from core.app.engine import i18n
from pages import common, text_steps

_ = i18n.gettext

common.entrypoint()
st.title(_("3 · Layers"))
if common.is_text():  # a text dataset: embeddings and transformer blocks (pages/text_steps.py)
    text_steps.layers(common.dataset(), common.draft())
    st.stop()
st.write(_("A backbone is a stack of layer groups, from the stem (edges, colours) to the last stages "
           "(object parts). Frozen groups keep their ImageNet weights; trainable groups adapt to your data. "
           "The fewer images you have, the fewer groups should learn."))

draft = common.draft()
backbone = draft["backbone"]
ds = common.dataset()
try:
    counts = de.class_counts(ds) if ds else {}
except ValueError:  # a CSV-labelled dataset has no class folders to count
    counts = {}
num_classes = max(len(counts), 2)
try:
    groups = services.backbone_groups(backbone)
except ValueError as e:  # e.g. an adapted backbone whose run was deleted since it was chosen
    st.error(common.md(e))
    common.link("backbone", _("Choose a backbone on 2 · Backbone"))
    st.stop()


@st.cache_resource(show_spinner=_("Counting parameters…"))
def param_counts(name: str, n_classes: int) -> dict[str, int]:
    return services.group_param_counts(name, n_classes)


sizes = param_counts(backbone, num_classes)
rec = services.recommend(counts)
st.info(_("Suggestion for {name}: {choice} — {reason}.").format(
    name=common.md(ds) if ds else _("your data"),
    choice=f"**{_(services.LAYER_CHOICES[services.layer_choice(rec['trainable'])][0])}**", reason=rec["reason"]))

if draft["trainable_groups"] is not None and not set(draft["trainable_groups"]) <= set(groups):
    common.set_fields(trainable_groups=None)  # chosen for another backbone
now = services.describe_layers(backbone, draft["trainable"], draft["trainable_groups"], num_classes)
choices = list(services.LAYER_CHOICES)
preset = st.radio(_("Which layers learn"), choices, index=choices.index(now["choice"]), key="layers_preset",
                  format_func=lambda c: _(services.LAYER_CHOICES[c][0]), horizontal=True)
st.caption(_(services.LAYER_CHOICES[preset][1]))

if preset == "custom":
    start = now["groups"]  # a custom choice starts from what the previous choice trained
    chosen = [g for g in groups if st.toggle(_("{group} ({n} parameters)").format(group=g, n=f"{sizes[g]:,}"),
                                             value=g in start or g == "head",
                                             key=f"layers_group_{g}", disabled=g == "head")]
    common.set_fields(trainable_groups=chosen)
else:
    chosen = services.trainable_preset(groups, preset)
    common.set_fields(trainable={"last": "last-2"}.get(preset, preset), trainable_groups=None)

trainable = sum(sizes[g] for g in chosen)
total = sum(sizes.values())
c1, c2, c3 = st.columns(3)
c1.metric(_("Trainable parameters"), f"{trainable:,}")
c2.metric(_("Total parameters"), f"{total:,}")
c3.metric(_("Share of weights that learn"), i18n.format_percent(trainable / total))
st.caption(_("Counted without the ImageNet classifier (1000 classes), which the app replaces: the backbone's "
             "{body} M parameters, as on the Backbone step, plus a new head of {head} for your {n} classes.").format(
    body=f"{(total - sizes['head']) / 1e6:.3g}", head=f"{sizes['head']:,}", n=num_classes))
st.dataframe([{"group": g, "parameters": sizes[g], "share": 100 * sizes[g] / total, "learns": g in chosen}
              for g in groups], key="layers_table", hide_index=True, width="stretch",
             column_config={"group": _("group"),  # keys stay English (tests read them); labels are translated
                            "parameters": st.column_config.NumberColumn(_("parameters"), format="localized"),
                            "share": st.column_config.NumberColumn(_("share"), format="%.3g %%"),  # 3 significant digits
                            "learns": st.column_config.CheckboxColumn(_("learns"))})
st.caption(_("BatchNorm layers inside frozen groups stay in eval mode: their running statistics keep the "
             "ImageNet values instead of drifting with small batches of your data."))

if len(chosen) > 1:
    decay = st.slider(_("Discriminative learning rate: each group toward the stem learns at lr × factor^k"),
                      0.1, 1.0, float(draft["lr_decay"]), 0.05, key="layers_lr_decay",
                      help=_("1.0 = the same rate everywhere; 0.5 halves it per group, so early layers change least."))
    common.set_fields(lr_decay=float(decay))
    if "unfreeze_after" in draft:
        st.markdown(_("**Gradual unfreezing** — train the new head alone first, so its random start does not send "
                      "large gradients into the pretrained layers, then let the chosen groups learn."))
        a, b, c = st.columns(3)
        after = a.number_input(_("Head-only epochs first (0 = off)"), 0, max(int(draft["epochs"]) - 1, 0),
                               min(int(draft["unfreeze_after"]), max(int(draft["epochs"]) - 1, 0)),
                               key="layers_unfreeze_after", help=_("Must be fewer than the epochs set on the Train step."))
        mode = b.selectbox(_("Then unfreeze"), ["all", "gradual"], index=["all", "gradual"].index(draft["unfreeze_mode"]),
                           key="layers_unfreeze_mode", disabled=after == 0,
                           format_func={"all": _("all chosen groups at once"),
                                        "gradual": _("one more group per epoch, toward the stem")}.get)
        factor = c.slider(_("Body learning rate = head lr ×"), 0.01, 1.0, float(draft["unfreeze_lr_factor"]), 0.01,
                          key="layers_unfreeze_lr_factor", disabled=after == 0)
        common.set_fields(unfreeze_after=int(after), unfreeze_mode=mode, unfreeze_lr_factor=float(factor))
elif draft.get("unfreeze_after"):
    common.set_fields(unfreeze_after=0)  # nothing left to unfreeze with the head alone
common.link("train", _("Next: 4 · Train"))
