"""3 · Layers: decide which layer groups of the backbone learn, with live parameter counts."""
from __future__ import annotations

import streamlit as st

from core.app.engine import edits as de
from core.app import services
from pages import common

common.entrypoint()
st.title("3 · Layers")
st.write("A backbone is a stack of layer groups, from the stem (edges, colours) to the last stages "
         "(object parts). Frozen groups keep their ImageNet weights; trainable groups adapt to your data. "
         "The fewer images you have, the fewer groups should learn.")

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
    st.error(str(e))
    common.link("backbone", "Choose a backbone on 2 · Backbone")
    st.stop()


@st.cache_resource(show_spinner="Counting parameters…")
def param_counts(name: str, n_classes: int) -> dict[str, int]:
    return services.group_param_counts(name, n_classes)


sizes = param_counts(backbone, num_classes)
rec = services.recommend(counts)
st.info(f"Suggestion for {common.md(ds or 'your data')}: **{services.LAYER_CHOICES[services.layer_choice(rec['trainable'])][0]}**"
        f" — {rec['reason']}.")

if draft["trainable_groups"] is not None and not set(draft["trainable_groups"]) <= set(groups):
    common.set_fields(trainable_groups=None)  # chosen for another backbone
now = services.describe_layers(backbone, draft["trainable"], draft["trainable_groups"], num_classes)
choices = list(services.LAYER_CHOICES)
preset = st.radio("Which layers learn", choices, index=choices.index(now["choice"]), key="layers_preset",
                  format_func=lambda c: services.LAYER_CHOICES[c][0], horizontal=True)
st.caption(services.LAYER_CHOICES[preset][1])

if preset == "custom":
    start = now["groups"]  # a custom choice starts from what the previous choice trained
    chosen = [g for g in groups if st.toggle(f"{g} ({sizes[g]:,} parameters)", value=g in start or g == "head",
                                             key=f"layers_group_{g}", disabled=g == "head")]
    common.set_fields(trainable_groups=chosen)
else:
    chosen = services.trainable_preset(groups, preset)
    common.set_fields(trainable={"last": "last-2"}.get(preset, preset), trainable_groups=None)

trainable = sum(sizes[g] for g in chosen)
total = sum(sizes.values())
c1, c2, c3 = st.columns(3)
c1.metric("Trainable parameters", f"{trainable:,}")
c2.metric("Total parameters", f"{total:,}")
c3.metric("Share of weights that learn", f"{trainable / total:.1%}")
st.caption(f"Counted without the ImageNet classifier (1000 classes), which the app replaces: the backbone's "
           f"{(total - sizes['head']) / 1e6:.3g} M parameters, as on the Backbone step, plus a new head of "
           f"{sizes['head']:,} for your {num_classes} classes.")
st.dataframe([{"group": g, "parameters": sizes[g], "share": 100 * sizes[g] / total, "learns": g in chosen}
              for g in groups], key="layers_table", hide_index=True, width="stretch",
             column_config={"parameters": st.column_config.NumberColumn(format="localized"),
                            "share": st.column_config.NumberColumn(format="%.3g %%")})  # three significant digits
st.caption("BatchNorm layers inside frozen groups stay in eval mode: their running statistics keep the "
           "ImageNet values instead of drifting with small batches of your data.")

if len(chosen) > 1:
    decay = st.slider("Discriminative learning rate: each group toward the stem learns at lr × factor^k",
                      0.1, 1.0, float(draft["lr_decay"]), 0.05, key="layers_lr_decay",
                      help="1.0 = the same rate everywhere; 0.5 halves it per group, so early layers change least.")
    common.set_fields(lr_decay=float(decay))
    if "unfreeze_after" in draft:
        st.markdown("**Gradual unfreezing** — train the new head alone first, so its random start does not send "
                    "large gradients into the pretrained layers, then let the chosen groups learn.")
        a, b, c = st.columns(3)
        after = a.number_input("Head-only epochs first (0 = off)", 0, max(int(draft["epochs"]) - 1, 0),
                               min(int(draft["unfreeze_after"]), max(int(draft["epochs"]) - 1, 0)),
                               key="layers_unfreeze_after", help="Must be fewer than the epochs set on the Train step.")
        mode = b.selectbox("Then unfreeze", ["all", "gradual"], index=["all", "gradual"].index(draft["unfreeze_mode"]),
                           key="layers_unfreeze_mode", disabled=after == 0,
                           format_func={"all": "all chosen groups at once",
                                        "gradual": "one more group per epoch, toward the stem"}.get)
        factor = c.slider("Body learning rate = head lr ×", 0.01, 1.0, float(draft["unfreeze_lr_factor"]), 0.01,
                          key="layers_unfreeze_lr_factor", disabled=after == 0)
        common.set_fields(unfreeze_after=int(after), unfreeze_mode=mode, unfreeze_lr_factor=float(factor))
elif draft.get("unfreeze_after"):
    common.set_fields(unfreeze_after=0)  # nothing left to unfreeze with the head alone
common.link("train", "Next: 4 · Train")
