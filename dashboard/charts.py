"""Plotly figures for the pages: every axis carries its unit, and each stays readable with
20 devices × 7 variants (one small chart per device, colours by variant, fixed variant order)."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from dashboard.data import MEGABYTES, METRICS, PERCENT, pareto_front

#: Variant order and colours, the same on every chart.
VARIANT_ORDER = ("tflite-fp32", "tflite-fp16", "tflite-dynamic-int8", "tflite-int8", "openvino-fp32",
                 "openvino-fp16", "openvino-int8", "tflite-int8-qat", "openvino-int8-qat", "openvino-int8-ac",
                 "tflite-int8-mixed")  # fmt: skip
PALETTE = qualitative.D3 + qualitative.Set2
FACET_COLUMNS = 4


def variant_colours(variants) -> dict[str, str]:
    """Each variant's colour, the same on every chart whichever variants a chart shows (a known variant keeps its
    place in VARIANT_ORDER; others follow it, by name)."""
    present = set(variants)
    known = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(VARIANT_ORDER) if v in present}
    others = sorted(present - set(VARIANT_ORDER))
    return {**known, **{v: PALETTE[(len(VARIANT_ORDER) + i) % len(PALETTE)] for i, v in enumerate(others)}}


def scaled(df: pd.DataFrame, metric: str, column: str | None = None) -> pd.Series:
    """``metric`` (read from ``column``, default the metric's own) in the unit its label names."""
    s = df[column or metric].astype(float)
    if metric in PERCENT:
        return s * 100
    if metric in MEGABYTES:
        return s / 2**20
    return s


def _facets(n: int, titles: list[str], x_title: str, y_title: str, height_per_row: int = 260):
    cols = min(FACET_COLUMNS, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=min(0.12, 0.5 / rows))  # fmt: skip
    fig.update_layout(height=120 + rows * height_per_row, margin=dict(t=60, l=10, r=10, b=10),
                      legend=dict(title="variant", orientation="h", y=1.02 + 0.1 / rows, yanchor="bottom"))  # fmt: skip
    fig.update_xaxes(title_text=x_title, title_font_size=11)
    fig.update_yaxes(title_text=y_title, title_font_size=11)
    return fig, cols


def _add(fig: go.Figure, placed: list[tuple[go.Scatter, int, int]]) -> go.Figure:
    """Add (trace, row, col) to a faceted figure in one call (one at a time is three times slower)."""
    if placed:
        traces, rows, cols = zip(*placed)
        fig.add_traces(list(traces), rows=list(rows), cols=list(cols))
    return fig


def facet_key(df: pd.DataFrame, *columns: str) -> pd.Series:
    """Each row's chart title: ``columns`` joined by " · ", led by the model's name when ``df`` holds several models
    (a chart never mixes models: their variants share names, not meaning)."""
    lead = ("model_name",) if "model_name" in df and df["model_name"].nunique() > 1 else ()
    parts = [df[c].astype(str) for c in (*lead, *columns)]
    key = parts[0]
    for part in parts[1:]:
        key = key + " · " + part
    return key


def latency_vs_quality(groups: pd.DataFrame, quality: str) -> go.Figure:
    """p50 latency (ms) against accuracy or fidelity (%), one chart per device (per model × device with several
    models), the Pareto front drawn."""
    key = facet_key(groups, "device_name", "capability")
    devices = list(dict.fromkeys(sorted(key)))
    fig, cols = _facets(len(devices), devices, "p50 latency (ms)", METRICS[quality][0])
    colours = variant_colours(groups["variant"])
    shown: set[str] = set()
    placed: list = []
    for i, device in enumerate(devices):
        sub = groups[key == device]
        r, c = i // cols + 1, i % cols + 1
        y = scaled(sub, quality)
        for variant, colour in colours.items():
            pts = sub[sub["variant"] == variant]
            if pts.empty:
                continue
            placed.append((go.Scatter(
                x=pts["p50_ms"], y=y[pts.index], mode="markers", name=variant, legendgroup=variant,
                showlegend=variant not in shown, marker=dict(color=colour, size=9),
                customdata=pts[["hostname", "threads", "runs"]].to_numpy(),
                hovertemplate=(f"{variant}<br>p50 %{{x:.3f}} ms<br>{METRICS[quality][0]} %{{y:.2f}}"
                               "<br>host %{customdata[0]}, %{customdata[1]} thread(s), %{customdata[2]} run(s)"
                               "<extra></extra>"),
            ), r, c))  # fmt: skip
            shown.add(variant)
        front = sub[pareto_front(sub["p50_ms"], y)].sort_values("p50_ms")
        if len(front):
            placed.append((go.Scatter(
                x=front["p50_ms"], y=scaled(front, quality), mode="lines", line=dict(color="#444", dash="dot",
                shape="hv"), name="Pareto front", legendgroup="front", showlegend="front" not in shown,
                hoverinfo="skip",
            ), r, c))  # fmt: skip
            shown.add("front")
    return _add(fig, placed)


def latency_boxes(boxes: pd.DataFrame) -> go.Figure:
    """Latency distributions (ms) from raw samples: one horizontal box per variant × device (× model, when the
    selection holds several: each box is one model's, never the samples of models that share a variant's name)."""
    labels = boxes["variant"] + " · " + boxes["device_name"] + " · " + boxes["hostname"]
    if boxes["model_name"].nunique() > 1:
        labels = boxes["model_name"] + " · " + labels
    colours = variant_colours(boxes["variant"])
    fig = go.Figure()
    for variant, colour in colours.items():
        b = boxes[boxes["variant"] == variant]
        fig.add_trace(go.Box(
            y=labels[b.index], q1=b["q1"], median=b["median"], q3=b["q3"], lowerfence=b["low"],
            upperfence=b["high"], orientation="h", name=variant, marker_color=colour, boxpoints=False,
        ))  # fmt: skip
    fig.update_layout(height=140 + 26 * len(boxes), margin=dict(t=30, l=10, r=10, b=10),
                      xaxis_title="latency per inference (ms)",
                      yaxis_title=("model · " if boxes["model_name"].nunique() > 1 else "") + "variant · device · host",
                      legend_title="variant")  # fmt: skip
    return fig


#: marker symbols, one per model where a scatter holds several
MODEL_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "pentagon", "hexagon", "triangle-down")


def _by_variant(groups: pd.DataFrame, x, y, custom: list[str], hover: str, x_title: str, y_title: str) -> go.Figure:
    """A scatter, one trace per variant in its colour; ``x``/``y`` take a variant's rows, ``hover`` follows
    Plotly's template (``{variant}`` is filled in). With several models, each model has its own marker symbol
    and the hover names it: every point is one model's, none is merged."""
    fig = go.Figure()
    models = sorted(groups["model_name"].astype(str).unique()) if "model_name" in groups else []
    symbol = {m: MODEL_SYMBOLS[i % len(MODEL_SYMBOLS)] for i, m in enumerate(models)}
    several = len(models) > 1
    for variant, colour in variant_colours(groups["variant"]).items():
        g = groups[groups["variant"] == variant]
        marker = dict(color=colour, size=9, symbol=[symbol[m] for m in g["model_name"].astype(str)] if several else "circle")
        fig.add_trace(go.Scatter(x=x(g), y=y(g), mode="markers", name=variant, marker=marker,
                                 customdata=g[[*custom, "model_name"]] if several else g[custom],
                                 hovertemplate=(f"%{{customdata[{len(custom)}]}} · " if several else "")
                                 + hover.replace("{variant}", variant)))  # fmt: skip
    for m in models if several else ():  # a legend entry per model's symbol (no point of its own)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"model {m}", hoverinfo="skip",
                                 marker=dict(color="#555", size=9, symbol=symbol[m])))  # fmt: skip
    fig.update_layout(height=420, margin=dict(t=30, l=10, r=10, b=10), xaxis_title=x_title, yaxis_title=y_title,
                      legend_title="variant")  # fmt: skip
    return fig


def size_vs_latency(groups: pd.DataFrame) -> go.Figure:
    return _by_variant(groups, lambda g: g["model_size_bytes"] / 2**20, lambda g: g["p50_ms"], ["device_name", "capability"],
                       "{variant}<br>%{x:.3f} MiB, p50 %{y:.3f} ms<br>%{customdata[0]} (%{customdata[1]})<extra></extra>",
                       "model size (MiB)", "p50 latency (ms)")  # fmt: skip


def energy_vs_latency(groups: pd.DataFrame) -> go.Figure:
    """Millijoules per inference (the device's own sensor) against p50 latency, a point per group with energy."""
    return _by_variant(groups[groups["energy_mj"].notna()], lambda g: g["p50_ms"], lambda g: g["energy_mj"],
                       ["device_name", "capability", "energy_w"],
                       "{variant}<br>p50 %{x:.3f} ms, %{y:.4g} mJ/inference (%{customdata[2]:.3g} W)"
                       "<br>%{customdata[0]} (%{customdata[1]})<extra></extra>",
                       "p50 latency (ms)", "energy per inference (mJ)")  # fmt: skip


def sustained(windows: pd.DataFrame) -> go.Figure:
    """Sustained runs: each window's p50 against the minute it began (one line per run, in its variant's colour),
    and the hottest thermal zone below where the device reported one."""
    hot = windows["hottest_c"].notna().any()
    fig = make_subplots(rows=2 if hot else 1, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35] if hot else None,
                        vertical_spacing=0.08)  # fmt: skip
    colours = variant_colours(windows["variant"])
    for dash, (run, g) in zip(["solid", "dot", "dash", "dashdot"] * 100, windows.groupby("run", sort=False)):
        colour = colours[g["variant"].iloc[0]]
        drift = g["drift_ratio"].iloc[0]
        fig.add_trace(go.Scatter(x=g["minute"], y=g["p50_ms"], mode="lines+markers", name=f"{run} (drift {drift:.2f}x)",
                                 line=dict(color=colour, dash=dash), legendgroup=run,
                                 hovertemplate=f"{run}<br>minute %{{x:.1f}}: p50 %{{y:.3f}} ms<extra></extra>"), row=1, col=1)  # fmt: skip
        if hot and g["hottest_c"].notna().any():
            fig.add_trace(go.Scatter(x=g["minute"], y=g["hottest_c"], mode="lines", showlegend=False, legendgroup=run,
                                     line=dict(color=colour, dash=dash),
                                     hovertemplate=f"{run}<br>minute %{{x:.1f}}: %{{y:.1f}} °C<extra></extra>"), row=2, col=1)  # fmt: skip
    fig.update_yaxes(title_text="p50 latency (ms)", row=1, col=1)
    if hot:
        fig.update_yaxes(title_text="hottest zone (°C)", row=2, col=1)
    fig.update_xaxes(title_text="minutes into the run", row=2 if hot else 1, col=1)
    fig.update_layout(height=520 if hot else 380, margin=dict(t=30, l=10, r=10, b=10), legend=dict(orientation="h", y=-0.2))
    return fig


def throughput_vs_threads(groups: pd.DataFrame) -> go.Figure:
    """Throughput (inferences/s) against threads, a line per variant and requests in flight, per capability (per
    model × capability with several models, and per device where a capability ran on several: a line never
    averages two models, nor an x86-64 server with an aarch64 board)."""
    several = "device_name" in groups and groups.groupby("capability")["device_name"].transform("nunique").gt(1).any()
    key = facet_key(groups, "capability", "device_name") if several else facet_key(groups, "capability")
    caps = sorted(key.unique())
    fig, cols = _facets(len(caps), caps, "threads", "throughput (inferences/s)")
    colours = variant_colours(groups["variant"])
    shown: set[str] = set()
    placed: list = []
    for i, cap in enumerate(caps):
        sub = groups[key == cap]
        r, c = i // cols + 1, i % cols + 1
        for (variant, requests), g in sub.groupby(["variant", "throughput_requests"]):
            g = g.groupby("threads", as_index=False)["throughput_ips"].mean().sort_values("threads")
            dash = "solid" if requests <= 1 else "dash"
            placed.append((go.Scatter(
                x=g["threads"], y=g["throughput_ips"], mode="lines+markers", name=variant, legendgroup=variant,
                showlegend=variant not in shown, line=dict(color=colours[variant], dash=dash),
                hovertemplate=f"{variant}, {requests or 1} request(s) in flight<br>%{{x}} thread(s): "
                              "%{y:.1f} inferences/s<extra></extra>",
            ), r, c))  # fmt: skip
            shown.add(variant)
    fig.update_xaxes(dtick=1)
    return _add(fig, placed)


#: how History draws a change point: (marker symbol, colour)
CHANGE_MARKS = {"regression": ("x", "#d62728"), "improvement": ("triangle-down", "#2ca02c"), "acknowledged": ("circle-open", "#7f7f7f")}


def history(points: pd.DataFrame, metric: str, marks: pd.DataFrame | None = None) -> go.Figure:
    """``metric`` over time, one chart per device, a line per variant (dashed past the first thread
    setting); the change points in ``marks`` (``data.change_points``) on the first record of each new level:
    regressions as red crosses, improvements as green triangles, acknowledged ones as grey rings; the first record
    of a new model version (a new source sha under the same name) as a purple diamond, and the records of a named
    baseline (``points["baseline"]``, its tag) as orange stars. Hover shows each record's sweep labels."""
    label = METRICS[metric][0]
    key = points["device_name"].astype(str) + " · " + points["capability"].astype(str)
    devices = list(dict.fromkeys(sorted(key)))
    fig, cols = _facets(len(devices), devices, "finished at (UTC)", label)
    colours = variant_colours(points["variant"])
    thread_dash = {t: d for t, d in zip(sorted(points["threads"].unique()), ("solid", "dash", "dot", "dashdot"))}
    shown: set[str] = set()
    placed: list = []
    marks = marks if marks is not None else pd.DataFrame(columns=["device_name", "capability", "kind", "acked"])
    mark_key = marks["device_name"].astype(str) + " · " + marks["capability"].astype(str)
    for i, device in enumerate(devices):
        sub = points[key == device]
        r, c = i // cols + 1, i % cols + 1
        for (variant, threads), g in sub.groupby(["variant", "threads"]):
            name = variant if len(thread_dash) == 1 else f"{variant} · {threads}t"
            info = g.assign(labels=g.get("labels", "").fillna("") if "labels" in g else "",
                            version=g["model_id"].fillna("").str[:12] if "model_id" in g else "")  # fmt: skip
            placed.append((go.Scatter(
                x=g["at"], y=scaled(g, metric, "value"), mode="lines+markers", name=name, legendgroup=name,
                showlegend=name not in shown, marker=dict(size=5),
                line=dict(color=colours[variant], dash=thread_dash.get(threads, "solid")),
                customdata=info[["runs", "labels", "version"]].to_numpy(),
                hovertemplate=f"{name}<br>%{{x|%Y-%m-%d %H:%M}}: %{{y:.4g}} (%{{customdata[0]}} run(s))"
                              "<br>model version %{customdata[2]}<br>%{customdata[1]}<extra></extra>",
            ), r, c))  # fmt: skip
            shown.add(name)
        for what, rows, symbol, colour in (("new model version", sub[sub["new_version"]] if "new_version" in sub else sub.iloc[:0], "diamond-open", "#9467bd"),
                                           ("baseline", sub[sub["baseline"] != ""] if "baseline" in sub else sub.iloc[:0], "star", "#ff7f0e")):  # fmt: skip
            if rows.empty:
                continue
            text = rows["baseline"] if what == "baseline" else "model " + rows["model_id"].str[:12]
            placed.append((go.Scatter(
                x=rows["at"], y=scaled(rows, metric, "value"), mode="markers", name=what, legendgroup=what,
                showlegend=what not in shown, marker=dict(symbol=symbol, size=13, color=colour, line=dict(width=2)),
                text=text, hovertemplate=f"{what}: %{{text}}<extra></extra>",
            ), r, c))  # fmt: skip
            shown.add(what)
        here = marks[mark_key == device]
        for what, (symbol, colour) in CHANGE_MARKS.items():
            m = here[here["acked"]] if what == "acknowledged" else here[(here["kind"] == what) & ~here["acked"].astype(bool)]
            if m.empty:
                continue
            placed.append((go.Scatter(
                x=m["at"], y=scaled(m, metric, "value"), mode="markers", name=what, legendgroup=what,
                showlegend=what not in shown, marker=dict(symbol=symbol, size=12, color=colour, line=dict(width=2)),
                customdata=m[["variant", "kind", "ratio", "p_value", "ack_note"]].to_numpy(),
                hovertemplate="%{customdata[1]}: %{customdata[0]} %{customdata[2]:.3f}x (p=%{customdata[3]:.1g})"
                              "<br>%{customdata[4]}<extra></extra>",
            ), r, c))  # fmt: skip
            shown.add(what)
    return _add(fig, placed)


def compare_bars(table: pd.DataFrame, metric: str) -> go.Figure:
    """B/A ratio per row, coloured by verdict."""
    colour = {"worse": "#d62728", "better": "#2ca02c", "same": "#7f7f7f"}
    rows = table.dropna(subset=["ratio"])
    labels = rows["variant"] + " · " + rows["capability"] + " · " + rows["threads"].astype(str) + "t"
    fig = go.Figure(go.Bar(x=rows["ratio"], y=labels, orientation="h",
                           marker_color=[colour.get(v, "#7f7f7f") for v in rows["verdict"]],
                           hovertemplate="%{y}: B/A = %{x:.3f}<extra></extra>"))  # fmt: skip
    fig.add_vline(x=1.0, line_dash="dot")
    fig.update_layout(height=140 + 26 * len(rows), margin=dict(t=30, l=10, r=10, b=10),
                      xaxis_title=f"B / A of {METRICS[metric][0]} (ratio, 1 = same)", yaxis_title="variant · capability · threads")  # fmt: skip
    return fig


def records_per_capability(per_cap: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=per_cap["records"], y=per_cap["capability"], orientation="h", marker_color=PALETTE[0],
                           hovertemplate="%{y}: %{x:,} record(s)<extra></extra>"))  # fmt: skip
    fig.update_layout(height=100 + 28 * len(per_cap), margin=dict(t=10, l=10, r=10, b=10),
                      xaxis_title="stored records (count)", yaxis_title="capability")  # fmt: skip
    return fig


#: Precision colours on the Profile page: int8 warm, float cool, the same on every chart.
PRECISION_COLOURS = {"i8": "#d62728", "u8": "#ff7f0e", "i4": "#8c564b", "f16": "#2ca02c", "bf16": "#9467bd",
                     "f32": "#1f77b4", "i32": "#7f7f7f", "i64": "#bcbd22", "unknown": "#c7c7c7"}  # fmt: skip


def op_type_bars(sides: dict[str, pd.DataFrame], top: int = 15) -> go.Figure:
    """Time per inference by op type (ms), one bar per side (A, B) for each op type, the biggest first;
    by count where a side has no per-op time."""
    timed = all(df["time_ms"].notna().all() and not df.empty for df in sides.values())
    value = "time_ms" if timed else "count"
    order = (pd.concat(list(sides.values())).groupby("op_type")[value].max().sort_values(ascending=False)
             .index[:top].tolist())  # fmt: skip
    fig = go.Figure()
    for i, (label, df) in enumerate(sides.items()):
        df = df.set_index("op_type").reindex(order)
        fig.add_trace(go.Bar(y=order, x=df[value].fillna(0), name=label, orientation="h", marker_color=PALETTE[i],
                             hovertemplate="%{y}: %{x:.4g}" + (" ms" if timed else " node(s)") + "<extra>" + label
                             + "</extra>"))  # fmt: skip
    fig.update_layout(barmode="group", height=120 + 26 * len(order) * max(1, len(sides)),
                      margin=dict(t=30, l=10, r=10, b=10), legend=dict(orientation="h", y=1.02, yanchor="bottom"),
                      xaxis_title="time per inference (ms)" if timed else "nodes (no per-op time)",
                      yaxis=dict(title="op type", autorange="reversed"))  # fmt: skip
    return fig


def precision_coverage(cov: pd.DataFrame) -> go.Figure:
    """Share of each record's node time (or nodes) per precision, one stacked bar per variant × device."""
    labels = (cov["variant"] + " · " + cov["device"] + " · " + cov["threads"].astype(str) + "t").tolist()
    fig = go.Figure()
    for col in [c for c in cov.columns if c.startswith("share_")]:
        p = col.removeprefix("share_")
        fig.add_trace(go.Bar(y=labels, x=cov[col] * 100, name=p, orientation="h",
                             marker_color=PRECISION_COLOURS.get(p, PALETTE[len(fig.data) % len(PALETTE)]),
                             hovertemplate="%{y}: %{x:.1f}% " + p + "<extra></extra>"))  # fmt: skip
    fig.update_layout(barmode="stack", height=110 + 26 * len(labels), margin=dict(t=30, l=10, r=10, b=10),
                      legend=dict(title="ran in", orientation="h", y=1.02, yanchor="bottom"),
                      xaxis=dict(title="share of node time (%; of nodes where no per-op time)", range=[0, 100]),
                      yaxis=dict(title="variant · device", autorange="reversed"))  # fmt: skip
    return fig
