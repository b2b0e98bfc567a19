"""Tables and CSV: how records, conversions and agents are shown in a terminal."""

from __future__ import annotations

import datetime as dt

from rich.markup import escape
from rich.table import Table

from controller.analysis.quantization import details_summary
from controller.cli.app import console
from protocol import ResultRecord


def _fmt_ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def fidelity_cell(f) -> str:
    """The worst output's SNR (dB), with top-1 agreement where an output holds class scores."""
    if f is None:
        return "-"
    if f.snr_db is None:  # a record from before every output was compared
        text = f"top-1 {f.top1_agreement:.3f}" if f.top1_agreement is not None else f"cos {f.mean_cosine:.4f}"
    else:
        text = "identical" if f.snr_db >= 300 else f"{f.snr_db:.1f} dB"
        if f.top1_agreement is not None:
            text += f" {f.top1_agreement:.3f}"
    return text + (" [yellow]![/]" if f.warnings else "")


#: Results columns: (header, justify, priority). Shown in this order; when the terminal is too narrow,
#: the highest priority numbers go first (1 is kept longest). Names may wrap; numbers never do.
RESULT_COLUMNS = [
    ("model", "left", 1), ("variant", "left", 1), ("ran in", "left", 4), ("device", "left", 1),
    ("runtime", "left", 0), ("threads", "right", 0),
    ("p50 ms", "right", 1), ("p90 ms", "right", 6), ("inf/s", "right", 7), ("accuracy", "right", 3),
    ("fidelity", "right", 4), ("cosine", "right", 0), ("samples", "right", 0), ("KiB", "right", 5),
    ("mJ/inf", "right", 0), ("drift", "right", 0), ("valid", "left", 2),
]  # fmt: skip


_NAMES = {"model", "variant", "device", "runtime"}


# size: one column per metric, each with its narrow-terminal rule
def results_table(records: list[ResultRecord], title: str = "Results", wide: bool = False,
                  width: int | None = None) -> Table:  # fmt: skip
    """Records as a table that fits ``width`` (the console's): columns in a fixed order, the least needed
    dropped first when it would not fit; names wrap, numbers never do. ``wide`` shows every column
    (priority 0 ones too: runtime version, threads, cosine, samples) and the validity reasons in full.
    Invalid records, fidelity warnings and the user's own files are footnoted under the table.
    """
    from rich.text import Text

    notes: list[str] = []

    def note(text: str) -> str:
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    rows = []
    for r in records:
        fid = fidelity_cell(r.fidelity)
        if r.fidelity is not None and r.fidelity.warnings:
            fid += note("; ".join(r.fidelity.warnings))
        if r.validity.valid:
            valid = "yes"
        elif wide:
            valid = "[yellow]no[/]: " + "; ".join(r.validity.reasons)
        else:
            valid = "[yellow]no[/]" + note("; ".join(r.validity.reasons))
        valid += "".join(note(text) for text in conditions_notes(r))
        variant = r.variant + (note("the user's own file, benchmarked as it is") if r.from_source else "")
        accuracy = r.accuracy.headline() if r.accuracy else ("-" if r.accuracy_top1 is None else f"{r.accuracy_top1:.4f}")
        rows.append({
            "model": r.model_name, "variant": variant, "ran in": r.precision or "-",
            "device": (r.capability if not wide else f"{r.capability}\n[dim]{r.device_name}[/]") + (
                note(f"an emulated agent ({r.host.emulated_by}): its timings are not the device's") if r.host.emulated_by else ""),
            "runtime": f"{r.runtime} {r.runtime_version}", "threads": str(r.settings.threads),
            "p50 ms": _fmt_ms(r.stats.p50_ms), "p90 ms": _fmt_ms(r.stats.p90_ms),
            "inf/s": f"{r.throughput.ips:,.0f} ({r.throughput.requests} req)" if r.throughput else f"{r.throughput_ips:,.0f}",
            "accuracy": accuracy, "fidelity": fid,
            "cosine": "-" if r.fidelity is None else f"{r.fidelity.mean_cosine:.6f}", "samples": f"{r.stats.count:,}",
            "KiB": f"{r.model_size_bytes / 1024:,.1f}", "valid": valid, "mJ/inf": _energy_cell(r),
            "drift": _drift_cell(r),
        })  # fmt: skip

    def need(col: str) -> int:  # the column's width with its padding and border
        cells = [col] + [ln for row in rows for ln in row[col].split("\n")]
        w = max(Text.from_markup(c).cell_len for c in cells)
        return (min(w, 12) if col in _NAMES else w) + 3  # a name may wrap down to 12

    columns = RESULT_COLUMNS
    if len({r.settings.threads for r in records}) > 1:  # rows that differ only in threads must say so
        columns = [(c, j, 1) if c == "threads" else (c, j, p) for c, j, p in columns]
    if any(r.sustained is not None for r in records):  # sustained runs: their drift is what was asked for
        columns = [(c, j, 3) if c == "drift" else (c, j, p) for c, j, p in columns]
    shown = [c for c in columns if wide or c[2] > 0]
    if not wide and width:
        while sum(need(c[0]) for c in shown) + 1 > width and len(shown) > 4:
            shown.remove(max(shown, key=lambda c: c[2]))
    table = Table(title=title, title_justify="left", caption_justify="left")
    for col, justify, _ in shown:
        longest = max((Text.from_markup(row[col]).cell_len for row in rows), default=0)
        table.add_column(col, justify=justify, no_wrap=col not in _NAMES and not (wide and col == "valid"),
                         min_width=min(longest, 12) if col in _NAMES else None,
                         max_width=60 if wide and col == "valid" else None,
                         overflow="fold" if col in _NAMES or col == "valid" else "ellipsis")  # fmt: skip
    for row in rows:
        table.add_row(*(row[c[0]] for c in shown))
    dropped = [c[0] for c in columns if c[2] > 0 and c not in shown]
    if dropped:
        notes.append(f"not shown at this width: {', '.join(dropped)} (--wide shows every column)")
    if notes:
        table.caption = "\n".join(f"[{i}] {t}" if not t.startswith("not shown") else t for i, t in enumerate(notes, 1))
    return table


def conditions_notes(r: ResultRecord) -> list[str]:
    """Why a record's speed may not be the device's own: other processes' CPU time during it, a falling clock."""
    c = r.conditions
    if c is None:
        return []
    out = [f"waited before the job: {w.why}" for w in c.waits if not w.done]  # a wait that stopped at its limit
    if c.disturbed:
        out.append(f"disturbed: other processes used {c.other_cpu_cores:.2f} cores during the job "
                   f"(limit {c.disturbance_max_cores:g})")  # fmt: skip
    if c.throttled:
        out.append(f"throttled: {c.throttle_why}")
    return out


#: A drift further than this from 1 is drawn in yellow.
DRIFT_NOTABLE = 0.10


def _drift_cell(r: ResultRecord) -> str:
    """A sustained run's last-window p50 over its first, with how long it ran, or "-"."""
    s = r.sustained
    if s is None or s.drift_ratio is None:
        return "-"
    text = f"{s.drift_ratio:.2f}x / {s.seconds / 60:.0f} min" if s.seconds >= 120 else f"{s.drift_ratio:.2f}x / {s.seconds:.0f} s"
    return f"[yellow]{text}[/]" if abs(s.drift_ratio - 1) > DRIFT_NOTABLE else text


def _energy_cell(r: ResultRecord) -> str:
    """Millijoules per inference with the average watts, or "-" (no sensor, or an invalid window)."""
    e = r.energy
    if e is None or not e.measured:
        return "-"
    return f"{e.mj_per_inference:.4g} ({e.domains[0].avg_w:.3g} W)"


def spinner():
    """A spinner with the step and the time taken, for work of unknown length (a conversion)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True)


def sweep_progress():
    """A bar of a sweep's finished jobs, with the counts by state."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                    TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), console=console)  # fmt: skip


def conversion_table(report, artifacts=None) -> Table:
    """The variants a conversion made. With ``artifacts`` (the store), an int8 file over the size target says
    where its bytes go (:func:`controller.convert.sizes.int8_reason`)."""
    from controller.convert.sizes import int8_reason

    table = Table(title=f"Variants of {report.name} ({report.model_id[:12]}, {report.kind})", title_justify="left")
    for col, justify in [("variant", "left"), ("made", "left"), ("status", "left"), ("size KiB", "right"),
                         ("vs fp32", "right"), ("convert s", "right"), ("cached", "left")]:  # fmt: skip
        table.add_column(col, justify=justify, no_wrap=col != "status", overflow="fold")
    fp32 = {o.variant.split("-")[0]: o.size_bytes for o in report.outcomes if o.variant.endswith("-fp32") and o.size_bytes}
    for o in report.outcomes:
        base = fp32.get(o.variant.split("-")[0])
        rel = f"{o.size_bytes / base:.2f}" if (o.size_bytes and base) else "-"
        status = {"converted": "[green]ok[/]", "cached": "[green]ok[/]", "refused": "[yellow]refused[/]",
                  "failed": "[red]failed[/]"}[o.status]  # fmt: skip
        if o.error:
            status += f": {o.error}"
        found = details_summary(getattr(o, "details", None))
        if found:
            status += f" [dim]({escape(found)})[/]"
        if artifacts is not None and o.artifact is not None and o.size_bytes:
            why = int8_reason(o.variant, o.size_bytes, base, artifacts.path_for(o.artifact.sha256))
            if why:
                status += f" [dim]({why})[/]"
        table.add_row(
            o.variant,
            "source" if o.from_source else ("derived" if o.status in ("converted", "cached") else "-"),
            status,
            f"{o.size_bytes / 1024:,.1f}" if o.size_bytes else "-",
            rel,
            f"{o.seconds:.2f}" if o.seconds is not None else "-",
            "yes" if o.status == "cached" else "no",
        )
    return table


def fleet_table(title: str, agents: list[dict], width: int | None = None) -> Table:
    """Agents (agent_id, hostname, capabilities, online: True/False/None for unknown, last_heartbeat) as a table.

    Ids and times never wrap (people copy them); the capabilities take the wrapping. Below 110 columns
    the last-heartbeat column goes, and an offline agent's status carries the time.
    """
    narrow = width is not None and width < 110
    today = dt.datetime.now(dt.timezone.utc).date()
    table = Table(title=title, title_justify="left")
    cols = ("agent", "host", "capabilities", "status") + (() if narrow else ("last heartbeat",))
    for col in cols:
        table.add_column(col, no_wrap=col in ("agent", "status", "last heartbeat"), overflow="fold",
                         min_width=14 if col == "capabilities" else None)  # fmt: skip
    for a in agents:
        caps = "\n".join(
            f"{c['name']} [dim]{c['device_name']}" + (f" ({', '.join(c['precisions'])})" if c.get("precisions") else "") + "[/]"
            for c in a["capabilities"]
        )
        when = a["last_heartbeat"].strftime("%Y-%m-%d %H:%M:%S UTC")
        short = a["last_heartbeat"].strftime("%H:%M:%S UTC") if narrow and a["last_heartbeat"].date() == today else when
        status = {None: "unknown", True: "[green]online[/]"}.get(a["online"], f"[yellow]offline[/] since {short}")
        machine = a.get("machine", "") + (" [yellow](emulated)[/]" if a.get("emulated_by") else "")
        host = a["hostname"] + (f"\n[dim]{machine}[/]" if machine else "")
        table.add_row(a["agent_id"], host, caps, status, *(() if narrow else (when,)))
    return table


CSV_COLUMNS = ["job_id", "attempt", "model_name", "model_id", "variant", "capability", "device_name", "agent_id", "machine",
               "emulated_by",
               "runtime", "runtime_version", "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "samples", "valid",
               "throughput_ips", "accuracy_top1", "accuracy_task", "accuracy_top5", "accuracy_mean_iou", "accuracy_mae",
               "accuracy_rmse", "top1_agreement", "fidelity_snr_db", "fidelity_cosine",
               "fidelity_max_abs_error", "fidelity_worst_output", "fidelity_warnings", "precision", "model_size_bytes", "peak_rss_bytes",
               "loadgen_scenario", "loadgen_verdict", "fallback_ops", "partitions", "int8_share", "int8_by",
               "energy_mj_per_inference", "energy_avg_w", "energy_peak_w", "energy_domain", "energy_why",
               "throughput_mj_per_inference", "disturbed", "other_cpu_cores", "throttled", "cpu_affinity",
               "cooldown_s", "quiet_wait_s", "sustained_s", "drift_ratio", "finished_at"]  # fmt: skip


def write_csv(records, out) -> None:
    import csv

    from protocol.flatten import record_fields

    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for r in records:
        fields = record_fields(r)
        w.writerow([fields[c] for c in CSV_COLUMNS])
