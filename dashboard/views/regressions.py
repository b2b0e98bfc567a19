"""Regressions: the change points `fleetbench regressions` stored, largest first, each linking to its series in
History."""

import streamlit as st

from dashboard import ui

with ui.page("Regressions", "The change points `fleetbench regressions` found over each series' history (E-Divisive, "
             "confirmed on the raw samples), largest change first. Acknowledge one with `fleetbench regressions ack "
             "ID --note \"why\"`."):  # fmt: skip
    cps = ui.query("feed")
    if cps.empty:
        st.info("No change point stored yet: run `fleetbench regressions` (a nightly job after the sweep, see "
                "docs/readiness.md), or look at a series on the History page.")  # fmt: skip
        st.stop()
    open_regressions = cps[(cps["kind"] == "regression") & ~cps["acked"]]
    a, b, c = st.columns(3)
    a.metric("Unacknowledged regressions", len(open_regressions))
    b.metric("Change points", len(cps))
    c.metric("Acknowledged", int(cps["acked"].sum()))
    kinds = ui.choices(st, "Show", ["regression", "improvement"], key="feed-kinds", param="kind",
                       default=["regression", "improvement"])  # fmt: skip
    shown = cps[cps["kind"].isin(kinds)]
    st.dataframe(
        shown[["id", "kind", "magnitude", "history", "metric", "model_name", "variant", "capability", "device_name", "threads",
               "before_value", "after_value", "ratio", "p_value", "after_at", "acked", "ack_note"]],
        hide_index=True, width="stretch", key="feed-table",
        column_config={"history": st.column_config.LinkColumn("series", display_text="open in History"),
                       "magnitude": st.column_config.NumberColumn("change", format="percent"),
                       "ratio": st.column_config.NumberColumn(format="%.3fx"),
                       "p_value": st.column_config.NumberColumn("p", format="%.1e"),
                       "model_name": "model", "device_name": "device", "before_value": "before", "after_value": "after",
                       "ack_note": "note",
                       "after_at": st.column_config.DatetimeColumn("since (UTC)", format="YYYY-MM-DD HH:mm")},
    )  # fmt: skip
    st.caption("Newest 500 change points, largest change first; `fleetbench regressions --format json` has them all.")
