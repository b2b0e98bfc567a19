"""`fleetbench readiness`, `fleetbench compare` and `fleetbench baseline`: answers a release can gate on.

Exit codes: 0 ready / no regression; 1 not ready / a regression; 2 bad input
(a budgets file, a sweep or a model that is not there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from controller.cli.app import DataDirOpt, DbOpt, _fail, _open_store, _writable_parent, app, console, err_console

baseline_app = typer.Typer(help="Named baselines: a tag pointing at a sweep, for `fleetbench compare baseline:TAG ...`.")
app.add_typer(baseline_app, name="baseline")


def _model_records(store, model: str, sweep: Optional[str]):
    """(model name, records): the model's records in ``sweep``, or the newest one per setting."""
    from controller.store import StoreError

    by_name = False
    try:
        row = store.find_model(model)
        model_id, name = row.model_id, row.name
        by_name = row.name == model and not row.model_id.startswith(model)  # a name: its newest version
    except StoreError:
        found = store.model_of_results(model)
        if found is None:
            raise
        model_id, name = found
    if sweep:
        records = store.sweep_results(store.resolve_sweep(sweep).sweep_id)
        mine = [r for r in records if r.model_id == model_id]
        named = [r for r in records if r.model_name == name]
        if not mine and by_name and named:  # the sweep ran another version of that name: the newest it ran
            newest = max(named, key=lambda r: r.finished_at).model_id
            mine = [r for r in named if r.model_id == newest]
        return name, mine
    records = store.newest_results(model_id)
    if not records and by_name:  # the newest version has no record yet: the version that has the newest one
        found = store.model_of_results(model)
        if found is not None:
            return found[1], store.newest_results(found[0])
    return name, records


EmulatedOpt = typer.Option(False, "--include-emulated",
                           help="Keep records of emulated agents (qemu-user): their timings are not a device's.")  # fmt: skip


def _native(records: list, include_emulated: bool) -> list:
    """``records`` without those of emulated agents (unless kept), saying on stderr how many were left out."""
    if include_emulated:
        return records
    kept = [r for r in records if not r.host.emulated_by]
    if len(kept) < len(records):
        err_console.print(f"note: {len(records) - len(kept)} record(s) of emulated agents left out: their timings are "
                          "qemu's, not a device's (--include-emulated keeps them)", highlight=False)  # fmt: skip
    return kept


def _judged(records: list, include_emulated: bool, model: str, sweep: Optional[str]) -> list:
    """The records readiness judges (:func:`_native`); none is an error that says why."""
    kept = _native(records, include_emulated)
    if not kept:
        _fail(f"no records of {model}" + (f" in sweep {sweep}" if sweep else "") + (
              f" from a device: its {len(records)} record(s) come from emulated agents (--include-emulated judges them)"
              if records else ": benchmark it first"), code=2)  # fmt: skip
    return kept


def _why_absent(jobs, model_id: str, req: str) -> str:
    """Why no record of the model matches ``req``: the errors of its failed jobs there, if any."""
    from controller.analysis.readiness import matches

    failed = [j for j in jobs if j.model_id == model_id and matches(j.capability, req) and j.reason]
    if not failed:
        return ""
    reasons = sorted({f"{j.variant} on {j.capability}: {j.reason.splitlines()[0][:200]}" for j in failed})
    return "; ".join(reasons[:3]) + (f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else "")


@app.command()
def readiness(
    model: str = typer.Option(..., "--model", help="Model id, id prefix or name."),
    budgets: Path = typer.Option(..., "--budgets", help="Budgets file (YAML): limits per device class, required classes."),
    sweep: Optional[str] = typer.Option(None, help="Judge this sweep's records (id, name or baseline:TAG); default: the newest."),
    junit: Optional[Path] = typer.Option(None, help="Write JUnit XML here (one test case per capability x variant)."),
    report: Optional[Path] = typer.Option(None, help="Write a self-contained report here (.html, or .md)."),
    include_emulated: bool = EmulatedOpt,
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Is MODEL ready to ship? A verdict per capability x variant, a recommended variant per device.

    Exits 0 when every required device class has a passing variant, 1 otherwise."""
    from controller.analysis.readiness import BudgetError, assess, load_budgets
    from controller.analysis.reports import html_report, junit_xml, markdown_report
    from controller.store import StoreError

    for flag, path in (("--junit", junit), ("--report", report)):
        if path is not None:
            _writable_parent(path, flag)
    try:
        spec = load_budgets(budgets)
    except BudgetError as exc:
        _fail(str(exc), code=2)
    with _open_store(data_dir, db) as (_, store):
        try:
            name, records = _model_records(store, model, sweep)
            store_jobs = store.jobs()
        except StoreError as exc:
            _fail(str(exc), code=2)
    records = _judged(records, include_emulated, model, sweep)
    result = assess(name, records, spec, why_absent=lambda req: _why_absent(store_jobs, records[0].model_id, req))
    table = Table(title=f"Readiness of {name}" + (f" (sweep {sweep})" if sweep else " (newest records)"),
                  title_justify="left")  # fmt: skip
    for col in ("capability", "variant", "threads", "latency ms", "accuracy", "verdict", "reasons"):
        table.add_column(col)
    for v in result.verdicts:
        c = v.candidate
        table.add_row(c.capability, c.variant, str(c.threads), f"p{v.budget.percentile} {c.percentiles_ms[v.budget.percentile]:.4g}",
                      "-" if c.accuracy is None else f"{c.accuracy:.2%}",
                      "[green]pass[/]" if v.passed else "[red]FAIL[/]", "\n".join(v.reasons))  # fmt: skip
    console.print(table)
    for v in result.verdicts:
        for w in v.candidate.warnings:
            console.print(f"[yellow]warning[/]: {v.candidate.name}: {w}", highlight=False)
    for cap, v in sorted(result.recommended.items()):
        console.print(f"recommended on [bold]{cap}[/]: {v.candidate.variant} ({v.candidate.threads} thread(s))")
    for req, caps in result.required.items():
        console.print(f"required {req}: " + (f"[green]passing on {', '.join(caps)}[/]" if caps else f"[red]{result.why_missing(req)}[/]"),
                      highlight=False)  # fmt: skip
    if junit:
        junit.write_text(junit_xml(result))
        console.print(f"JUnit XML: {junit}")
    if report:
        report.write_text(markdown_report(result) if report.suffix.lower() == ".md" else html_report(result))
        console.print(f"report: {report}")
    console.print("[green]READY[/]" if result.ready else "[red]NOT READY[/]: " + "; ".join(result.why_missing(r) for r in result.missing),
                  highlight=False)  # fmt: skip
    raise typer.Exit(0 if result.ready else 1)


@app.command()
def compare(
    baseline: str = typer.Argument(..., help="Baseline: a sweep (id, id prefix or name) or baseline:TAG."),
    candidate: str = typer.Argument(..., help="Candidate: a sweep (id, id prefix or name) or baseline:TAG."),
    alpha: float = typer.Option(0.05, help="Significance level of the Mann-Whitney U test."),
    threshold: float = typer.Option(0.15, help="Smallest relative change of the median that counts (0.15 = 15%)."),
    tail_threshold: float = typer.Option(0.25, help="Smallest relative change of the 99%-trimmed mean that counts (0.25 = 25%)."),
    fmt: str = typer.Option("table", "--format", help="table or json"),
    include_emulated: bool = EmulatedOpt,
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Did anything get slower? Per model x variant x capability x threads: median and tail ratios, Mann-Whitney U.

    Exits 1 when any regression is beyond the threshold and significant."""
    from controller.analysis.regress import IMPROVEMENT, REGRESSION
    from controller.analysis.regress import compare as run_compare
    from controller.store import StoreError

    if fmt not in ("table", "json"):
        _fail("--format is table or json", code=2)
    with _open_store(data_dir, db) as (_, store):
        try:
            a, b = store.resolve_sweep(baseline), store.resolve_sweep(candidate)
        except StoreError as exc:
            _fail(str(exc), code=2)
        ra, rb = (_native(store.sweep_results(s.sweep_id), include_emulated) for s in (a, b))
    if not ra or not rb:
        _fail(f"sweep {(a if not ra else b).sweep_id} has no records to compare", code=2)
    try:
        rows = run_compare(ra, rb, alpha=alpha, threshold=threshold, tail_threshold=tail_threshold)
    except ValueError as exc:
        _fail(str(exc), code=2)
    regressions = [r for r in rows if r.verdict == REGRESSION]
    improvements = [r for r in rows if r.verdict == IMPROVEMENT]
    if fmt == "json":
        print(json.dumps({"baseline": a.sweep_id, "candidate": b.sweep_id, "alpha": alpha, "threshold": threshold,
                          "tail_threshold": tail_threshold, "regressions": [r.to_dict() for r in regressions],
                          "improvements": [r.to_dict() for r in improvements],
                          "all": [r.to_dict() for r in rows]}, indent=1))  # fmt: skip
    else:
        console.print(f"baseline {a.name} ({a.sweep_id}) vs candidate {b.name} ({b.sweep_id}); "
                      f"flagged when p < {alpha:g} and the median moved more than {threshold:.0%} "
                      f"or the 99%-trimmed mean more than {tail_threshold:.0%}")  # fmt: skip
        for title, part in (("Regressions", regressions), ("Improvements", improvements),
                            ("Unchanged or unpaired", [r for r in rows if r not in regressions + improvements])):  # fmt: skip
            if not part:
                continue
            table = Table(title=f"{title} ({len(part)})", title_justify="left")
            for col in ("model", "variant", "capability", "threads", "baseline p50 ms", "candidate p50 ms", "p50 ratio",
                        "tail ratio", "p", "verdict"):  # fmt: skip
                table.add_column(col)
            for r in part:
                table.add_row(r.model_name, r.variant, r.capability, str(r.threads),
                              "-" if r.baseline_median_ms is None else f"{r.baseline_median_ms:.4g}",
                              "-" if r.candidate_median_ms is None else f"{r.candidate_median_ms:.4g}",
                              "-" if r.ratio is None else f"{r.ratio:.3f}", "-" if r.tail_ratio is None else f"{r.tail_ratio:.3f}",
                              _p(r.p_value),
                              r.verdict)  # fmt: skip
            console.print(table)
    raise typer.Exit(1 if regressions else 0)


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2g}" if value > 0 else "< 1e-300"  # below what a double holds


@baseline_app.command("set")
def baseline_set(
    sweep: str = typer.Argument(..., help="The sweep (id, id prefix or name)."),
    tag: str = typer.Option(..., "--tag", help="The baseline's name, e.g. release-1.2."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Keep SWEEP as the baseline TAG (compare against it with baseline:TAG)."""
    from controller.store import StoreError

    if not tag or any(ch in tag for ch in " :/"):
        _fail("a tag has no spaces, colons or slashes", code=2)
    with _open_store(data_dir, db) as (_, store):
        try:
            row = store.resolve_sweep(sweep)
        except StoreError as exc:
            _fail(str(exc), code=2)
        new = store.set_baseline(tag, row.sweep_id)
    console.print(f"baseline {tag} {'is' if new else 'now points at'} sweep {row.name} ({row.sweep_id})")


@baseline_app.command("list")
def baseline_list(data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt) -> None:
    """The baselines and the sweeps they point at."""
    with _open_store(data_dir, db) as (_, store):
        rows = store.baselines()
    if not rows:
        console.print("No baselines yet: `fleetbench baseline set SWEEP --tag NAME`.")
        return
    table = Table(title="Baselines", title_justify="left")
    for col in ("tag", "sweep", "set at"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.tag, r.sweep_id, f"{r.created_at:%Y-%m-%d %H:%M}")
    console.print(table)
