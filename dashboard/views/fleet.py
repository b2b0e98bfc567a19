"""Fleet: agents, their capabilities and devices, online or offline, jobs running now."""

import streamlit as st

from dashboard import charts, ui
from dashboard.data import ONLINE_WINDOW_S

with ui.page("Fleet", f"Agents as the controller last recorded them; online means a heartbeat in the last "
             f"{ONLINE_WINDOW_S:g} s.", needs="agents"):  # fmt: skip
    table = ui.query("fleet", live=True)
    agents = table.drop_duplicates("agent")
    online = int(agents["status"].eq("online").sum())
    a, b, c, d = st.columns(4)
    a.metric("Agents", len(agents))
    b.metric("Online", online)
    c.metric("Capabilities", table["capability"].nunique())
    d.metric("Jobs running", int(agents["jobs running"].sum()))
    st.dataframe(
        table, hide_index=True, width="stretch",
        column_config={"last heartbeat": st.column_config.DatetimeColumn("last heartbeat (UTC)",
                                                                        format="YYYY-MM-DD HH:mm:ss")},
    )  # fmt: skip
    per_cap = ui.query("hosts_by_capability").groupby("capability", as_index=False)["records"].sum()
    if len(per_cap):
        st.subheader("Records stored per capability")
        ui.chart(charts.records_per_capability(per_cap), "fleet-records")
    st.subheader("Running now")
    running = ui.query("running_jobs", live=True)
    if running.empty:
        st.caption("No job is running.")
    else:
        st.dataframe(running, hide_index=True, width="stretch")
