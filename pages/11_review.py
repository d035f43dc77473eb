"""11 · Review labels: suspected bad labels, outliers, duplicates and unusable images, most suspicious first.

Decisions (keep, relabel, remove) are collected in the session and applied as a new version of the dataset
(core.data.versions): the upload itself is never changed, and an older version can be restored.
Keyboard: K keep · A accept the suggestion · L relabel to the chosen class · X remove · ← → previous / next.
"""
from __future__ import annotations

import streamlit as st

from core.app import review
from pages import common

md = common.md  # user data (labels, paths, reasons) is escaped before Markdown renders it

common.entrypoint()
common.show_flash()
st.title("11 · Review labels")
st.write("A model that never saw an image's label predicts its class (5-fold logistic regression on frozen "
         "features, scored by cleanlab); disagreements, images unlike any class, duplicates across classes or "
         "splits, and nearly blank, dark or blurry images come first. Your decisions become a new version of "
         "the dataset; the original stays as it is.")
name = common.require_dataset()
me = common.owner()
ss = st.session_state

with st.expander("Versions of this dataset", expanded=False):
    vs = review.versions(name, me)
    st.dataframe(vs, key="review_versions", hide_index=True, width="stretch")
    older = [v["name"] for v in vs if v["name"] != name]
    if older:
        pick = st.selectbox("Version to restore", older, key="review_restore_pick")
        if st.button("Restore as a new current version", key="review_restore"):
            new = review.restore(name, pick, me)
            common.set_dataset(new)
            common.flash(f"Restored {pick} as {new}, now the current dataset.")
            st.rerun()

size = st.selectbox("Feature resolution", [0, 128, 64], key="review_size",
                    format_func=lambda s: "the backbone's own (224 px)" if s == 0 else f"{s} px (faster)")
if st.button("Find suspects", key="review_find", type="primary", icon=":material/search:"):
    update = common.progress_bar()
    ss["review_report"] = review.find(name, me, size, progress=lambda d, t: update("embedding images", d, t))
    ss["review_decisions"], ss["review_pos"] = {}, 0

report = ss.get("review_report")
if not report or report["dataset"] != name:
    st.info(f"Press **Find suspects** to check {md(name)}. Features are cached, so a second check takes seconds.")
    st.stop()
suspects, decisions = report["suspects"], ss.setdefault("review_decisions", {})
summary = report["summary"]
st.caption(f"{summary['images']} images, {len(suspects)} suspects "
           f"({', '.join(f'{k} {v}' for k, v in summary['by_reason'].items()) or 'none'}), "
           f"{summary['seconds']:.1f} s{' (features cached)' if summary['features_cached'] else ''}.")
if not suspects:
    st.success("Nothing looks wrong: no suspected label issues, outliers, duplicates or unusable images.")
    st.stop()

pos = min(max(ss.get("review_pos", 0), 0), len(suspects) - 1)
s = suspects[pos]


def decide(action: str, label: str | None = None) -> None:
    """Record the decision for the shown image and move to the next one."""
    decisions[s["path"]] = (action, label)
    ss["review_pos"] = min(pos + 1, len(suspects) - 1)


def move(step: int) -> None:
    ss["review_pos"] = min(max(pos + step, 0), len(suspects) - 1)


left, right = st.columns([1, 2])
with left:
    st.image(s["file"], caption=md(s["path"]), width="stretch")
with right:
    st.markdown(f"**Suspect {pos + 1} of {len(suspects)}** · score {s['score']:.3f}")
    st.markdown(f"Given label **{md(s['label'])}** · suggested "
                f"**{md(s['suggested']) if s['suggested'] else 'remove'}**")
    for reason in s["reasons"]:
        st.caption(md(reason))
    done = decisions.get(s["path"])
    st.markdown(f"Decision: **{md(done[0] + (' to ' + done[1] if done[1] else '')) if done else 'none yet'}**")
    b = st.columns(4)
    b[0].button("Keep", key="review_keep", shortcut="K", on_click=decide, args=("keep",), width="stretch")
    can_accept = bool(s["suggested"]) and s["suggested"] != s["label"]
    b[1].button("Accept suggestion", key="review_accept", shortcut="A", width="stretch", disabled=not can_accept,
                on_click=decide, args=("relabel", s["suggested"]))
    b[2].button("Remove", key="review_remove", shortcut="X", on_click=decide, args=("remove",), width="stretch")
    b[3].button("Next", key="review_next", shortcut="Right", on_click=move, args=(1,), width="stretch")
    c = st.columns([2, 1, 1])
    others = [k for k in report["classes"] if k != s["label"]]
    target = c[0].selectbox("Relabel to", others, key="review_class", label_visibility="collapsed")
    c[1].button("Relabel", key="review_relabel", shortcut="L", on_click=decide, args=("relabel", target),
                width="stretch")
    c[2].button("Previous", key="review_prev", shortcut="Left", on_click=move, args=(-1,), width="stretch")

st.markdown("**Nearest images in the dataset**")
for col, f, lab in zip(st.columns(len(s["neighbour_files"]) or 1), s["neighbour_files"], s["neighbour_labels"]):
    col.image(f, caption=md(lab), width="stretch")

rows = [{"#": i + 1, "path": x["path"], "label": x["label"], "suggested": x["suggested"] or "(remove)",
         "score": round(x["score"], 3), "reason": "; ".join(x["reasons"]),
         "decision": " ".join(filter(None, decisions.get(x["path"], ("",))))} for i, x in enumerate(suspects)]
picked = st.dataframe(rows, key="review_table", hide_index=True, width="stretch", on_select="rerun",
                      selection_mode="single-row")
chosen = picked.selection.rows if picked else []
if chosen and chosen[0] != ss.get("review_table_last"):  # a click on a row opens that suspect
    ss["review_table_last"] = ss["review_pos"] = chosen[0]
    st.rerun()

changes = {p: d for p, d in decisions.items() if d[0] != "keep"}
st.download_button("Download decisions (CSV)", review.decisions_csv(decisions), file_name=f"{name}-decisions.csv",
                   key="review_download", disabled=not decisions)
if st.button(f"Apply {len(changes)} change(s) as a new version", key="review_apply", type="primary",
             disabled=not changes):
    try:
        new = review.apply(name, decisions, me)
    except ValueError as e:
        st.error(md(str(e)))
        st.stop()
    common.set_dataset(new)
    for k in ("review_report", "review_decisions", "review_pos", "review_table_last"):
        ss.pop(k, None)
    common.flash(f"Wrote {new} ({len(changes)} change(s)); it is now the current dataset. {name} is unchanged.")
    st.rerun()
common.link("data", "Back to 1 · Data")
