"""2 · Backbone: pick the pretrained network whose features the new classifier builds on."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.app import services
from core.app.engine import i18n
from pages import common, text_steps

_, N_ = i18n.gettext, i18n.N_
# where a backbone's weights are (the registry's weights_status, an adapted backbone's "adapted"), as shown
WEIGHTS = {"bundled": N_("bundled"), "cached": N_("cached"), "download": N_("download"), "local": N_("local"),
           "adapted": N_("adapted")}

common.entrypoint()
st.title(_("2 · Backbone"))
if common.is_text():  # a text dataset: the sentence encoders (pages/text_steps.py)
    text_steps.backbone(common.draft())
    st.stop()
st.write(_("The backbone is a network already trained on ImageNet (1.3 million photos, 1000 classes). Its "
           "features are reused and a new head learns your classes; on the Layers step you choose whether some "
           "of the backbone's layers adapt too. Small backbones train fast on a CPU; large ones are more accurate "
           "but need a GPU. EfficientNet-Lite0 ships with its weights and works with no network at all."))


@st.cache_data(ttl=60, show_spinner=False)
def backbone_rows(owner: str | None) -> list[dict]:
    return services.backbone_table(owner)  # the registry, then the backbones this user adapted


rows = backbone_rows(common.owner())
table = pd.DataFrame(rows).set_index("name")
def _tr(text):
    """A registry text (a title or note marked N_ in core) in the session's language; other values as they are."""
    return _(text) if isinstance(text, str) and text else text


shown = table.assign(weights=table["weights"].map(lambda w: _(WEIGHTS[w]) if w in WEIGHTS else w),
                     title=table["title"].map(_tr), note=table["note"].map(_tr))
# the columns keep their keys (code and tests read them); column_config gives each its label in the session's language
st.dataframe(shown, key="bb_table", width="stretch",
             column_config={"name": _("name"), "title": _("title"),
                            "params (M)": st.column_config.NumberColumn(_("params (M)"), format="%.3g"),
                            "input": _("input"),
                            "ImageNet top-1 (%)": st.column_config.NumberColumn(_("ImageNet top-1 (%)"), format="%.1f"),
                            "weights": _("weights"), "groups": _("groups"), "note": _("note")})
st.caption(_("Parameters are counted without the ImageNet classifier (1000 classes), which the app replaces "
             "with a new head for your classes; every step counts the same way."))

draft = common.draft()
names = [r["name"] for r in rows]
name = st.selectbox(_("Backbone"), names, index=names.index(draft["backbone"]) if draft["backbone"] in names else 0,
                    key="bb_name", format_func=lambda n: f"{n} — {_tr(table.loc[n, 'title'])}")
random_init = st.checkbox(_("Random initialisation (baseline, no pretrained weights)"), value=not draft["pretrained"],
                          key="bb_random_init",
                          help=_("Trains the same network from scratch: shows how much the pretrained features help."))
common.set_fields(backbone=name, pretrained=not random_init)

row = table.loc[name]
facts = dict(params=f"{row['params (M)']:.3g}", input=row["input"], groups=row["groups"])
st.write(f"**{common.md(_tr(row['title']))}**: "
         + (_("{params} M parameters, {input}-pixel input, {groups} layer groups, ImageNet top-1 {top1}%.").format(
             top1=row["ImageNet top-1 (%)"], **facts) if pd.notna(row["ImageNet top-1 (%)"])
            else _("{params} M parameters, {input}-pixel input, {groups} layer groups.").format(**facts)))
if row["note"]:
    st.caption(common.md(_tr(row["note"])))  # an adapted backbone's note names its dataset
if random_init:
    st.info(_("Random initialisation: every layer starts from scratch, so train all layers (Layers step) and "
              "expect lower accuracy on small datasets — that is the point of the baseline."))
elif row["weights"] == "download":
    offline = [r["name"] for r in rows if r["weights"] != "download"]
    st.warning(_("The ImageNet weights of {name} are not on this machine. Training downloads them once (network "
                 "needed); without a network, tick random initialisation or pick one available offline: "
                 "{offline}.").format(name=common.md(name), offline=", ".join(offline)))
else:
    st.success(_("Weights are available on this machine ({where}).").format(
        where=_(WEIGHTS[row["weights"]]) if row["weights"] in WEIGHTS else row["weights"]))
common.link("layers", _("Next: 3 · Layers"))
