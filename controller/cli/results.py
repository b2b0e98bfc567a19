"""Stored records: results, version."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console

from controller.cli.app import ControllerOpt, DataDirOpt, DbOpt, _controller, _fail, app, console
from controller.cli.render import results_table, write_csv


@app.command()
def results(
    sweep: Optional[str] = typer.Argument(None, help="Only this sweep's records (id, id prefix or name)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
    limit: Optional[int] = typer.Option(None, help="At most this many records (default: 20 newest; a sweep's: all)."),
    model: Optional[str] = typer.Option(None, help="Only records of this model id."),
    wide: bool = typer.Option(False, "--wide", help="Every column: runtime version, device name, threads, cosine, samples, reasons."),
    controller_url: Optional[str] = ControllerOpt,
) -> None:
    """Show stored benchmark records: the newest, or one sweep's."""
    if limit is not None and limit < 1:
        _fail(f"--limit must be at least 1; got {limit}", code=2)
    newest = limit or 20

    if fmt not in ("table", "csv", "json"):
        _fail(f"--format must be table, csv or json; got '{fmt}'", code=2)
    with _controller(controller_url, data_dir, db) as c:
        records, view = c.results(sweep, model, newest)
    title = f"Sweep {view['name']} ({view['sweep_id']})" if view else f"Newest {len(records)} record(s)"
    if sweep and limit is not None and len(records) > limit:
        records, title = records[:limit], f"{title}, first {limit} of {len(records)}"
    if fmt == "json":
        sys.stdout.write(json.dumps([r.to_dict() for r in records], indent=1) + "\n")
    elif fmt == "csv":
        write_csv(records, sys.stdout)
    elif not records:
        console.print("No records yet: run `fleetbench demo` first." if not sweep else "This sweep has no records yet.")
    else:
        table = results_table(records, title=title, wide=wide, width=console.width)
        if wide:  # every column at its natural width, wider than the terminal if need be
            from rich.measure import Measurement

            natural = Measurement.get(console, console.options.update(width=10_000), table).maximum
            Console(width=max(natural, console.width)).print(table)
        else:
            console.print(table)


@app.command()
def version() -> None:
    """Print fleetbench's version and the wire-contract schema version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    from protocol import SCHEMA_VERSION

    try:
        v = pkg_version("fleetbench")
    except PackageNotFoundError:
        v = "unknown"
    console.print(f"fleetbench {v} (schema {SCHEMA_VERSION})")
