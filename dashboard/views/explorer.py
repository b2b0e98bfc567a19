"""Explorer: filter the records; latency against accuracy or fidelity with the Pareto front, latency
distributions from the raw samples, size against latency, throughput against threads, energy against latency,
sustained runs' latency over time, disturbed and throttled runs marked, what the accuracy-keeping
int8 variants kept in float with the per-layer quantization report beside their fidelity, and the table."""

import dataclasses

import streamlit as st

from controller.analysis.quantization import details_summary
from dashboard import charts, data, ui
from dashboard.data import SAMPLE_RECORDS, SELECTION_ROWS

with ui.page("Explorer", "Each point is the mean over the runs of one model × variant × device × host × threads."):
    f = ui.filters(ui.query("filter_options"), key="explorer")
    groups = ui.query("explorer_groups", f)
    if groups.empty:
        st.warning("No record matches these filters; clear some of them in the sidebar" + (
            ", or include emulated runs (the switch there)." if not f.emulated and ui.has_emulated() else "."))
        st.stop()
    a, b, c, d = st.columns(4)
    a.metric("Records", int(groups["runs"].sum()))
    b.metric("Models", groups["model_name"].nunique())
    c.metric("Variants", groups["variant"].nunique())
    d.metric("Devices", groups["device_name"].nunique())

    st.subheader("Latency against quality, per device")
    names = {"accuracy_top1": "top-1 accuracy", "fidelity_snr_db": "worst-output SNR vs fp32",
             "fidelity_top1": "top-1 agreement with fp32", "fidelity_cosine": "worst-output mean cosine vs fp32"}
    carried = [q for q in names if groups[q].notna().any()] or ["accuracy_top1"]  # what these records measured
    quality = ui.choice(st, "Quality", carried, key="explorer-quality", param="quality", radio=True, format_func=names.get)
    if groups[quality].notna().any():
        ui.chart(charts.latency_vs_quality(groups, quality), "explorer-pareto")
        st.caption("Dotted line: the Pareto front (no other variant on that device is both faster and better).")
    else:
        st.info("No record in this selection measured that; the variants were run without a data set.")

    st.subheader("Latency distributions (raw samples)")
    boxes = ui.query("latency_boxes", f)
    ui.chart(charts.latency_boxes(boxes), "explorer-boxes")
    st.caption(f"The newest record of each variant × device (at most {SAMPLE_RECORDS}); whiskers at 1.5 × IQR.")

    left, right = st.columns(2)
    with left:
        st.subheader("Model size against latency")
        ui.chart(charts.size_vs_latency(groups), "explorer-size")
    with right:
        st.subheader("Throughput against threads")
        ui.chart(charts.throughput_vs_threads(groups), "explorer-threads")
        st.caption("Dashed: measured with more than one request in flight.")

    if groups["energy_mj"].notna().any():
        st.subheader("Energy against latency")
        ui.chart(charts.energy_vs_latency(groups), "explorer-energy")
        st.caption("Millijoules per inference over the latency phase, from each device's own sensor (RAPL, hwmon "
                   "rails, NVML); devices without one are left out, never estimated.")  # fmt: skip
    runs = ui.query("sustained", f)
    if not runs.empty:
        st.subheader("Sustained runs: latency over time")
        ui.chart(charts.sustained(runs), "explorer-sustained")
        st.caption("Each point is one window's p50 (`sustained_s` runs the latency loop for minutes); drift is the "
                   "last window's p50 over the first's. Below: the hottest thermal zone as each window closed.")  # fmt: skip
    marked = groups[(groups["disturbed_runs"] > 0) | (groups["throttled_runs"] > 0)]
    if not marked.empty:
        st.warning(f"{int(marked['disturbed_runs'].sum())} run(s) were disturbed (other processes' CPU time past the "
                   f"limit) and {int(marked['throttled_runs'].sum())} throttled (a clock fell during the job): "
                   "the disturbed_runs and throttled_runs columns of the selection show where.")  # fmt: skip

    quant = ui.query("quantization", dataclasses.replace(f, emulated=True))  # accuracy, fidelity: real under emulation too
    if not quant.empty:
        st.subheader("Quantization: what each int8 variant kept, and where int8 loses")
        shown_q = quant.assign(found=[details_summary(d) for d in quant["details"]]).drop(columns=["details"])
        st.dataframe(shown_q.style.format({"accuracy_top1": "{:.2%}", "fidelity_snr_db": "{:.1f} dB"}, na_rep="-"),
                     hide_index=True, width="stretch", key="explorer-quant")  # fmt: skip
        reported = [i for i, d in enumerate(quant["details"]) if d.get("layer_errors")]
        if reported:
            pick = ui.choice(st, "Per-layer quantization error of", reported, key="explorer-quant-layers", param="layers",
                             format_func=lambda i: f"{quant.at[i, 'model_name']} · {quant.at[i, 'variant']}",
                             to_param=lambda i: f"{quant.at[i, 'model_name']}:{quant.at[i, 'variant']}")  # fmt: skip
            layers = data.layer_errors(quant.at[pick, "details"])
            st.dataframe(layers.head(15), hide_index=True, width="stretch", key="explorer-quant-table")
            st.caption("Worst first, int8 against fp32 on the calibration split (from `fleetbench quant-report`, or the "
                       "ranking a mixed-precision variant searched by): rmse/scale is the error in quantization steps; "
                       "added relative rms is a layer's own share.")  # fmt: skip

    st.subheader("Selection")
    shown = groups.assign(model_size_mib=groups["model_size_bytes"] / 2**20, peak_rss_mib=groups["peak_rss_bytes"] / 2**20)
    shown = shown.drop(columns=["model_size_bytes", "peak_rss_bytes"])
    st.dataframe(shown, hide_index=True, width="stretch", key="explorer-table")
    n = int(groups["runs"].sum())
    st.download_button(f"Download the selected records as CSV ({min(n, SELECTION_ROWS):,} newest of {n:,})",
                       lambda: ui.query("selection_rows", f, limit=SELECTION_ROWS).to_csv(index=False),
                       file_name="fleetbench-selection.csv", mime="text/csv", key="explorer-csv")  # fmt: skip
