"""`fleetbench regressions`: the change points over every series' history, newest first; `ack` marks one as
known; `webhook` sets where new regressions are sent.

Exit codes: 0 no unacknowledged regression in the feed; 1 one or more (a nightly job gates on it); 2 bad input or
no detector (apache-otava missing); anything else that fails says so in one `error:` line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from controller.cli.app import DataDirOpt, DbOpt, _fail, _open_store, app, console, err_console
from controller.regressions import _utc, as_dict

regressions_app = typer.Typer(help="Change points over each series' history (E-Divisive, confirmed on the raw "
                              "samples): `fleetbench regressions`, `... ack ID --note TEXT`, `... webhook URL`.")  # fmt: skip
app.add_typer(regressions_app, name="regressions")
SECRET_ENV = "FLEETBENCH_WEBHOOK_SECRET"


def _since(text: Optional[str]) -> Optional[dt.datetime]:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        _fail(f"--since must be a date like 2026-12-01 or 2026-12-01T08:00; got '{text}'", code=2)
    return when.astimezone(dt.timezone.utc) if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _row(cp) -> dict:
    return {**as_dict(cp), "acked": cp.acked_at is not None, "ack_note": cp.ack_note, "notified": cp.notified_at is not None}


#: the feed's short names of the metrics
SHORT = {"p50_ms": "p50 ms", "p90_ms": "p90 ms", "p99_ms": "p99 ms", "throughput_ips": "inf/s", "accuracy_top1": "top-1",
         "fidelity_snr_db": "SNR dB", "energy_mj": "mJ/inf"}  # fmt: skip


def _p(p: float) -> str:
    """A p-value as the table shows it: one digit, and "<1e-300" where the test's own float ran out (thousands of
    samples a side that do not overlap give exactly 0)."""
    return "<1e-300" if p < 1e-300 else f"{p:.1g}"


def _table(rows) -> Table:
    table = Table(title="Change points (newest first)", title_justify="left", caption_justify="left")
    for col, justify, wrap in (("id", "right", False), ("since", "left", False), ("series", "left", True),
                               ("metric", "left", False), ("before → after", "right", False), ("ratio", "right", False),
                               ("p", "right", False), ("change", "left", False), ("status", "left", True)):  # fmt: skip
        table.add_column(col, justify=justify, no_wrap=not wrap, overflow="fold")
    for cp in rows:
        kind = "[red]regression[/]" if cp.kind == "regression" else "[green]improvement[/]"
        status = f"acked: {escape(cp.ack_note or '')}" if cp.acked_at else ("[yellow]new[/]" if cp.kind == "regression" else "-")
        series = f"{escape(cp.model_name)} {escape(cp.variant)} {escape(cp.capability)} ×{cp.threads}" + (
            f" {cp.throughput_requests} req" if cp.throughput_requests else "") + (
            f"\n{escape(cp.device_name)}" if cp.device_name else "")
        table.add_row(str(cp.id), f"{_utc(cp.after_at):%Y-%m-%d %H:%M}\njob {cp.after_job[:8]}", series,
                      SHORT.get(cp.metric, cp.metric), f"{cp.before_value:.4g} → {cp.after_value:.4g}",
                      f"{cp.ratio:.3f}x", _p(cp.p_value), kind, status)  # fmt: skip
    return table


@regressions_app.callback(invoke_without_command=True)
def regressions(
    ctx: typer.Context,
    since: Optional[str] = typer.Option(None, help="Only change points whose new level began on or after this date."),
    model: Optional[str] = typer.Option(None, help="Only this model (its name, or an id prefix)."),
    metric: list[str] = typer.Option([], "--metric", help="Only these metrics (repeatable): p50_ms, p90_ms, p99_ms, "
                                     "throughput_ips, accuracy_top1, fidelity_snr_db, energy_mj; default: all but p90_ms "
                                     "(throughput only where a throughput phase ran)."),  # fmt: skip
    threshold: Optional[float] = typer.Option(None, help="Smallest relative change that counts (default 0.05)."),
    fmt: str = typer.Option("table", "--format", help="table or json"),
    notify: bool = typer.Option(False, "--notify", help="Send each new unacknowledged regression to the webhook."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Find the change points of every series, store the new ones, and list them; exit 1 on an unacknowledged
    regression."""
    if ctx.invoked_subcommand:
        return
    from controller.analysis.changepoints import METRICS, THRESHOLD, DetectorMissing
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from controller.regressions import DEFAULT_METRICS, notify as send, scan

    if fmt not in ("table", "json"):
        _fail(f"--format must be table or json, not '{fmt}'", code=2)
    unknown = [m for m in metric if m not in METRICS]
    if unknown:
        _fail(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}", code=2)
    if threshold is not None and not 0 <= threshold < 1:
        _fail(f"--threshold is a relative change between 0 and 1 (0.05 = 5%); got {threshold:g}", code=2)
    when = _since(since)
    with _open_store(data_dir, db) as (_, store):
        try:
            # on stderr, and gone when done: stdout is the feed (JSON with --format json)
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=err_console, transient=True) as progress:  # fmt: skip
                task = progress.add_task("scanning series", total=None)
                new = scan(store, tuple(metric) or DEFAULT_METRICS, model, threshold if threshold is not None else THRESHOLD,
                           on_series=lambda done, total: progress.update(task, completed=done, total=total))  # fmt: skip
        except DetectorMissing as exc:
            _fail(str(exc), code=2)  # 1 means "a regression": a nightly gate must tell the two apart
        sent, failed = send(store) if notify else ([], [])
        rows = store.change_points(when, model)
    if metric:
        rows = [r for r in rows if r.metric in metric]
    open_regressions = [r for r in rows if r.kind == "regression" and r.acked_at is None]
    if fmt == "json":
        print(json.dumps({"change_points": [_row(r) for r in rows], "new": [r.id for r in new],
                          "sent": [r.id for r in sent], "failed": [{"id": r.id, "error": e} for r, e in failed]}, indent=2))  # fmt: skip
    else:
        if rows:
            console.print(_table(rows))
        console.print(f"{len(rows)} change point(s), {len(new)} new; {len(open_regressions)} unacknowledged "
                      f"regression(s)" + (f"; sent {len(sent)} to the webhook" if notify else ""), highlight=False)  # fmt: skip
        if open_regressions:
            console.print(f"Acknowledge a known one with `fleetbench regressions ack ID --note \"why\"`.", highlight=False)
    for cp, why in failed:
        err_console.print(f"[yellow]webhook: change point {cp.id} not sent:[/] {escape(why)} (tried again next run)",
                          highlight=False)  # fmt: skip
    raise typer.Exit(1 if open_regressions else 0)


@regressions_app.command("ack")
def ack(
    cp_id: int = typer.Argument(..., metavar="ID", help="The change point's id (the feed's first column)."),
    note: str = typer.Option(..., "--note", help="Why it is known, e.g. \"expected: new preprocessing\"."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Mark a change point as known: it stays in the feed, no longer fails the exit code, and is not sent."""
    if not note.strip():
        _fail("--note must say why the change is known", code=2)
    with _open_store(data_dir, db) as (_, store):
        row = store.ack_change_point(cp_id, note.strip())
    if row is None:
        _fail(f"no change point {cp_id}; `fleetbench regressions` lists them", code=2)
    console.print(f"acknowledged {row.kind} {row.id} ({row.model_name} {row.variant} on {row.capability}, "
                  f"{row.metric}): {escape(row.ack_note)}", highlight=False)  # fmt: skip


@regressions_app.command("webhook")
def webhook(
    url: Optional[str] = typer.Argument(None, help="Where new regressions are POSTed as JSON (Slack-compatible `text`)."),
    clear: bool = typer.Option(False, "--clear", help="Send no more."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Set (or show, or clear) the store's regression webhook. A secret in FLEETBENCH_WEBHOOK_SECRET signs each
    delivery: header X-Fleetbench-Signature: sha256=HMAC-SHA256(secret, body)."""
    from urllib.parse import urlsplit

    from controller.regressions import WEBHOOK_KEY

    with _open_store(data_dir, db) as (_, store):
        if clear:
            store.set_setting(WEBHOOK_KEY, None)
            console.print("webhook cleared")
            return
        if url is None:
            hook = store.setting(WEBHOOK_KEY)
            if not hook:
                console.print("no webhook set: `fleetbench regressions webhook URL`")
                return
            parts = urlsplit(hook["url"])
            console.print(f"webhook: {parts.scheme}://{parts.hostname}/... ({'signed' if hook.get('secret') else 'not signed'})")
            return
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            _fail(f"the webhook must be an http:// or https:// URL; got '{parts.scheme}://{parts.hostname or ''}...'", code=2)
        secret = os.environ.get(SECRET_ENV) or None
        store.set_setting(WEBHOOK_KEY, {"url": url, "secret": secret})
    console.print(f"webhook set: {parts.scheme}://{parts.hostname}/... ({'signed with ' + SECRET_ENV if secret else 'not signed'})")
