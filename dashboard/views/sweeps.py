"""Sweeps: live progress of each sweep; failed jobs with their error, waiting jobs with what they wait for."""

import streamlit as st

from controller.jobs import JobState
from dashboard import ui
from dashboard.data import STATE_ORDER
from dashboard.ui import LIVE_TTL_S

with ui.page("Sweeps", f"Refreshes every {LIVE_TTL_S} s.", needs="sweeps"):

    @st.fragment(run_every=LIVE_TTL_S)
    def progress() -> None:
        for row in ui.query("sweeps", live=True).to_dict("records"):
            done, total = int(row["finished"]), int(row["total"])
            with st.container(border=True):
                left, right = st.columns([3, 2])
                left.markdown(f"**{row['name']}** `{row['sweep_id']}` · {row['state']} · started "
                              f"{row['created_at']:%Y-%m-%d %H:%M} UTC")  # fmt: skip
                left.progress(done / total if total else 1.0, text=f"{done} of {total} job(s) finished")
                right.markdown(" · ".join(f"{s}: **{int(row[s])}**" for s in STATE_ORDER if row[s]) or "no jobs")

    progress()
    st.subheader("Jobs of a sweep")
    table = ui.query("sweeps", live=True)
    choices = {f"{r['name']} ({r['sweep_id']})": r["sweep_id"] for r in table.to_dict("records")}
    picked = ui.choice(st, "Sweep", list(choices), key="sweeps-pick", param="sweep")
    jobs = ui.query("sweep_jobs", choices[picked], live=True)
    failed = jobs[jobs["state"].isin([JobState.FAILED.value, JobState.DEAD_LETTER.value, JobState.EXPIRED.value])]
    waiting = jobs[jobs["state"] == JobState.WAITING.value]
    if len(failed):
        st.error(f"{len(failed)} job(s) failed")
        st.dataframe(failed[["model", "variant", "capability", "state", "attempt", "reason"]], hide_index=True,
                     width="stretch")  # fmt: skip
    if len(waiting):
        st.warning(f"{len(waiting)} job(s) wait for a device")
        st.dataframe(waiting[["model", "variant", "capability", "reason"]], hide_index=True, width="stretch")
    st.dataframe(jobs, hide_index=True, width="stretch")
