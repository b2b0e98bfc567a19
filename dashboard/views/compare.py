"""Compare: two sweeps, two variants, or two hosts of one capability, side by side; latency judged by the
significance test."""

import dataclasses

import streamlit as st

from controller.analysis import regress
from dashboard import charts, ui
from dashboard.data import METRICS, Side

THRESHOLD = 0.05

with ui.page("Compare", f"Latency: coloured by the significance test of `fleetbench compare` on the raw samples "
             f"(p < 0.05, and the median moved more than {regress.THRESHOLD:.0%} or the 99%-trimmed mean more than "
             f"{regress.TAIL_THRESHOLD:.0%}). Other metrics: by plain ratio, beyond ±{THRESHOLD:.0%}."):  # fmt: skip
    sweeps = ui.query("sweeps")
    modes = ["two sweeps", "two variants", "two hosts of one capability"]
    mode = ui.choice(st, "Compare", modes, key="compare-mode", param="mode", default=0 if len(sweeps) >= 2 else 1,
                     radio=True)  # fmt: skip
    if mode == "two sweeps":
        if len(sweeps) < 2:
            st.info("Compare needs two sweeps, and this database has "
                    f"{len(sweeps)}. Run `fleetbench demo` (or a sweep) once more to compare two runs, "
                    "or compare two variants.")  # fmt: skip
            st.stop()
        labels = {f"{r['name']} · {r['created_at']:%Y-%m-%d %H:%M} · {r['sweep_id'][:8]}": r["sweep_id"]
                  for r in sweeps.to_dict("records")}  # fmt: skip
        names = list(labels)
        col_a, col_b = st.columns(2)
        pick_a = ui.choice(col_a, "A (baseline)", names, key="compare-a", param="a", default=1, to_param=labels.get)
        pick_b = ui.choice(col_b, "B (candidate)", names, key="compare-b", param="b", to_param=labels.get)
        side_a, side_b = Side(sweep_id=labels[pick_a]), Side(sweep_id=labels[pick_b])
    elif mode == "two variants":
        order = {v: i for i, v in enumerate(charts.VARIANT_ORDER)}
        variants = sorted(ui.query("filter_options")["variant"].unique(), key=lambda v: (order.get(v, len(order)), v))
        first = next((v for v in variants if v.endswith("fp32")), variants[0])
        family = first.split("-")[0]
        second = next((v for v in (f"{family}-int8", *variants) if v != first and v in variants), first)
        col_a, col_b = st.columns(2)
        var_a = ui.choice(col_a, "A (baseline)", variants, key="compare-variant-a", param="a", default=variants.index(first))
        var_b = ui.choice(col_b, "B (candidate)", variants, key="compare-variant-b", param="b",
                          default=variants.index(second))  # fmt: skip
        st.caption("Rows pair the two variants per model × capability × threads, over all their records.")
        side_a, side_b = Side(variant=var_a), Side(variant=var_b)
    else:
        hosts = ui.query("hosts_by_capability")
        counts = hosts.groupby("capability")["hostname"].nunique()
        caps = sorted(counts[counts >= 2].index)
        if not caps:
            st.info("No capability has records from two hosts yet; add a second agent with that capability, "
                    "or compare two sweeps.")  # fmt: skip
            st.stop()
        cap = ui.choice(st, "Capability", caps, key="compare-cap", param="capability")
        names = sorted(hosts[hosts["capability"] == cap]["hostname"])
        col_a, col_b = st.columns(2)
        host_a = ui.choice(col_a, "A (baseline)", names, key="compare-host-a", param="a")
        host_b = ui.choice(col_b, "B (candidate)", names, key="compare-host-b", param="b", default=1)
        side_a, side_b = Side(hostname=host_a, capability=cap), Side(hostname=host_b, capability=cap)
    if ui.emulated_toggle(ui.query("filter_options")):
        side_a, side_b = (dataclasses.replace(s, emulated=True) for s in (side_a, side_b))
    metric = ui.choice(st, "Metric", list(METRICS), key="compare-metric", param="metric", format_func=lambda m: METRICS[m][0])
    table = ui.query("compare", side_a, side_b, metric, threshold=THRESHOLD)
    if table.empty:
        st.warning("These two have no records of that metric.")
        st.stop()
    labels = {"worse": "Worse in B", "better": "Better in B", "same": "Same", "only in A": "Only in A",
              "only in B": "Only in B"}  # fmt: skip
    for col, (verdict, label) in zip(st.columns(len(labels)), labels.items()):
        col.metric(label, int(table["verdict"].eq(verdict).sum()))
    ui.chart(charts.compare_bars(table, metric), "compare-chart")
    colour = {"worse": "background-color: #f8d7da", "better": "background-color: #d4edda"}
    styled = table.style.map(lambda v: colour.get(v, ""), subset=["verdict"]).format(
        {"a": "{:.4g}", "b": "{:.4g}", "ratio": "{:.3f}", "p_value": "{:.2g}"}, na_rep="-")  # fmt: skip
    st.dataframe(styled, hide_index=True, width="stretch", key="compare-table")
