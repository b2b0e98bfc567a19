"""The ``fleetbench`` command."""

from __future__ import annotations

import signal
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from protocol import BenchmarkSettings, ResultRecord

app = typer.Typer(
    name="fleetbench",
    help="Benchmark edge ML models across a fleet of devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (CI logs, `| tee`) gets a wide table instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

DataDirOpt = typer.Option(None, "--data-dir", help="Data directory (env FLEETBENCH_HOME; default ~/.local/share/fleetbench).")
DbOpt = typer.Option(None, "--db", help="SQLAlchemy database URL (env FLEETBENCH_DB_URL; default SQLite in the data dir).")


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _term_as_exit(signum, frame):  # so context managers stop the processes they started
    raise SystemExit(128 + signum)


def _fmt_ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def results_table(records: list[ResultRecord], title: str = "Results") -> Table:
    table = Table(title=title, title_justify="left")
    for col, justify in [
        ("model", "left"),
        ("variant", "left"),
        ("runtime", "left"),
        ("device", "left"),
        ("accuracy", "right"),
        ("p50 ms", "right"),
        ("p90 ms", "right"),
        ("throughput inf/s", "right"),
        ("size KiB", "right"),
        ("samples", "right"),
        ("valid", "left"),
    ]:
        table.add_column(col, justify=justify)
    for r in records:
        table.add_row(
            r.model_name,
            r.variant,
            f"{r.runtime} {r.runtime_version}",
            f"{r.capability}\n[dim]{r.device_name}[/]",
            "-" if r.accuracy_top1 is None else f"{r.accuracy_top1:.4f}",
            _fmt_ms(r.stats.p50_ms),
            _fmt_ms(r.stats.p90_ms),
            f"{r.throughput_ips:,.0f}",
            f"{r.model_size_bytes / 1024:,.1f}",
            f"{r.stats.count:,}",
            "yes" if r.validity.valid else "[yellow]no[/]: " + "; ".join(r.validity.reasons),
        )
    return table


@app.command()
def demo(
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
    threads: int = typer.Option(1, help="Inference threads (0 = runtime default)."),
    min_iterations: int = typer.Option(1000, help="Minimum steady-state inferences."),
    min_duration: float = typer.Option(1.0, help="Minimum steady-state seconds."),
    warmup: int = typer.Option(20, help="Warm-up inferences, not timed."),
    rebuild: bool = typer.Option(False, help="Retrain and reconvert the demo model instead of reusing it."),
) -> None:
    """Train the bundled digits CNN, convert it to TFLite, benchmark it on a local agent."""
    from controller.config import Paths
    from controller.demo import DemoError, run_demo
    from controller.dispatch import DispatchError
    from controller.embedded import ServiceError
    from controller.store import StoreError

    settings = BenchmarkSettings(
        threads=threads,
        warmup_iterations=warmup,
        min_iterations=min_iterations,
        min_duration_s=min_duration,
        max_iterations=max(200_000, min_iterations),
        max_duration_s=max(300.0, min_duration * 2),
        # room for load, warm-up and the accuracy pass beyond the sampling cap
        timeout_s=max(900.0, min_duration * 2 + 600.0),
    )
    problems = settings.problems()
    if problems:
        _fail("; ".join(problems), code=2)
    signal.signal(signal.SIGTERM, _term_as_exit)
    paths = Paths.resolve(data_dir)
    db_url = paths.db_url(db)
    console.print(f"fleetbench demo: data in [bold]{paths.root}[/]")
    try:
        with _progress() as progress:
            task = progress.add_task("starting", total=None)

            def on_step(message: str) -> None:
                console.print(f"  · {message}", highlight=False)
                progress.update(task, description=message)

            run = run_demo(paths, db_url, settings, rebuild=rebuild, on_step=on_step)
    except (DemoError, DispatchError, ServiceError, StoreError) as exc:
        _fail(str(exc))
    m = run.model
    how = "reused from an earlier run" if run.model_reused else f"trained in {m.train_s:.1f} s"
    console.print(
        f"model [bold]{m.name}[/] ({m.model_id[:12]}), {how}; Keras accuracy on the held-out split "
        f"{m.keras_accuracy:.4f}"
    )
    console.print(results_table(run.records, title="Benchmark"))
    console.print(
        f"Stored {len(run.records)} record(s) in [bold]{_display_url(run.db_url)}[/] "
        f"({run.total_records} in total). See them again with `fleetbench results`."
    )


def _progress():
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True)


def _display_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def results(
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
    limit: int = typer.Option(20, help="Show at most this many records, newest first."),
    model: Optional[str] = typer.Option(None, help="Only records of this model id."),
) -> None:
    """Show stored benchmark records."""
    from controller.config import Paths
    from controller.store import Store, StoreError

    paths = Paths.resolve(data_dir)
    store = Store(paths.db_url(db))
    try:
        store.migrate()
        records = store.results(model_id=model, limit=limit)
    except StoreError as exc:
        _fail(str(exc))
    finally:
        store.close()
    if not records:
        console.print("No records yet: run `fleetbench demo` first.")
        return
    console.print(results_table(records, title=f"Newest {len(records)} record(s)"))


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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
