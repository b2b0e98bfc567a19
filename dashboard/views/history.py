"""History: each metric over time per model × variant × device, regressions marked."""

import dataclasses

import streamlit as st

from dashboard import charts, ui
from dashboard.data import HISTORY_POINTS, METRICS, mark_regressions

with ui.page("History", "One model at a time: a chart per device, a line per variant. A point is a regression "
             "when it is worse than the median of the five before it by more than the threshold."):  # fmt: skip
    options = ui.query("filter_options")
    newest_first = options.sort_values("last", ascending=False)
    models = list(dict.fromkeys(newest_first["model_name"]))
    top = st.columns([2, 1, 2, 1])
    model = top[0].selectbox("Model", models, key="history-model")
    of_model = options[options["model_name"] == model]
    threads = sorted(of_model["threads"].unique().tolist())
    usual = int(of_model.groupby("threads")["records"].sum().idxmax())
    picked_threads = top[1].multiselect("Threads", threads, default=[usual], key="history-threads")
    metric = top[2].selectbox("Metric", list(METRICS), format_func=lambda m: METRICS[m][0], key="history-metric")
    threshold = top[3].slider("Regression threshold (%)", 1, 50, 10, key="history-threshold") / 100
    f = ui.filters(of_model, key="history", skip=("model_name",))
    f = dataclasses.replace(f, models=(model,), threads=tuple(int(t) for t in picked_threads))
    points = ui.query("history", f, metric)
    if points.empty:
        st.warning("No record in this selection has that metric; pick another metric or clear some filters.")
        st.stop()
    marked = mark_regressions(points, metric, threshold=threshold)
    n_bad = int(marked["regression"].sum())
    a, b = st.columns(2)
    a.metric("Regressions marked", n_bad)
    b.metric("Points", len(marked))
    if int(points["runs"].max()) > 1:
        st.caption(f"More than {HISTORY_POINTS:,} records: one point per day (the mean of its runs).")
    st.plotly_chart(charts.history(marked, metric), key="history-chart")
    if n_bad:
        st.subheader("Regressions")
        bad = marked[marked["regression"]][["at", "variant", "capability", "device_name", "threads", "value",
                                            "baseline", "change"]]  # fmt: skip
        st.dataframe(bad.style.format({"change": "{:+.1%}"}), hide_index=True, width="stretch")
