"""2 · Backbone: pick the pretrained network whose features the new classifier builds on."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.app import services
from pages import common

common.entrypoint()
st.title("2 · Backbone")
st.write("The backbone is a network already trained on ImageNet (1.3 million photos, 1000 classes). Its "
         "features are reused and a new head learns your classes; on the Layers step you choose whether some "
         "of the backbone's layers adapt too. Small backbones train fast on a CPU; large ones are more accurate "
         "but need a GPU. EfficientNet-Lite0 ships with its weights and works with no network at all.")


@st.cache_data(ttl=60, show_spinner=False)
def backbone_rows(owner: str | None) -> list[dict]:
    return services.backbone_table(owner)  # the registry, then the backbones this user adapted


rows = backbone_rows(common.owner())
table = pd.DataFrame(rows).set_index("name")
st.dataframe(table, key="bb_table", width="stretch",
             column_config={"params (M)": st.column_config.NumberColumn(format="%.3g"),
                            "ImageNet top-1 (%)": st.column_config.NumberColumn(format="%.1f")})
st.caption("Parameters are counted without the ImageNet classifier (1000 classes), which the app replaces "
           "with a new head for your classes; every step counts the same way.")

draft = common.draft()
names = [r["name"] for r in rows]
name = st.selectbox("Backbone", names, index=names.index(draft["backbone"]) if draft["backbone"] in names else 0,
                    key="bb_name", format_func=lambda n: f"{n} — {table.loc[n, 'title']}")
random_init = st.checkbox("Random initialisation (baseline, no pretrained weights)", value=not draft["pretrained"],
                          key="bb_random_init",
                          help="Trains the same network from scratch: shows how much the pretrained features help.")
common.set_fields(backbone=name, pretrained=not random_init)

row = table.loc[name]
st.write(f"**{common.md(row['title'])}**: {row['params (M)']:.3g} M parameters, {row['input']}-pixel input, "
         f"{row['groups']} layer groups"
         + (f", ImageNet top-1 {row['ImageNet top-1 (%)']}%." if pd.notna(row["ImageNet top-1 (%)"]) else "."))
if row["note"]:
    st.caption(common.md(row["note"]))  # an adapted backbone's note names its dataset
if random_init:
    st.info("Random initialisation: every layer starts from scratch, so train all layers (Layers step) and "
            "expect lower accuracy on small datasets — that is the point of the baseline.")
elif row["weights"] == "download":
    offline = [r["name"] for r in rows if r["weights"] != "download"]
    st.warning(f"The ImageNet weights of {common.md(name)} are not on this machine. Training downloads them once "
               f"(network needed); without a network, tick random initialisation or pick one available "
               f"offline: {', '.join(offline)}.")
else:
    st.success(f"Weights are available on this machine ({row['weights']}).")
common.link("layers", "Next: 3 · Layers")
