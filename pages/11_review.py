"""11 · Review labels: suspected bad labels, outliers, duplicates and unusable images, most suspicious first.

Decisions (keep, relabel, remove) are collected in the session and applied as a new version of the dataset
(core.data.versions): the upload itself is never changed, and an older version can be restored.
Keyboard: K keep · A accept the suggestion · L relabel to the chosen class · X remove · ← → previous / next.
"""
from __future__ import annotations

import streamlit as st

from core.app import review
from core.app.engine import i18n
from pages import common

_, N_ = i18n.gettext, i18n.N_
md = common.md  # user data (labels, paths, reasons) is escaped before Markdown renders it
# the kinds of reason label_issues gives a suspect (the text before its first colon), counted in the summary
REASONS = {"label issue": N_("label issue"), "duplicate": N_("duplicate"), "outlier": N_("outlier")}


def said(reason) -> str:
    """A suspect's reason in the session's language (core's Message has ``shown()``; plain text shows as it is)."""
    return reason.shown() if hasattr(reason, "shown") else str(reason)


def action_text(done: tuple | None) -> str:
    """A decision (action, label) in words: keep, remove, relabel to <label>; '' when none is taken."""
    if not done:
        return ""
    action, label = done
    if action == "relabel":
        return _("relabel to {label}").format(label=label)
    return _("keep") if action == "keep" else _("remove") if action == "remove" else action


common.entrypoint()
common.show_flash()
st.title(_("11 · Review labels"))
st.write(_("A model that never saw an image's label predicts its class (5-fold logistic regression on frozen "
           "features, scored by cleanlab); disagreements, images unlike any class, duplicates across classes or "
           "splits, and nearly blank, dark or blurry images come first. Your decisions become a new version of "
           "the dataset; the original stays as it is."))
name = common.require_dataset()
if common.is_text(name):
    st.info(_("Label review looks at images; {name} is a text dataset. Its health report on 1 · Data lists "
              "empty and duplicate rows, the same text under different labels and train/validation "
              "leakage.").format(name=f"**{md(name)}**"))
    common.link("data", _("Open 1 · Data"))
    st.stop()
me = common.owner()
ss = st.session_state

with st.expander(_("Versions of this dataset"), expanded=False):
    vs = review.versions(name, me)
    st.dataframe(vs, key="review_versions", hide_index=True, width="stretch",
                 column_config={k: st.column_config.Column(label) for k, label in (
                     ("name", _("name")), ("number", _("version")), ("parent", _("made from")), ("time", _("time")),
                     ("relabelled", _("relabelled")), ("removed", _("removed")))})
    older = [v["name"] for v in vs if v["name"] != name]
    if older:
        pick = st.selectbox(_("Version to restore"), older, key="review_restore_pick")
        if st.button(_("Restore as a new current version"), key="review_restore"):
            new = review.restore(name, pick, me)
            common.set_dataset(new)
            common.flash(_("Restored {version} as {new}, now the current dataset.").format(version=pick, new=new))
            st.rerun()

size = st.selectbox(_("Feature resolution"), [0, 128, 64], key="review_size",
                    format_func=lambda s: _("the backbone's own (224 px)") if s == 0 else
                    _("{size} px (faster)").format(size=s))
if st.button(_("Find suspects"), key="review_find", type="primary", icon=":material/search:"):
    update = common.progress_bar()
    stage = _("embedding images")
    ss["review_report"] = review.find(name, me, size, progress=lambda d, t: update(stage, d, t))
    ss["review_decisions"], ss["review_pos"] = {}, 0

report = ss.get("review_report")
if not report or report["dataset"] != name:
    st.info(_("Press **Find suspects** to check {dataset}. Features are cached, so a second check takes seconds.")
            .format(dataset=md(name)))
    st.stop()
suspects, decisions = report["suspects"], ss.setdefault("review_decisions", {})
summary = report["summary"]
by_reason = ", ".join(f"{_(REASONS[k]) if k in REASONS else k} {v}" for k, v in summary["by_reason"].items())
st.caption((_("{images} images, {suspects} suspects ({reasons}), {seconds} s (features cached).")
            if summary["features_cached"] else _("{images} images, {suspects} suspects ({reasons}), {seconds} s."))
           .format(images=summary["images"], suspects=len(suspects), reasons=md(by_reason or _("none")),
                   seconds=f"{summary['seconds']:.1f}"))
if not suspects:
    st.success(_("Nothing looks wrong: no suspected label issues, outliers, duplicates or unusable images."))
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
    st.markdown(_("**Suspect {n} of {total}** · score {score}").format(n=pos + 1, total=len(suspects),
                                                                       score=f"{s['score']:.3f}"))
    st.markdown(_("Given label **{label}** · suggested **{suggested}**").format(
        label=md(s["label"]), suggested=md(s["suggested"]) if s["suggested"] else _("remove")))
    for reason in s["reasons"]:
        st.caption(md(said(reason)))
    done = decisions.get(s["path"])
    st.markdown(_("Decision: **{decision}**").format(decision=md(action_text(done)) if done else _("none yet")))
    b = st.columns(4)
    b[0].button(_("Keep"), key="review_keep", shortcut="K", on_click=decide, args=("keep",), width="stretch")
    can_accept = bool(s["suggested"]) and s["suggested"] != s["label"]
    b[1].button(_("Accept suggestion"), key="review_accept", shortcut="A", width="stretch", disabled=not can_accept,
                on_click=decide, args=("relabel", s["suggested"]))
    b[2].button(_("Remove"), key="review_remove", shortcut="X", on_click=decide, args=("remove",), width="stretch")
    b[3].button(_("Next"), key="review_next", shortcut="Right", on_click=move, args=(1,), width="stretch")
    c = st.columns([2, 1, 1])
    others = [k for k in report["classes"] if k != s["label"]]
    target = c[0].selectbox(_("Relabel to"), others, key="review_class", label_visibility="collapsed")
    c[1].button(_("Relabel"), key="review_relabel", shortcut="L", on_click=decide, args=("relabel", target),
                width="stretch")
    c[2].button(_("Previous"), key="review_prev", shortcut="Left", on_click=move, args=(-1,), width="stretch")

st.markdown(_("**Nearest images in the dataset**"))
for col, f, lab in zip(st.columns(len(s["neighbour_files"]) or 1), s["neighbour_files"], s["neighbour_labels"]):
    col.image(f, caption=md(lab), width="stretch")

rows = [{"#": i + 1, "path": x["path"], "label": x["label"], "suggested": x["suggested"] or _("(remove)"),
         "score": round(x["score"], 3), "reason": "; ".join(map(said, x["reasons"])),
         "decision": action_text(decisions.get(x["path"]))} for i, x in enumerate(suspects)]
picked = st.dataframe(rows, key="review_table", hide_index=True, width="stretch", on_select="rerun",
                      selection_mode="single-row",
                      column_config={k: st.column_config.Column(label) for k, label in (
                          ("path", _("path")), ("label", _("label")), ("suggested", _("suggested")),
                          ("score", _("score")), ("reason", _("reason")), ("decision", _("decision")))})
chosen = picked.selection.rows if picked else []
if chosen and chosen[0] != ss.get("review_table_last"):  # a click on a row opens that suspect
    ss["review_table_last"] = ss["review_pos"] = chosen[0]
    st.rerun()

changes = {p: d for p, d in decisions.items() if d[0] != "keep"}
st.download_button(_("Download decisions (CSV)"), review.decisions_csv(decisions), file_name=f"{name}-decisions.csv",
                   key="review_download", disabled=not decisions)
if st.button(i18n.ngettext("Apply {n} change as a new version", "Apply {n} changes as a new version",
                            len(changes)).format(n=len(changes)), key="review_apply", type="primary",
             disabled=not changes):
    try:
        new = review.apply(name, decisions, me)
    except ValueError as e:
        st.error(md(str(e)))
        st.stop()
    common.set_dataset(new)
    for k in ("review_report", "review_decisions", "review_pos", "review_table_last"):
        ss.pop(k, None)
    common.flash(i18n.ngettext("Wrote {new} ({n} change); it is now the current dataset. {name} is unchanged.",
                               "Wrote {new} ({n} changes); it is now the current dataset. {name} is unchanged.",
                               len(changes)).format(new=new, n=len(changes), name=name))
    st.rerun()
common.link("data", _("Back to 1 · Data"))
