"""8 · Distill: a finished run teaches a smaller student (knowledge distillation, Hinton et al. 2015)."""
from __future__ import annotations

import streamlit as st

from core.app import charts
from core.app import services, text_services
from core.app.engine import i18n
from pages import common, technique_tools as tt, train_live

_ = i18n.gettext

common.entrypoint()
st.title(_("8 · Distill"))
st.write(_("Distillation trains a small, fast student to imitate a big teacher you already trained, learning from "
           "the teacher's soft probabilities as well as the labels. Use it when your best model is too slow or too "
           "large to deploy and a smaller backbone trained alone falls short of it."))

teachers = [i for i in common.finished_runs()
            if common.technique_of(services.open_run(i, common.owner())) in (None, "distill", "text")]
if not teachers:
    st.info(_("Distillation needs a teacher: a finished training run with a checkpoint, and there is none yet. "
              "Train one first (a large backbone makes the best teacher)."))
    common.link("train", _("Go to 4 · Train"))
    st.stop()
common.show_damaged()

d = common.draft()
current = st.session_state.get("job")
teacher = st.selectbox(_("Teacher run"), teachers, index=teachers.index(current) if current in teachers else 0,
                       key="distill_teacher", format_func=common.run_label)
tcfg = services.open_run(teacher, common.owner()).config()
text = tcfg.technique == "text"  # issue 17: a text teacher teaches a smaller text encoder (text_distill)
names = text_services.student_names() if text else [r["name"] for r in services.backbone_table(common.owner())]
preferred = next((n for n in ("mobilenet_v3_small", "efficientnet_lite0") if n in names and n != tcfg.backbone),
                 names[0])
c1, c2, c3, c4 = st.columns(4)
student = c1.selectbox(_("Student backbone"), names, index=names.index(preferred), key="distill_student")
alpha = c2.slider(_("alpha (weight of the true labels)"), 0.0, 1.0, 0.5, 0.05, key="distill_alpha",
                  help=_("1 trains the student on the labels alone: the baseline without a teacher."))
temperature = c3.slider(_("Temperature T"), 1.0, 10.0, 4.0, 0.5, key="distill_temperature",
                        help=_("Higher T softens the teacher's probabilities and passes on more of what it knows "
                               "about similar classes."))
epochs = c4.number_input(_("Epochs"), 1, 500, int(d["epochs"]), key="distill_epochs")
if text:
    max_length = st.number_input(_("Max length (tokens)"), 8, 512, int(tcfg.max_length or 128),
                                 key="distill_max_length", help=_("Tokens kept per text; longer texts are cut. "
                                                                  "Default: the teacher's."))
    st.caption(_("The text student learns on the teacher's texts ({data}) with the layer settings of your draft "
                 "(the text recipe when the draft holds image choices); the teacher's logits are computed once per "
                 "text.").format(data=common.md(tcfg.dataset or tcfg.data)))
else:
    st.caption(_("The student learns on the teacher's data ({data}) with the layer and optimizer settings of your "
                 "draft; "
                 "augmentation is off because the teacher's logits are computed once, on the centre crop.").format(
        data=common.md(tcfg.dataset or tcfg.data)))

kind = "text_distill" if text else "distill"
run, job, active = tt.current(kind)


def distill_config():
    """The student's config: the draft's settings on the teacher's data, this user's teacher run."""
    if text:
        return text_services.distill_config(d, teacher, student, alpha, temperature, int(epochs), int(max_length),
                                            common.owner())
    cfg = services.to_config(d, tcfg.data, common.owner(), backbone=student, augment="none", trainable_groups=None,
                             epochs=int(epochs), name=f"{student} distilled from {tcfg.backbone}")
    cfg.technique, cfg.teacher = "distill", teacher
    cfg.distill_alpha, cfg.distill_temperature = float(alpha), float(temperature)
    return cfg


if st.button(_("Start distillation"), key="distill_start", type="primary", disabled=active):
    tt.start(distill_config, "distill")

if run is not None:
    train_live.monitor(active)
    status = job.status() if job is not None else run.status()
    if status == "finished":
        st.subheader(_("Teacher versus students"))
        st.write(_("Accuracy on the student's validation split, agreement with the teacher's top-1, size and CPU "
                   "latency. Train once more with alpha = 1 to add the same student without a teacher."))
        rcfg = run.config()
        peers = {r.id: r for r in common.user_runs() if r.best_weights.exists() and common.technique_of(r) == kind
                 and r.config().teacher == rcfg.teacher}
        students = {_("student {backbone} α={alpha} ({run})").format(backbone=r.config().backbone,
                                                                      alpha=r.config().distill_alpha, run=rid[:15]): rid
                    for rid, r in peers.items()}
        stored = st.session_state.get("distill_result")
        if stored is None or stored[0] != sorted(students.values()):
            if st.button(_("Compare"), key="distill_compare"):
                with st.spinner(_("Scoring every model on the validation split…")):
                    try:
                        compare = text_services.distill_compare if text else services.distill_compare
                        rows = compare(rcfg.teacher, students, common.owner())
                    except ValueError as e:
                        st.error(common.md(e))
                        st.stop()
                st.session_state["distill_result"] = (sorted(students.values()), rows)
                st.rerun()
        else:
            rows = stored[1]
            shown = [{**r, "model": _("teacher") if r["model"] == "teacher" else r["model"]} for r in rows]
            st.dataframe(shown, key="distill_table", hide_index=True, width="stretch",
                         column_config={"model": st.column_config.TextColumn(_("model")),
                                        "backbone": st.column_config.TextColumn(_("backbone")),
                                        "accuracy": st.column_config.NumberColumn(_("accuracy"), format="percent"),
                                        "agreement_with_teacher": st.column_config.NumberColumn(
                                            _("agreement with teacher"), format="percent"),
                                        "parameters": st.column_config.NumberColumn(_("parameters")),
                                        "size_mb": st.column_config.NumberColumn(_("size (MB)"), format="%.3g"),
                                        "latency_ms": st.column_config.NumberColumn(_("CPU latency (ms)"),
                                                                                    format="%.3g")})
            st.plotly_chart(charts.distill_comparison(rows), key="distill_chart", width="stretch")
