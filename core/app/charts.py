"""Plotly figure builders: pure functions from events and metrics to figures (no torch, no streamlit).

Class labels, task names and run names are user data, and Plotly renders a subset of HTML in axis
ticks, legends and hover labels (``<a href>``, ``<b>``, ``<span style>``...). Every such string goes
through ``text()`` first: its HTML characters become entities, which Plotly shows as the characters.
Titles, axis titles, legends and hover texts are in the current language (build a figure per language).
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.i18n import _

_LAYOUT = {"margin": {"l": 40, "r": 10, "t": 40, "b": 40}, "height": 320, "legend": {"orientation": "h", "y": -0.2}}


def text(value: object) -> str:
    """``value`` as literal Plotly text: no tag (link, style, line break) it holds is rendered."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _texts(values) -> list[str]:
    return [text(v) for v in values]


def class_counts(counts: dict[str, int], title: str | None = None) -> go.Figure:
    """Bar chart of images per class (``title``: default "Images per class")."""
    fig = go.Figure(go.Bar(x=_texts(counts), y=list(counts.values()), marker_color="#4c78a8"))
    fig.update_layout(title=title or _("Images per class"), xaxis_title=_("class"), yaxis_title=_("images"),
                      **_LAYOUT)
    return fig


def smoothing_beta(total_steps: int) -> float:
    """The moving average's decay for a run of ``total_steps``: it averages over about 1/20 of the run."""
    # fastai's 0.98 (about 50 steps) suits thousands of steps; a 30-step run needs a window of 2 or 3
    # steps, or the line trails the loss by a third of the run.
    return min(0.98, max(0.5, 1.0 - 20.0 / max(total_steps, 1)))


def smoothed(values: list[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average (as in Adam and fastai's SmoothenValue)."""
    out, avg = [], 0.0
    for t, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** t))  # the correction makes the first value the first raw value
    return out


def step_loss(events: list[dict]) -> go.Figure:
    """Training loss per step, with its bias-corrected moving average."""
    steps = [e for e in events if e.get("type") == "step"]
    x = [e["step"] for e in steps]
    y = [e["loss"] for e in steps]
    total = steps[-1].get("total_steps", len(steps)) if steps else 0  # fixed for the run, so the line is stable
    smooth = smoothed(y, smoothing_beta(total))
    fig = go.Figure([go.Scatter(x=x, y=y, mode="lines", name=_("loss"), line={"width": 1, "color": "#9ecae9"}),
                     go.Scatter(x=x, y=smooth, mode="lines", name=_("smoothed"), line={"color": "#1f77b4"})])
    _mark_unfreezes(fig, events, x_key="step")
    fig.update_layout(title=_("Training loss per step"), xaxis_title=_("step"), yaxis_title=_("loss"), **_LAYOUT)
    return waiting(fig, not steps)


def waiting(fig: go.Figure, empty: bool, message: str | None = None) -> go.Figure:
    """Hide the axes of a chart with no data yet (Plotly draws a meaningless -1..1 grid) and say what it waits for
    (default: the first step)."""
    if empty:
        fig.update_xaxes(visible=False).update_yaxes(visible=False)
        fig.add_annotation(text=message or _("Waiting for the first step…"), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                           font={"size": 16, "color": "grey"})
    return fig


def epoch_curves(events: list[dict]) -> go.Figure:
    """Train/validation loss and accuracy per epoch, side by side."""
    ep = [e for e in events if e.get("type") == "epoch"]
    x = [e["epoch"] for e in ep]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(_("Loss"), _("Accuracy")))
    fig.add_scatter(x=x, y=[e["train_loss"] for e in ep], name=_("train loss"), mode="lines+markers", row=1, col=1)
    fig.add_scatter(x=x, y=[e["val_loss"] for e in ep], name=_("val loss"), mode="lines+markers", row=1, col=1)
    fig.add_scatter(x=x, y=[e["train_acc"] for e in ep], name=_("train acc"), mode="lines+markers", row=1, col=2)
    fig.add_scatter(x=x, y=[e["val_acc"] for e in ep], name=_("val acc"), mode="lines+markers", row=1, col=2)
    fig.update_xaxes(title_text=_("epoch"), dtick=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(title=_("Per epoch"), **_LAYOUT)
    return waiting(fig, not ep, _("Waiting for the first epoch to end…"))


def learning_rate(events: list[dict]) -> go.Figure:
    """Learning rate of the head group per step."""
    steps = [e for e in events if e.get("type") == "step"]
    fig = go.Figure(go.Scatter(x=[e["step"] for e in steps], y=[e["lr"] for e in steps], mode="lines"))
    fig.update_layout(title=_("Learning rate"), xaxis_title=_("step"), yaxis_title="lr", **_LAYOUT)
    return waiting(fig, not steps)


def _mark_unfreezes(fig: go.Figure, events: list[dict], x_key: str) -> None:
    for e in events:
        if e.get("type") == "unfreeze" and x_key in e:
            fig.add_vline(x=e[x_key], line_dash="dash", line_color="grey",
                          annotation_text=text(_("unfreeze {groups}").format(
                              groups=", ".join(map(str, e.get("groups", []))))))


def confusion(matrix: list[list[int]], classes: list[str], normalize: bool = False, clickable: bool = False) -> go.Figure:
    """Confusion-matrix heatmap: rows are true classes, columns predictions; ``clickable`` adds one selectable
    point per cell (customdata = [true index, predicted index])."""
    z = [[v / max(sum(row), 1) for v in row] for row in matrix] if normalize else matrix
    cells = [[str(v) for v in row] for row in matrix]
    labels = _texts(classes)
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, text=cells, texttemplate="%{text}",
                               colorscale="Blues",
                               hovertemplate=_("true %{y}<br>pred %{x}<br>%{text}") + "<extra></extra>"))
    height = max(320, 40 * len(classes) + 120)
    if clickable:
        _click_targets(fig, matrix, labels, cell_px=0.9 * (height - 80) / max(len(classes), 1))
    fig.update_layout(title=_("Confusion matrix"), xaxis_title=_("predicted"), yaxis_title=_("true"),
                      yaxis_autorange="reversed", **{**_LAYOUT, "height": height})
    return fig


def _click_targets(fig: go.Figure, matrix: list[list[int]], labels: list[str], cell_px: float) -> None:
    # Plotly reports no selection for heatmap clicks; one near-invisible square marker per cell does, and
    # carries the cell's (true, predicted) indices in customdata for st.plotly_chart(on_select=...).
    n = len(labels)
    cells = [(i, j) for i in range(n) for j in range(n)]
    fig.data[0].hoverinfo = "skip"  # the markers answer hovers, with the same text
    fig.add_scatter(x=[labels[j] for _i, j in cells], y=[labels[i] for i, _j in cells], mode="markers",
                    customdata=[[i, j] for i, j in cells], text=[str(matrix[i][j]) for i, j in cells],
                    marker={"symbol": "square", "size": max(cell_px, 12), "opacity": 0.01, "color": "#000"},
                    selected={"marker": {"opacity": 0.01}}, unselected={"marker": {"opacity": 0.01}},
                    hovertemplate=_("true %{y}<br>pred %{x}<br>%{text}<br>click to see the images")
                    + "<extra></extra>",
                    showlegend=False, name="cells")


def histogram(values: list[float], title: str, xaxis: str) -> go.Figure:
    """A simple histogram (image sizes and the like)."""
    fig = go.Figure(go.Histogram(x=values))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title=_("images"), **_LAYOUT)
    return fig


def per_class_bars(per_class: list[dict]) -> go.Figure:
    """Precision, recall and F1 per class."""
    classes = _texts(r["class"] for r in per_class)
    names = {"precision": _("precision"), "recall": _("recall"), "f1": _("F1")}
    fig = go.Figure([go.Bar(x=classes, y=[r[m] for r in per_class], name=names[m]) for m in names])
    fig.update_layout(title=_("Per-class metrics"), barmode="group", yaxis_range=[0, 1.02], **_LAYOUT)
    return fig


def lr_finder(result: dict) -> go.Figure:
    """Smoothed loss against learning rate (log axis) from core.train.lr_finder.lr_find, the suggestion marked."""
    fig = go.Figure(go.Scatter(x=result["lrs"], y=result["losses"], mode="lines", name=_("smoothed loss"),
                               line={"color": "#1f77b4"}))
    s = result.get("suggestion")
    if s is not None:
        # The marker sits on the curve at the sweep point nearest the suggested rate.
        i = min(range(len(result["lrs"])), key=lambda k: abs(result["lrs"][k] - s))
        fig.add_scatter(x=[s], y=[result["losses"][i]], mode="markers", name=_("suggested lr {lr}").format(lr=f"{s:.2g}"),
                        marker={"color": "#d62728", "size": 11, "symbol": "circle"})
        fig.add_vline(x=s, line_dash="dash", line_color="#d62728")
    fig.update_xaxes(type="log", title_text=_("learning rate"))
    fig.update_layout(title=_("Learning-rate finder"), yaxis_title=_("loss"), **_LAYOUT)
    return fig


def roc_curves(curves: list[dict]) -> go.Figure:
    """One-vs-rest ROC per class (from core.results.interpret.roc), AUC in the legend, chance diagonal."""
    fig = go.Figure()
    for c in curves:
        if c["auc"] is not None:
            fig.add_scatter(x=c["fpr"], y=c["tpr"], mode="lines", name=f"{text(c['class'])} (AUC {c['auc']:.3f})")
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name=_("chance"), line={"dash": "dot", "color": "grey"})
    fig.update_layout(title=_("ROC curves (one class vs the rest)"), xaxis_title=_("false positive rate"),
                      yaxis_title=_("true positive rate"), xaxis_range=[0, 1], yaxis_range=[0, 1.02], **_LAYOUT)
    return fig


def pr_curves(curves: list[dict]) -> go.Figure:
    """Precision-recall per class (from core.results.interpret.pr), average precision in the legend."""
    fig = go.Figure()
    for c in curves:
        if c["ap"] is not None:
            fig.add_scatter(x=c["recall"], y=c["precision"], mode="lines", name=f"{text(c['class'])} (AP {c['ap']:.3f})",
                            line={"shape": "hv"})
    fig.update_layout(title=_("Precision-recall curves"), xaxis_title=_("recall"), yaxis_title=_("precision"),
                      xaxis_range=[0, 1], yaxis_range=[0, 1.02], **_LAYOUT)
    return fig


def reliability(cal: dict) -> go.Figure:
    """Reliability diagram (from core.results.interpret.calibration): accuracy per confidence bin vs the diagonal."""
    bins = [b for b in cal["bins"] if b["count"]]
    mids = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = [b["hi"] - b["lo"] for b in bins]
    fig = go.Figure([
        go.Bar(x=mids, y=[b["accuracy"] for b in bins], width=width, name=_("accuracy"), marker_color="#4c78a8",
               customdata=[[b["count"], b["confidence"]] for b in bins],
               hovertemplate=_("confidence %{customdata[1]:.3f}<br>accuracy %{y:.3f}<br>%{customdata[0]} images")
               + "<extra></extra>"),
        go.Scatter(x=mids, y=[b["confidence"] for b in bins], mode="markers", name=_("mean confidence"),
                   marker={"color": "#d62728"}),
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name=_("perfect calibration"),
                   line={"dash": "dot", "color": "grey"}),
    ])
    fig.update_layout(title=_("Reliability diagram (ECE {ece}, {n} bins)").format(ece=f"{cal['ece']:.3f}",
                                                                                  n=len(cal["bins"])),
                      xaxis_title=_("confidence"), yaxis_title=_("accuracy"), xaxis_range=[0, 1], yaxis_range=[0, 1.02],
                      bargap=0.02, **_LAYOUT)
    return fig


def compare_runs(runs_events: dict[str, list[dict]], metric: str = "val_acc") -> go.Figure:
    """One line per run: a per-epoch metric (val_acc, val_loss, train_loss, train_acc) to compare runs."""
    fig = go.Figure()
    for label, events in runs_events.items():
        ep = [e for e in events if e.get("type") == "epoch" and metric in e]
        fig.add_scatter(x=[e["epoch"] for e in ep], y=[e[metric] for e in ep], mode="lines+markers", name=text(label))
    fig.update_xaxes(title_text=_("epoch"), dtick=1)
    if metric.endswith("acc"):
        fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(title=_("{metric} per epoch").format(metric=metric), yaxis_title=metric, **_LAYOUT)
    return fig


def task_curves(events: list[dict]) -> go.Figure:
    """Multi-task runs: validation accuracy and macro F1 of every task per epoch."""
    ep = [e for e in events if e.get("type") == "epoch" and "tasks" in e]
    tasks = list(ep[0]["tasks"]) if ep else []
    fig = make_subplots(rows=1, cols=2, subplot_titles=(_("Validation accuracy"), _("Validation macro F1")))
    for t in tasks:
        x = [e["epoch"] for e in ep]
        fig.add_scatter(x=x, y=[e["tasks"][t]["val_acc"] for e in ep], name=_("{task} acc").format(task=text(t)),
                        mode="lines+markers", row=1, col=1)
        fig.add_scatter(x=x, y=[e["tasks"][t]["val_f1"] for e in ep], name=_("{task} F1").format(task=text(t)),
                        mode="lines+markers", row=1, col=2)
    fig.update_xaxes(title_text=_("epoch"), dtick=1)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(title=_("Per task"), **_LAYOUT)
    return waiting(fig, not ep, _("Waiting for the first epoch to end…"))


def contrastive_curves(events: list[dict]) -> go.Figure:
    """Self-supervised pretraining: NT-Xent loss and positive-pair accuracy per step."""
    steps = [e for e in events if e.get("type") == "step" and "pair_acc" in e]
    x = [e["step"] for e in steps]
    fig = make_subplots(rows=1, cols=2, subplot_titles=(_("Contrastive loss (NT-Xent)"), _("Pairs found")))
    fig.add_scatter(x=x, y=[e["loss"] for e in steps], name=_("loss"), mode="lines", row=1, col=1)
    fig.add_scatter(x=x, y=[e["pair_acc"] for e in steps], name=_("pair accuracy"), mode="lines", row=1, col=2)
    fig.update_xaxes(title_text=_("step"))
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(title=_("Domain adaptation"), **_LAYOUT)
    return waiting(fig, not steps)


def distill_comparison(rows: list[dict]) -> go.Figure:
    """Teacher vs students (rows of core.techniques.distill.compare): accuracy, agreement, size and latency."""
    labels = _texts(r["model"] for r in rows)
    fig = make_subplots(rows=1, cols=3, subplot_titles=(_("Accuracy / agreement"), _("Size (MB)"),
                                                        _("CPU ms per image")))
    fig.add_bar(x=labels, y=[r["accuracy"] for r in rows], name=_("accuracy"), row=1, col=1)
    fig.add_bar(x=labels, y=[r["agreement_with_teacher"] for r in rows], name=_("agrees with teacher"), row=1, col=1)
    fig.add_bar(x=labels, y=[r["size_mb"] for r in rows], name=_("size"), row=1, col=2, showlegend=False)
    fig.add_bar(x=labels, y=[r["latency_ms"] for r in rows], name=_("latency"), row=1, col=3, showlegend=False)
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_layout(title=_("Distillation result"), barmode="group", **_LAYOUT)
    return fig
