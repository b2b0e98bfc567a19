"""Fleet: how many agents, online or offline, per device class and capability; every agent, searched and paged (for
fleets of 10,000: the counts and the search run in SQL, and only one page of agents is drawn); jobs running now."""

import streamlit as st

from dashboard import charts, ui
from dashboard.data import ONLINE_WINDOW_S, PAGE_SIZE, STATUSES, page_caption

PAGE = "fleet-page"  # the page number's widget key


def _first_page() -> None:
    """A new search or status filter starts at its first page."""
    st.session_state[PAGE] = 1


def _turn(by: int) -> None:
    st.session_state[PAGE] = int(st.session_state.get(PAGE, 1)) + by


def _linked_page() -> int:
    try:
        return max(int(st.query_params.get("page", 1)), 1)
    except ValueError:
        return 1


with ui.page("Fleet", f"Agents as the controller last recorded them; online means a heartbeat in the last "
             f"{ONLINE_WINDOW_S:g} s.", needs="agents"):  # fmt: skip
    counts = ui.query("fleet_counts", live=True)
    summary = ui.query("fleet_summary", live=True)
    a, b, c, d, e = st.columns(5)
    a.metric("Agents", f"{counts['agents']:,}")
    b.metric("Online", f"{counts['online']:,}")
    c.metric("Offline", f"{counts['offline']:,}")
    d.metric("Capabilities", f"{summary['capability'].nunique():,}")
    e.metric("Jobs running", f"{counts['jobs running']:,}")

    st.subheader("By device class and capability")
    st.dataframe(summary, hide_index=True, width="stretch", height="content", key="fleet-summary")

    st.subheader("Agents")
    left, right = st.columns([3, 2])
    search = left.text_input("Search agent id or host", value=st.query_params.get("q", ""), key="fleet-search",
                             placeholder="part of an agent id or host name, any case", on_change=_first_page).strip()  # fmt: skip
    ui.keep("q", search)
    status = ui.choice(right, "Status", list(STATUSES), key="fleet-status", param="status", radio=True,
                       on_change=_first_page)  # fmt: skip
    if PAGE not in st.session_state:
        st.session_state[PAGE] = _linked_page()
    page = max(int(st.session_state[PAGE]), 1)
    rows, total = ui.query("fleet_agents", search, status, page, live=True)
    pages = max(-(-total // PAGE_SIZE), 1)
    if page > pages:  # fewer matches than the page asked for (a new search, a link to an old page): its last page
        page = pages
        rows, total = ui.query("fleet_agents", search, status, page, live=True)
    st.session_state[PAGE] = page  # before its widget is drawn
    ui.keep("page", page if page > 1 else None)
    back, number, forward, caption = st.columns([1, 2, 1, 4], vertical_alignment="bottom")
    back.button("Previous", key="fleet-previous", disabled=page <= 1, on_click=_turn, args=(-1,), width="stretch")
    number.number_input("Page", min_value=1, max_value=pages, step=1, key=PAGE)
    forward.button("Next", key="fleet-next", disabled=page >= pages, on_click=_turn, args=(1,), width="stretch")
    caption.caption(page_caption(page, len(rows), total))
    if len(rows):
        st.dataframe(
            rows, hide_index=True, width="stretch", height="content", key="fleet-agents",
            column_config={"status": st.column_config.TextColumn(width=240),
                           "last heartbeat": st.column_config.DatetimeColumn("last heartbeat (UTC)",
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
