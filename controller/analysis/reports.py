"""A readiness verdict as JUnit XML (for CI), a self-contained HTML report, and Markdown."""

from __future__ import annotations

from controller.analysis.readiness import Readiness


def junit_xml(r: Readiness) -> str:
    """One test case per capability × variant (× threads), plus one per required device class."""
    import xml.etree.ElementTree as ET

    cases = []
    for v in r.verdicts:
        c = v.candidate
        case = ET.Element("testcase", classname=f"readiness.{r.model}.{c.capability}",
                          name=f"{c.variant} threads={c.threads}", time="0")  # fmt: skip
        if not v.passed:
            failure = ET.SubElement(case, "failure", message="; ".join(v.reasons), type="budget")
            failure.text = "\n".join(v.reasons)
        cases.append(case)
    for req, caps in r.required.items():
        case = ET.Element("testcase", classname=f"readiness.{r.model}.required", name=req, time="0")
        if not caps:
            ET.SubElement(case, "failure", message=f"no capability matching {req} has a passing variant",
                          type="required")  # fmt: skip
        cases.append(case)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    suite = ET.Element("testsuite", name=f"fleetbench readiness: {r.model}", tests=str(len(cases)),
                       failures=str(failures), errors="0", skipped="0")  # fmt: skip
    suite.extend(cases)
    root = ET.Element("testsuites", tests=str(len(cases)), failures=str(failures))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _figure(r: Readiness, capability: str):
    import plotly.graph_objects as go

    vs = [v for v in r.verdicts if v.candidate.capability == capability]
    budget = vs[0].budget
    p = budget.percentile
    fig = go.Figure()
    from plotly.colors import qualitative

    variants = sorted({v.candidate.variant for v in vs})
    for i, variant in enumerate(variants):
        for passed, symbol in ((True, "circle"), (False, "x")):
            pts = [v for v in vs if v.candidate.variant == variant and v.passed == passed]
            if not pts:
                continue
            quality = [(v.candidate.accuracy if v.candidate.accuracy is not None else v.candidate.fidelity or 0) * 100
                       for v in pts]  # fmt: skip
            fig.add_trace(go.Scatter(
                x=[v.candidate.percentiles_ms[p] for v in pts], y=quality, mode="markers",
                name=f"{variant} ({'passes' if passed else 'fails'})",
                marker=dict(size=12, symbol=symbol, color=qualitative.D3[i % len(qualitative.D3)]),
                hovertext=[f"{variant}, {v.candidate.threads} thread(s): " + ("; ".join(v.reasons) or "passes")
                           for v in pts],
            ))  # fmt: skip
    if p in budget.latency_ms:
        fig.add_vline(x=budget.latency_ms[p], line_dash="dash", annotation_text=f"p{p} budget {budget.latency_ms[p]:g} ms")
    fp32 = next((v.fp32_accuracy for v in vs if v.fp32_accuracy is not None), None)
    if budget.accuracy_drop_max is not None and fp32 is not None:
        floor = fp32 * 100 - budget.accuracy_drop_max
        fig.add_hline(y=floor, line_dash="dash", annotation_text=f"accuracy floor {floor:.2f}%")
    fig.update_layout(height=420, margin=dict(t=40, l=10, r=10, b=10), title=f"{capability} ({vs[0].candidate.device_name})",
                      xaxis_title=f"p{p} latency (ms)", yaxis_title="top-1 accuracy (%)")  # fmt: skip
    return fig


def html_report(r: Readiness) -> str:
    """A self-contained HTML page (Plotly's script inlined once): verdicts, recommendations, a chart per device."""
    import html

    caps = sorted({v.candidate.capability for v in r.verdicts})
    parts = []
    for i, cap in enumerate(caps):
        parts.append(_figure(r, cap).to_html(full_html=False, include_plotlyjs=(i == 0), config={"responsive": True}))
    rows = "".join(
        f"<tr class='{'pass' if v.passed else 'fail'}'><td>{html.escape(v.candidate.capability)}</td>"
        f"<td>{html.escape(v.candidate.variant)}</td><td>{v.candidate.threads}</td>"
        f"<td>{v.candidate.percentiles_ms[v.budget.percentile]:.4g}</td>"
        f"<td>{'' if v.candidate.accuracy is None else f'{v.candidate.accuracy:.2%}'}</td>"
        f"<td>{'PASS' if v.passed else 'FAIL'}</td><td>{html.escape('; '.join(v.reasons))}</td></tr>"
        for v in r.verdicts
    )
    recs = "".join(f"<li><b>{html.escape(cap)}</b>: {html.escape(v.candidate.variant)} "
                   f"({v.candidate.threads} thread(s))</li>" for cap, v in sorted(r.recommended.items()))  # fmt: skip
    req = "".join(f"<li>{html.escape(k)}: {'passing on ' + ', '.join(map(html.escape, v)) if v else '<b>no passing variant</b>'}</li>"
                  for k, v in r.required.items())  # fmt: skip
    verdict = "READY" if r.ready else "NOT READY"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fleetbench readiness: {html.escape(r.model)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} tr.pass td:nth-child(6){{color:#2ca02c}}
tr.fail td:nth-child(6){{color:#d62728;font-weight:bold}} .verdict{{font-size:1.5em}}</style></head>
<body><h1>Readiness of {html.escape(r.model)}</h1>
<p class="verdict" id="verdict">{verdict}</p>
<h2>Required device classes</h2><ul>{req or '<li>none listed</li>'}</ul>
<h2>Recommended variant per device</h2><ul id="recommended">{recs or '<li>none passes</li>'}</ul>
<h2>Verdicts</h2>
<table id="verdicts"><tr><th>capability</th><th>variant</th><th>threads</th><th>latency at the budget's percentile (ms)</th>
<th>accuracy</th><th>verdict</th><th>reasons</th></tr>{rows}</table>
<h2>Latency against accuracy, budgets as dashed lines</h2>
{''.join(parts)}
</body></html>
"""


def markdown_report(r: Readiness) -> str:
    """The same verdicts as a Markdown page (tables only; the HTML report has the charts)."""
    lines = [f"# Readiness of {r.model}: {'READY' if r.ready else 'NOT READY'}", "", "## Required device classes", ""]
    lines += [f"- {k}: " + (f"passing on {', '.join(v)}" if v else "**no passing variant**") for k, v in r.required.items()]
    lines += ["", "## Recommended variant per device", ""]
    lines += [f"- **{cap}**: {v.candidate.variant} ({v.candidate.threads} thread(s))" for cap, v in sorted(r.recommended.items())]
    lines += ["", "## Verdicts", "", "| capability | variant | threads | latency (ms) | accuracy | verdict | reasons |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for v in r.verdicts:
        c = v.candidate
        acc = "-" if c.accuracy is None else f"{c.accuracy:.2%}"
        lines.append(f"| {c.capability} | {c.variant} | {c.threads} | p{v.budget.percentile} "
                     f"{c.percentiles_ms[v.budget.percentile]:.4g} | {acc} | {'pass' if v.passed else 'FAIL'} | "
                     f"{'; '.join(v.reasons)} |")  # fmt: skip
    return "\n".join(lines) + "\n"
