"""`fleetbench profile`: where the time goes inside a model, from a job's profile phase (``profile: true``).

One record: time by op type, the slowest nodes, the placement (on the target or fallen back, partitions) and
the precision coverage. A sweep: one line per profiled record, with its job id to look closer. Two records:
the difference op type by op type ("why is int8 not faster on this device").
"""

from __future__ import annotations

import json
import re
import sys
from typing import Optional

import typer
from rich.markup import escape as e
from rich.table import Table

from controller.cli.app import DataDirOpt, DbOpt, _fail, _open_store, app, console
from protocol import Profile, ResultRecord
from protocol.profiling import diff, int8_share

_JOB_PREFIX = re.compile(r"[0-9a-f]{4,64}")
ADVICE = "add `profile: true` to the sweep spec (or settings.profile) and run it again"


def _ms(v: float | None) -> str:
    """Milliseconds, for the summary lines."""
    if v is None:
        return "-"
    return f"{v:.4f}" if abs(v) < 1 else f"{v:,.2f}"


def _us(v_ms: float | None, signed: bool = False) -> str:
    """A time in ms shown in microseconds (an op of an edge model takes µs to ms); "0" only when it is 0."""
    if v_ms is None:
        return "-"
    v = v_ms * 1000
    text = f"{v:+,.1f}" if signed else f"{v:,.1f}"
    if v != 0 and abs(v) < 0.05:
        text = f"{v:+.2g}" if signed else f"{v:.2g}"
    return text


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _resolve(store, ref: str) -> tuple[list[ResultRecord], str]:
    """(records, what ``ref`` named: "job" or "sweep"): a job id or its first characters, else a sweep."""
    from controller.store import StoreError

    named = store.sweep_named(ref)
    if named is not None:  # a sweep's own name wins over a job id that happens to start the same
        return store.sweep_results(named.sweep_id), "sweep"
    if _JOB_PREFIX.fullmatch(ref):
        found = store.results_by_job(ref)
        jobs = list(dict.fromkeys(r.job_id for r in found))
        if len(jobs) > 1:
            shown = ", ".join(j[:12] for j in jobs[:4])
            _fail(f"'{ref}' starts the job ids of {len(jobs)}{'+' if len(found) == 10 else ''} records ({shown}); "
                  "give more of the job id", code=2)  # fmt: skip
        if jobs:
            return found[:1], "job"
    try:
        sweep = store.resolve_sweep(ref)
    except StoreError:
        _fail(f"no record's job id starts with '{ref}' and no sweep is called so; `fleetbench status SWEEP` lists a "
              "sweep's job ids", code=2)  # fmt: skip
    return store.sweep_results(sweep.sweep_id), "sweep"


def _profile_of(r: ResultRecord) -> Profile:
    """The record's profile, or one clear line: none was asked for, or it could not run."""
    what = f"{r.model_name} {r.variant} on {r.capability} (job {r.job_id[:8]})"
    if r.profile is None:
        _fail(f"{what} has no profile: {ADVICE}")
    if r.profile.error:
        _fail(f"{what}: {r.profile.error}")
    return r.profile


@app.command()
def profile(
    refs: list[str] = typer.Argument(..., metavar="RESULT|SWEEP [RESULT]",
                                     help="A record's job id (its first characters, as `fleetbench status SWEEP` "
                                          "shows them) or a sweep; two job ids compare them op type by op type."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    top: int = typer.Option(15, "--top", help="Op types and nodes shown in a table (a profile keeps 20 nodes)."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Where the time goes inside a model: per-op time, placement and the precision each node ran in."""
    if len(refs) > 2:
        _fail(f"give one record or sweep, or two records to compare; got {len(refs)}", code=2)
    if fmt not in ("table", "csv", "json"):
        _fail(f"--format must be table, csv or json; got '{fmt}'", code=2)
    if top < 1:
        _fail(f"--top must be at least 1; got {top}", code=2)
    with _open_store(data_dir, db) as (_, store):
        resolved = [_resolve(store, ref) for ref in refs]
    if len(refs) == 2:
        pair = []
        for ref, (records, kind) in zip(refs, resolved):
            profiled = [r for r in records if r.profile is not None] if kind == "sweep" else records
            if len(profiled) != 1:
                _fail(f"'{ref}' is a sweep with {len(profiled)} profiled records; compare two records by job id "
                      f"(`fleetbench profile {ref}` lists them)", code=2)  # fmt: skip
            pair.append(profiled[0])
        _show_diff(pair[0], pair[1], fmt)
        return
    records, kind = resolved[0]
    if kind == "job":
        _show_one(records[0], fmt, top)
        return
    profiled = [r for r in records if r.profile is not None]
    if not profiled:
        _fail(f"sweep '{refs[0]}' has {len(records)} record(s) and none with a profile: {ADVICE}")
    _show_sweep(refs[0], profiled, fmt)


def _record_dict(r: ResultRecord) -> dict:
    return {"job_id": r.job_id, "attempt": r.attempt, "model_name": r.model_name, "variant": r.variant,
            "capability": r.capability, "device_name": r.device_name, "threads": r.settings.threads,
            "p50_ms": r.stats.p50_ms, "mean_ms": r.stats.mean_ms}  # fmt: skip


def _csv(rows: list[list], header: list[str]) -> None:
    import csv

    w = csv.writer(sys.stdout)
    w.writerow(header)
    w.writerows(rows)


_OP_CSV = ["job_id", "model_name", "variant", "capability", "op_type", "count", "time_ms", "share"]


def _op_rows(r: ResultRecord) -> list[list]:
    return [[r.job_id, r.model_name, r.variant, r.capability, t.op_type, t.count, t.time_ms, t.share]
            for t in r.profile.op_types]  # fmt: skip


# ---------------------------------------------------------------- one record


def _show_one(r: ResultRecord, fmt: str, top: int) -> None:
    p = _profile_of(r)
    if fmt == "json":
        sys.stdout.write(json.dumps({"record": _record_dict(r), "profile": p.to_dict()}, indent=1) + "\n")
        return
    if fmt == "csv":
        _csv(_op_rows(r), _OP_CSV)
        return
    console.print(f"[bold]Profile of {e(r.model_name)} {e(r.variant)}[/] on {e(r.capability)} ({e(r.device_name)}), "
                  f"job {r.job_id[:8]}, {r.settings.threads} thread(s)", highlight=False)  # fmt: skip
    for line in summary_lines(r, p):
        console.print(f"  {e(line)}", highlight=False)
    console.print(_op_types_table(p, top))
    console.print(_nodes_table(p, top))
    console.print(_precision_table(p))
    for note in ([p.op_time] if p.op_time else []) + list(p.notes):
        console.print(f"[dim]note: {e(note)}[/]", highlight=False)


def summary_lines(r: ResultRecord, p: Profile) -> list[str]:
    """What a profile says in a few lines: how it was made, its time against the latency, the placement."""
    runs = f"{p.runs} runs, {p.nodes} nodes executed" if p.runs else f"{p.nodes} nodes (the runtime was not run for it)"
    out = [f"{p.source}: {runs}" + (f", {p.not_executed} fused or optimized out" if p.not_executed else "")]
    if p.node_time_ms is not None:
        line = f"summed node time {_ms(p.node_time_ms)} ms"
        if p.latency_ms:
            line += f"; runtime's latency while profiling {_ms(p.latency_ms)} ms ({p.node_time_ms / p.latency_ms:.2f}x)"
        out.append(line + f"; latency phase mean {_ms(r.stats.mean_ms)} ms")
    pl = p.placement
    where = f"{pl.ops_on_target} of {pl.ops_on_target + pl.fallback_ops} ops on {pl.target}"
    where += f" in {pl.partitions} partition{'s' if pl.partitions != 1 else ''}"
    if pl.fallback_ops:
        others = ", ".join(f"{k} {v}" for k, v in pl.places.items() if k != pl.target)
        where += f"; fell back: {pl.fallback_ops} ({others}): {', '.join(pl.fallback_op_types[:6])}"
        where += "…" if len(pl.fallback_op_types) > 6 else ""
    if pl.time_on_target_ms is not None and p.node_time_ms:
        where += f"; {_pct(pl.time_on_target_ms / p.node_time_ms)} of the time on {pl.target}"
    out.append(where)
    share = int8_share(p)
    if share is not None:
        out.append(f"int8: {_pct(share[0])} of the {'node time' if share[1] == 'time' else 'nodes'}")
    return out


def _op_types_table(p: Profile, top: int) -> Table:
    shown = p.op_types[:top]
    title = "Time by op type" if p.node_time_ms is not None else "Ops by type (no per-op time)"
    if len(p.op_types) > top:
        title += f", {top} of {len(p.op_types)}"
    table = Table(title=title, title_justify="left")
    for col in ("op type", "count", "time µs", "share", ""):
        table.add_column(col, justify="left" if col in ("op type", "") else "right", no_wrap=col != "op type",
                         overflow="fold")  # fmt: skip
    for t in shown:
        bar = "█" * round((t.share or 0) * 30) if t.share is not None else ""
        table.add_row(e(t.op_type), str(t.count), _us(t.time_ms), _pct(t.share), f"[cyan]{bar}[/]")
    return table


def _nodes_table(p: Profile, top: int) -> Table:
    nodes = p.top_nodes[:top]
    title = "Slowest nodes" if p.node_time_ms is not None else "First nodes in execution order"
    table = Table(title=f"{title} ({len(nodes)} of {p.nodes})", title_justify="left")
    for col in ("time µs", "share", "op type", "place", "ran in", "kernel", "node"):
        table.add_column(col, justify="right" if col in ("time µs", "share") else "left",
                         no_wrap=col in ("time µs", "share", "place", "ran in"), overflow="fold",
                         max_width=30 if col == "kernel" else 44 if col == "node" else None)  # fmt: skip
    for n in nodes:
        share = n.time_ms / p.node_time_ms if n.time_ms is not None and p.node_time_ms else None
        table.add_row(_us(n.time_ms), _pct(share), e(n.op_type), e(n.place), e(n.precision or "-"), e(n.exec_type or "-"),
                      e(n.name))  # fmt: skip
    return table


def _precision_table(p: Profile) -> Table:
    table = Table(title="Precision coverage", title_justify="left", caption="of all the executed nodes and their "
                  "time; unknown: the kernel names no precision", caption_justify="left")  # fmt: skip
    for col in ("ran in", "nodes", "of nodes", "time µs", "of time"):
        table.add_column(col, justify="left" if col == "ran in" else "right")
    for s in p.precisions:
        table.add_row(e(s.precision), str(s.ops), _pct(s.op_share), _us(s.time_ms), _pct(s.time_share))
    return table


# ---------------------------------------------------------------- a sweep


def _show_sweep(ref: str, records: list[ResultRecord], fmt: str) -> None:
    if fmt == "json":
        out = [{"record": _record_dict(r), "profile": r.profile.to_dict()} for r in records]
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return
    if fmt == "csv":
        _csv([row for r in records if not r.profile.error for row in _op_rows(r)], _OP_CSV)
        return
    models = sorted({r.model_name for r in records})
    threads = sorted({r.settings.threads for r in records})
    title = f"Profiles in sweep {e(ref)}" + (f" ({e(models[0])})" if len(models) == 1 else "")
    title += f", {threads[0]} thread{'s' if threads[0] != 1 else ''}" if len(threads) == 1 else ""
    table = Table(title=title, title_justify="left", caption="`fleetbench profile JOB` shows one; `fleetbench profile "
                  "JOB JOB` compares two", caption_justify="left")  # fmt: skip
    numbers = ("thr", "parts", "int8", "node µs")
    cols = ("job",) + (("model",) if len(models) > 1 else ()) + ("variant", "device") + \
        (("thr",) if len(threads) > 1 else ()) + ("on target", "parts", "int8", "node µs", "slowest op type")  # fmt: skip
    for col in cols:  # ids and numbers never wrap; names do, down to a readable width
        table.add_column(col, justify="right" if col in numbers + ("on target",) else "left",
                         no_wrap=col in numbers or col == "job", overflow="fold",
                         min_width={"model": 12, "variant": 11, "device": 10, "on target": 9}.get(col))  # fmt: skip
    for r in records:
        p = r.profile
        head = (e(r.job_id[:8]),) + ((e(r.model_name),) if len(models) > 1 else ()) + (e(r.variant), e(r.capability)) + \
            ((str(r.settings.threads),) if len(threads) > 1 else ())  # fmt: skip
        if p.error:
            table.add_row(*head, "[yellow]failed[/]", "", "", "", e(p.error))
            continue
        pl, share = p.placement, int8_share(p)
        slowest = p.op_types[0] if p.op_types else None
        slow = "-" if slowest is None else (f"{e(slowest.op_type)} {_pct(slowest.share)}" if slowest.share is not None
                                            else f"{e(slowest.op_type)} ×{slowest.count}")  # fmt: skip
        table.add_row(*head, f"{pl.ops_on_target}/{pl.ops_on_target + pl.fallback_ops} {e(pl.target)}", str(pl.partitions),
                      "-" if share is None else _pct(share[0]) + ("" if share[1] == "time" else " ops"),
                      _us(p.node_time_ms), slow)  # fmt: skip
    console.print(table)


# ---------------------------------------------------------------- two records


def _show_diff(a: ResultRecord, b: ResultRecord, fmt: str) -> None:
    pa, pb = _profile_of(a), _profile_of(b)
    rows = diff(pa, pb)
    if fmt == "json":
        out = {"a": {"record": _record_dict(a), "profile": pa.to_dict()},
               "b": {"record": _record_dict(b), "profile": pb.to_dict()},
               "op_types": [dict(op_type=d.op_type, count_a=d.count_a, count_b=d.count_b, time_a_ms=d.time_a_ms,
                                 time_b_ms=d.time_b_ms, delta_ms=d.delta_ms, ratio=d.ratio) for d in rows]}  # fmt: skip
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return
    if fmt == "csv":
        _csv([[d.op_type, d.count_a, d.count_b, d.time_a_ms, d.time_b_ms, d.delta_ms, d.ratio] for d in rows],
             ["op_type", "count_a", "count_b", "time_a_ms", "time_b_ms", "delta_ms", "ratio"])  # fmt: skip
        return
    for label, r, p in (("A", a, pa), ("B", b, pb)):
        console.print(f"[bold]{label}[/]: {e(r.model_name)} {e(r.variant)} on {e(r.capability)}, job {e(r.job_id[:8])}: "
                      f"p50 {_ms(r.stats.p50_ms)} ms, summed node time {_ms(p.node_time_ms)} ms", highlight=False)  # fmt: skip
        for line in summary_lines(r, p)[2:]:  # placement and int8 share
            console.print(f"   {e(line)}", highlight=False)
    table = Table(title="Op types, A against B (the biggest change in time first)", title_justify="left")
    for col in ("op type", "count A", "count B", "time A µs", "time B µs", "B - A µs", "B / A"):
        table.add_column(col, justify="left" if col == "op type" else "right", no_wrap=col != "op type")
    for d in rows:
        delta = "-" if d.delta_ms is None else (f"[red]{_us(d.delta_ms, True)}[/]" if d.delta_ms > 0 else
                                                f"[green]{_us(d.delta_ms, True)}[/]" if d.delta_ms < 0 else "0")  # fmt: skip
        ratio = "-" if d.ratio is None else f"{d.ratio:.2f}"
        table.add_row(e(d.op_type), str(d.count_a), str(d.count_b), _us(d.time_a_ms), _us(d.time_b_ms), delta, ratio)
    if pa.node_time_ms is not None and pb.node_time_ms is not None:
        table.add_section()
        table.add_row("[bold]all nodes[/]", str(pa.nodes), str(pb.nodes), _us(pa.node_time_ms), _us(pb.node_time_ms),
                      _us(pb.node_time_ms - pa.node_time_ms, True),
                      f"{pb.node_time_ms / pa.node_time_ms:.2f}" if pa.node_time_ms else "-")  # fmt: skip
    console.print(table)
    if pa.source != pb.source:
        console.print(f"[dim]note: A was profiled by {e(pa.source)}, B by {e(pb.source)}: their op types need not match[/]",
                      highlight=False)  # fmt: skip
