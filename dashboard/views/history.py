"""History: each metric over time per model × variant × device, with the change points `fleetbench regressions`
finds (the same rule: E-Divisive, confirmed on the raw samples) marked, acknowledged ones too."""

import dataclasses

import streamlit as st

from controller.analysis.changepoints import METRICS as CP_METRICS
from dashboard import charts, ui
from dashboard.data import HISTORY_POINTS, METRICS

with ui.page("History", "One model at a time: a chart per device, a line per variant. A change point is where a "
             "series' level moved: found by E-Divisive and confirmed on the raw samples with `fleetbench compare`'s "
             "test, the rule `fleetbench regressions` uses."):  # fmt: skip
    options = ui.query("filter_options")
    newest_first = options.sort_values("last", ascending=False)
    models = list(dict.fromkeys(newest_first["model_name"]))
    top = st.columns([2, 1, 2])
    model = ui.choice(top[0], "Model", models, key="history-model", param="model")  # a link's ?model=... opens it
    of_model = options[options["model_name"] == model]
    threads = sorted(of_model["threads"].unique().tolist())
    usual = int(of_model.groupby("threads")["records"].sum().idxmax())
    picked_threads = ui.choices(top[1], "Threads", threads, key="history-threads", param="threads", default=[usual])
    metric = ui.choice(top[2], "Metric", list(METRICS), key="history-metric", param="metric",
                       format_func=lambda m: METRICS[m][0])  # fmt: skip
    f = ui.filters(of_model, key="history", skip=("model_name",))
    f = dataclasses.replace(f, models=(model,), threads=tuple(int(t) for t in picked_threads))
    points = ui.query("history", f, metric)
    label = st.sidebar.text_input("Sweep label", value=st.query_params.get("label", ""), key="history-label",
                                  placeholder="name=value, e.g. branch=main").strip()  # fmt: skip
    if label and not points.empty:
        points = points[points["labels"].str.split(", ").apply(lambda ls: label in ls)]
    ui.keep("label", label)
    tags = ui.query("baselines")
    points = points.assign(baseline=points["sweep_id"].map(tags.groupby("sweep_id")["tag"].agg(", ".join)).fillna("")
                           if not tags.empty and not points.empty else "")  # fmt: skip
    if points.empty:
        st.warning("No record in this selection has that metric; pick another metric or clear some filters.")
        st.stop()
    marks = ui.query("change_points", f, metric)
    open_regressions = marks[(marks["kind"] == "regression") & ~marks["acked"].astype(bool)]
    a, b, c = st.columns(3)
    a.metric("Unacknowledged regressions", len(open_regressions))
    b.metric("Change points", len(marks))
    c.metric("Points", len(points))
    if int(points["runs"].max()) > 1:
        st.caption(f"More than {HISTORY_POINTS:,} records: one point per day (the mean of its runs); change points are "
                   "found on every record.")  # fmt: skip
    ui.chart(charts.history(points, metric, marks), "history-chart")
    if metric not in CP_METRICS:
        st.caption("Change points are not looked for on this metric.")
    if not marks.empty:
        st.subheader("Change points")
        shown = marks[["at", "variant", "capability", "threads", "kind", "before_value", "after_value", "ratio", "p_value",
                       "acked", "ack_note", "cp_id", "after_job"]].sort_values("at", ascending=False)  # fmt: skip
        st.dataframe(shown.style.format({"ratio": "{:.3f}x", "p_value": "{:.1g}"}), hide_index=True, width="stretch",
                     key="history-change-points")  # fmt: skip
        st.caption("Acknowledge one with `fleetbench regressions ack ID --note \"why\"` (ID: cp_id, once "
                   "`fleetbench regressions` has stored it).")  # fmt: skip
