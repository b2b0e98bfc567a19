"""Profile: where the time goes inside a model, from the jobs' profile phase (`profile: true`): time by op type,
the slowest nodes, placement and precision coverage per variant × device, and two records side by side."""

import streamlit as st

from dashboard import charts, data, ui
from protocol import Profile
from protocol.profiling import int8_share

NONE = "(none)"

with ui.page("Profile", "From each job's profile phase (`profile: true` in a sweep spec, or `fleetbench demo "
             "--profile`): the runtime's own per-node counters, where each op ran, and the precision its kernel "
             "ran in. The newest profiled record of each variant × device × threads."):  # fmt: skip
    rows = ui.query("profiles")
    if rows.empty:
        st.info("No profiled records yet. Add `profile: true` to a sweep spec (or run `fleetbench demo --profile`), "
                "then reload this page.")  # fmt: skip
        st.stop()
    models = list(dict.fromkeys(rows["model_name"]))
    linked_model = st.query_params.get("model")
    model = ui.choice(st, "Model", models, key="profile-model", param="model")
    if linked_model is not None and model != linked_model:  # the URL's A and B were another model's records
        ui.keep("a", None)
        ui.keep("b", None)
    of_model = rows[rows["model_name"] == model].reset_index(drop=True)

    st.subheader("Placement and precision coverage")
    cov = data.coverage(of_model)
    ui.chart(charts.precision_coverage(cov[cov["error"] == ""]), "profile-coverage-chart")
    precisions = [c.removeprefix("share_") for c in cov.columns if c.startswith("share_")]
    shown = cov.drop(columns=["error"]).rename(columns=lambda c: c.removeprefix("share_"))
    percent = {p: "{:.0%}" for p in [*precisions, "int8"]}
    st.dataframe(shown.style.format({**percent, "node time ms": "{:.4f}", "p50 ms": "{:.4f}"}, na_rep="-"),
                 hide_index=True, width="stretch", key="profile-coverage")  # fmt: skip
    for r in cov[cov["error"] != ""].itertuples():
        st.warning(f"{r.variant} on {r.device} (job {r.job}): {r.error}")

    usable = of_model[[not (p or {}).get("error") for p in of_model["profile"]]].reset_index(drop=True)
    if usable.empty:
        st.stop()
    names = [f"{r.variant} · {r.capability} · {r.threads} thread(s) · {r.job_id[:8]}" for r in usable.itertuples()]
    first, second = data.default_pair(usable)
    left, right = st.columns(2)
    # keyed by model: another model's picks start from its own defaults
    def job(name: str) -> str:  # the URL names a record by its job id's first 8 characters
        return name.rsplit(" · ", 1)[-1] if name != NONE else "none"

    pick_a = ui.choice(left, "A", names, key=f"profile-a-{model}", param="a", default=first, to_param=job)
    pick_b = ui.choice(right, "B (side by side)", [NONE, *names], key=f"profile-b-{model}", param="b",
                       default=0 if second is None else second + 1, to_param=job)  # fmt: skip
    picked = {"A": usable.iloc[names.index(pick_a)]}
    if pick_b != NONE:
        picked["B"] = usable.iloc[names.index(pick_b)]

    for col, (side, r) in zip(st.columns(len(picked)), picked.items()):
        p, pl = r.profile, r.profile["placement"]
        runs = f", {p['runs']} runs" if p["runs"] else ""
        col.markdown(f"**{side}: {r.variant}** on `{r.capability}` · {p['source']}{runs}")
        int8 = int8_share(Profile.from_dict(p))
        share = "-" if int8 is None else f"{int8[0]:.0%}" + ("" if int8[1] == "time" else " of nodes")
        figures = [("Node time", "-" if p["node_time_ms"] is None else f"{p['node_time_ms']:.3g} ms"),
                   (f"Ops on {pl['target']}", f"{pl['ops_on_target']} / {pl['ops_on_target'] + pl['fallback_ops']}"),
                   ("Partitions", pl["partitions"]), ("int8 share", share)]  # fmt: skip
        per_row = 4 if len(picked) == 1 else 2  # side by side, two rows of two stay readable
        for start in range(0, 4, per_row):
            for cell, (label, value) in zip(col.columns(per_row), figures[start:start + per_row]):
                cell.metric(label, value)
        if pl["fallback_ops"]:
            col.caption(f"Fell back off {pl['target']}: {', '.join(pl['fallback_op_types'])}")
        if p["op_time"]:
            col.caption(p["op_time"])

    st.subheader("Time by op type")
    ui.chart(charts.op_type_bars({f"{side}: {r.variant}": data.op_types(r.profile) for side, r in picked.items()}),
             "profile-op-types")
    st.subheader("Slowest nodes")
    for col, (side, r) in zip(st.columns(len(picked)), picked.items()):
        col.caption(f"{side}: {r.variant} on {r.capability}")
        col.dataframe(data.top_nodes(r.profile).style.format({"time ms": "{:.4f}"}, na_rep="-"), hide_index=True,
                      width="stretch", key=f"profile-nodes-{side}")  # fmt: skip
