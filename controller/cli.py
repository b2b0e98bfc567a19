"""The ``fleetbench`` command."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from protocol import BenchmarkSettings, ResultRecord

app = typer.Typer(
    name="fleetbench",
    help="Benchmark edge ML models across a fleet of devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
def _console_width() -> int | None:
    """A terminal's own width; piped output no wider than $COLUMNS, or 120."""
    cols = os.environ.get("COLUMNS", "")
    if cols.isdigit() and int(cols) > 0:
        return int(cols)
    return None if sys.stdout.isatty() else 120


console = Console(width=_console_width())
err_console = Console(stderr=True)

DataDirOpt = typer.Option(None, "--data-dir", help="Data directory (env FLEETBENCH_HOME; default ~/.local/share/fleetbench).")
DbOpt = typer.Option(None, "--db", help="SQLAlchemy database URL (env FLEETBENCH_DB_URL; default SQLite in the data dir).")
ControllerOpt = typer.Option(None, "--controller", envvar="FLEETBENCH_CONTROLLER",
                             help="Talk to this controller's HTTP API (token in FLEETBENCH_TOKEN) instead of the embedded one.")  # fmt: skip


@contextlib.contextmanager
def _open_store(data_dir: Optional[str], db: Optional[str]):
    """(paths, migrated store) for a command; a database error becomes one clear line."""
    from controller.config import Paths
    from controller.store import Store, StoreError

    paths = Paths.resolve(data_dir)
    try:
        store = Store(paths.db_url(db))
    except StoreError as exc:
        _fail(str(exc), code=2)
    try:
        store.migrate()
        yield paths, store
    except StoreError as exc:
        _fail(str(exc))
    finally:
        store.close()


@contextlib.contextmanager
def _controller(controller_url: Optional[str], data_dir: Optional[str], db: Optional[str], broker: Optional[str] = None):
    """The controller a command talks to: a controller's API with ``--controller``, else this machine's store
    (asking ``broker``, when given, who is online). A bad broker URL is exit code 2; an error on the way, one line."""
    from controller.errors import DispatchError
    from controller.service import ControllerError, LocalController, RemoteController

    try:
        if controller_url:
            yield RemoteController(controller_url)
            return
        with _open_store(data_dir, db) as (_, store):
            if not broker:
                yield LocalController(store)
                return
            from controller.dispatch import Dispatcher

            try:
                d = Dispatcher(broker)
            except DispatchError as exc:
                _fail(str(exc), code=2)
            try:
                yield LocalController(store, live_agents=lambda: d.record_live_agents(store))
            finally:
                d.close()
    except (ControllerError, DispatchError) as exc:
        _fail(str(exc))


def _fail(message: str, code: int = 1) -> None:
    """Print ``message`` as one ``error:`` line (passwords masked, square brackets kept as they are) and exit.

    Lines after the first (the tail of a service's log) follow it indented, as context."""
    from protocol.redact import redact

    first, *rest = redact(message).strip().splitlines() or [""]
    err_console.print(f"[bold red]error:[/] {escape(first)}", highlight=False, soft_wrap=True)
    for line in rest:
        if line.strip():
            err_console.print(f"  | {line}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(code)


def _writable_parent(path: Path, flag: str) -> None:
    """One line, before any work, when ``path`` cannot be written because its folder is missing."""
    parent = Path(path).expanduser().parent
    if not parent.is_dir():
        _fail(f"{flag} {path}: the folder {parent} does not exist; create it or write elsewhere", code=2)


def _term_as_exit(signum, frame):  # so context managers stop the processes they started
    raise SystemExit(128 + signum)


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
    ("fidelity", "right", 4), ("cosine", "right", 0), ("samples", "right", 0), ("KiB", "right", 5), ("valid", "left", 2),
]  # fmt: skip
_NAMES = {"model", "variant", "device", "runtime"}


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
        variant = r.variant + (note("the user's own file, benchmarked as it is") if r.from_source else "")
        accuracy = r.accuracy.headline() if r.accuracy else ("-" if r.accuracy_top1 is None else f"{r.accuracy_top1:.4f}")
        rows.append({
            "model": r.model_name, "variant": variant, "ran in": r.precision or "-",
            "device": r.capability if not wide else f"{r.capability}\n[dim]{r.device_name}[/]",
            "runtime": f"{r.runtime} {r.runtime_version}", "threads": str(r.settings.threads),
            "p50 ms": _fmt_ms(r.stats.p50_ms), "p90 ms": _fmt_ms(r.stats.p90_ms),
            "inf/s": f"{r.throughput.ips:,.0f} ({r.throughput.requests} req)" if r.throughput else f"{r.throughput_ips:,.0f}",
            "accuracy": accuracy, "fidelity": fid,
            "cosine": "-" if r.fidelity is None else f"{r.fidelity.mean_cosine:.6f}", "samples": f"{r.stats.count:,}",
            "KiB": f"{r.model_size_bytes / 1024:,.1f}", "valid": valid,
        })  # fmt: skip

    def need(col: str) -> int:  # the column's width with its padding and border
        cells = [col] + [ln for row in rows for ln in row[col].split("\n")]
        w = max(Text.from_markup(c).cell_len for c in cells)
        return (min(w, 12) if col in _NAMES else w) + 3  # a name may wrap down to 12

    shown = [c for c in RESULT_COLUMNS if wide or c[2] > 0]
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
    dropped = [c[0] for c in RESULT_COLUMNS if c[2] > 0 and c not in shown]
    if dropped:
        notes.append(f"not shown at this width: {', '.join(dropped)} (--wide shows every column)")
    if notes:
        table.caption = "\n".join(f"[{i}] {t}" if not t.startswith("not shown") else t for i, t in enumerate(notes, 1))
    return table


@app.command()
def demo(
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
    threads: int = typer.Option(1, help="Inference threads (0 = runtime default)."),
    min_iterations: int = typer.Option(1000, help="Minimum steady-state inferences."),
    min_duration: float = typer.Option(1.0, help="Minimum steady-state seconds."),
    warmup: int = typer.Option(20, help="Warm-up inferences, not timed."),
    rebuild: bool = typer.Option(False, help="Retrain the demo model instead of reusing it."),
    variants: Optional[str] = typer.Option(None, help="Comma-separated variants (default: all seven)."),
    throughput_requests: int = typer.Option(0, help="Also measure throughput with N requests in flight (0: single-stream only)."),
) -> None:
    """Train the bundled digits CNN, convert it into every variant, benchmark each on a local agent."""
    from controller.config import Paths
    from controller.convert.service import ConvertError, parse_variants
    from controller.demo import DemoError, run_demo
    from controller.errors import DispatchError, ServiceError
    from controller.store import StoreError, redact_url

    settings = BenchmarkSettings(
        threads=threads,
        warmup_iterations=warmup,
        min_iterations=min_iterations,
        min_duration_s=min_duration,
        max_iterations=max(200_000, min_iterations),
        max_duration_s=max(300.0, min_duration * 2),
        # room for load, warm-up and the accuracy pass beyond the sampling cap
        timeout_s=max(900.0, min_duration * 2 + 600.0),
        throughput_requests=throughput_requests,
    )
    problems = settings.problems()
    if problems:
        _fail("; ".join(problems), code=2)
    signal.signal(signal.SIGTERM, _term_as_exit)
    paths = Paths.resolve(data_dir)
    db_url = paths.db_url(db)
    console.print(f"fleetbench demo: data in [bold]{paths.root}[/]")
    try:
        wanted = parse_variants(variants)
        with _progress() as progress:
            task = progress.add_task("starting", total=None)

            def on_step(message: str) -> None:
                console.print(f"  · {message}", highlight=False, markup=False)
                progress.update(task, description=message)

            run = run_demo(paths, db_url, settings, rebuild=rebuild, variants=wanted, on_step=on_step)
    except (ConvertError, DemoError, DispatchError, ServiceError, StoreError) as exc:
        _fail(str(exc))
    f = run.files
    how = "reused from an earlier run" if f.reused else f"trained in {f.train_s:.1f} s"
    console.print(
        f"model [bold]digits-cnn[/] ({run.model_id[:12]}), {how}; Keras accuracy on the held-out split "
        f"{f.keras_accuracy:.4f}"
    )
    from controller.artifacts import ArtifactStore

    console.print(conversion_table(run.convert, ArtifactStore(paths.artifacts)))
    console.print(results_table(run.records, title="Benchmark", width=console.width))
    for variant, error in run.failures:
        err_console.print(f"[yellow]{variant} not benchmarked:[/] {escape(str(error))}", highlight=False)
    console.print(
        f"Stored {len(run.records)} record(s) in [bold]{redact_url(run.db_url)}[/] "
        f"({run.total_records} in total). See them again with `fleetbench results`, or in the browser with "
        "`fleetbench dashboard`."
    )


def _progress():
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True)


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


def _parse_shape(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if not text:
        return None
    try:
        dims = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        _fail(f"--input-shape must be integers like 1,224,224,3; got '{text}'", code=2)
    if any(d <= 0 for d in dims):
        _fail(f"--input-shape dimensions must be positive; got '{text}'", code=2)
    return dims


def _floats(text: Optional[str], what: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        _fail(f"{what} must be comma-separated numbers; got '{text}'", code=2)


@app.command()
def convert(
    model: str = typer.Argument(..., help="Keras .keras/.h5, SavedModel dir, .tflite, OpenVINO .xml or .onnx."),
    variants: Optional[str] = typer.Option(None, help="Comma-separated variants, or 'all' (default)."),
    data: Optional[str] = typer.Option(None, help="Data set: .npz with x (and y), or an image folder (one sub-folder per class)."),
    input_shape: Optional[str] = typer.Option(None, help="Static input shape, e.g. 1,224,224,3 (default: from the data set or the model)."),
    name: Optional[str] = typer.Option(None, help="Display name of the model (default: the file name)."),
    scale: float = typer.Option(1.0, help="Preprocessing: multiply raw values by this (e.g. 0.00392157 for 1/255)."),
    mean: Optional[str] = typer.Option(None, help="Preprocessing: per-channel mean, e.g. 0.485,0.456,0.406."),
    std: Optional[str] = typer.Option(None, help="Preprocessing: per-channel std."),
    layout: str = typer.Option("NHWC", help="Model input layout: NHWC or NCHW."),
    resize: Optional[str] = typer.Option(None, help="Image folders: resize to HxW, e.g. 224x224."),
    grayscale: bool = typer.Option(False, help="Image folders: load as one channel."),
    seed: int = typer.Option(0, help="Seed of the calibration/validation split."),
    calibration_size: int = typer.Option(100, help="Samples in the calibration split; the rest validate."),
    broker: Optional[str] = typer.Option(None, help="Use converter workers on this broker instead of a local one."),
    memory_limit_gb: float = typer.Option(12.0, help="Address-space limit of the conversion process."),
    step_timeout: float = typer.Option(600.0, help="Seconds allowed to load the model, and again for each variant."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Convert and quantize a model into deployable variants (cached by content)."""
    from controller.artifacts import ArtifactStore
    from controller.config import Paths
    from controller.convert import service
    from controller.datasets import Preprocessing
    from controller.errors import DispatchError, ServiceError
    from controller.store import Store, StoreError

    if broker:
        from controller.dispatch import broker_url_problem

        if broker_url_problem(broker):
            _fail(broker_url_problem(broker), code=2)
    size = None
    if resize:
        try:
            h, w = (int(v) for v in resize.lower().split("x"))
            size = (h, w)
        except ValueError:
            _fail(f"--resize must look like 224x224; got '{resize}'", code=2)
    pre = Preprocessing(resize=size, scale=scale, mean=_floats(mean, "--mean"), std=_floats(std, "--std"),
                        layout=layout.upper(), channels=1 if grayscale else 3)  # fmt: skip
    if pre.problems():
        _fail("; ".join(pre.problems()), code=2)
    signal.signal(signal.SIGTERM, _term_as_exit)
    paths = Paths.resolve(data_dir)
    store = Store(paths.db_url(db))
    try:
        wanted = service.parse_variants(variants)
        store.migrate()
        artifacts = ArtifactStore(paths.artifacts)
        with console.status("reading the model and data set…"):
            plan = service.plan(
                model, wanted, store, artifacts, dataset_path=data, preprocessing=pre, seed=seed,
                n_calibration=calibration_size, input_shape=_parse_shape(input_shape), name=name,
            )  # fmt: skip
        console.print(f"{plan.name}: {plan.source.kind}, id {plan.model_id[:12]}; "
                      f"{len(plan.todo)} to convert, {sum(v.status == 'cached' for v in plan.variants)} cached")  # fmt: skip
        if plan.source_variant:
            console.print(f"the file itself is {plan.source_variant} ({plan.source_evidence}), benchmarked as it is")
        limits = {"memory_bytes": int(memory_limit_gb * 2**30), "step_timeout_s": step_timeout}
        report = _run_conversion(plan, store, paths, broker, limits)
    except (service.ConvertError, DispatchError, ServiceError, StoreError) as exc:
        _fail(str(exc))
    finally:
        store.close()
    console.print(conversion_table(report, ArtifactStore(paths.artifacts)))
    if any(o.status == "failed" for o in report.outcomes):
        raise typer.Exit(1)


def _run_conversion(plan, store, paths, broker, limits):
    """Convert the plan's missing variants with a progress bar per variant."""
    from controller.convert import service

    if not plan.todo and not plan.needs_reference:
        return service.execute(plan, store, runner=None)

    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from controller.dispatch import Dispatcher
    from controller.embedded import EmbeddedFleet
    progress = Progress(SpinnerColumn(), TextColumn("{task.description:<22}"), BarColumn(bar_width=20),
                        TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console)  # fmt: skip
    with progress:
        tasks = {v.variant: progress.add_task(v.variant, total=1, note="queued", start=False) for v in plan.todo}

        def on_event(e: dict) -> None:
            t = tasks.get(e.get("variant"))
            if t is None:
                return
            if e["event"] == "start":
                progress.start_task(t)
                progress.update(t, note="converting")
            elif e["event"] == "done":
                progress.update(t, completed=1, note=f"[green]done[/] {e.get('size_bytes', 0) / 1024:,.1f} KiB")
            elif e["event"] == "failed":
                progress.update(t, completed=1, note="[red]failed[/]")

        if broker:
            dispatcher = Dispatcher(broker)
            try:
                return service.execute(plan, store, lambda job, ev: dispatcher.convert(job, ev), on_event, limits)
            finally:
                dispatcher.close()
        with EmbeddedFleet(paths) as fleet:
            return service.execute(plan, store, fleet.convert, on_event, limits)


@app.command()
def models(data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt) -> None:
    """List stored source models."""
    with _open_store(data_dir, db) as (_, store):
        rows = [(m, len({v.variant for v in store.variants(m.model_id)})) for m in store.models()]
    if not rows:
        console.print("No models yet: run `fleetbench convert MODEL` or `fleetbench demo`.")
        return
    table = Table(title="Models", title_justify="left")
    for col in ("id", "name", "kind", "file", "size KiB", "variants", "added"):
        table.add_column(col)
    for m, n in rows:
        table.add_row(m.model_id[:12], m.name, m.kind, m.filename, f"{m.size_bytes / 1024:,.1f}", str(n),
                      m.created_at.strftime("%Y-%m-%d %H:%M"))  # fmt: skip
    console.print(table)


@app.command()
def variants(
    model: str = typer.Argument(..., help="Model id, id prefix or name."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """List the stored variants of one model, with their recipes and tool versions."""
    with _open_store(data_dir, db) as (_, store):
        m = store.find_model(model)
        rows = store.variants(m.model_id)
    table = Table(title=f"Variants of {m.name} ({m.model_id[:12]})", title_justify="left")
    for col in ("variant", "size KiB", "convert s", "input", "artifact", "tools", "recipe"):
        table.add_column(col, no_wrap=col in ("variant", "size KiB", "convert s", "artifact"))
    for r in rows:
        tools = ", ".join(f"{k} {v}" for k, v in sorted(r.tool_versions.items()))
        table.add_row(r.variant, f"{r.size_bytes / 1024:,.1f}", f"{r.conversion_s:.2f}",
                      f"{tuple(r.input_shape)} {r.input_dtype}", r.artifact["sha256"][:12], tools, r.recipe["how"])  # fmt: skip
    console.print(table if rows else f"{m.name} has no variants yet: `fleetbench convert` it.")


artifacts_app = typer.Typer(help="The content-addressed artifact store.", no_args_is_help=True)
app.add_typer(artifacts_app, name="artifacts")


@artifacts_app.command("list")
def artifacts_list(data_dir: Optional[str] = DataDirOpt, db: Optional[str] = DbOpt) -> None:
    """List stored artifacts and whether a record references them."""
    from controller.artifacts import ArtifactStore

    with _open_store(data_dir, db) as (paths, store):
        keep = store.referenced_artifacts()
    arts = ArtifactStore(paths.artifacts)
    table = Table(title=f"Artifacts in {paths.artifacts}", title_justify="left")
    for col in ("sha256", "size KiB", "referenced"):
        table.add_column(col)
    total = 0
    for f in arts.iter_files():
        total += f.size_bytes
        table.add_row(f.sha256[:16], f"{f.size_bytes / 1024:,.1f}", "yes" if f.sha256 in keep else "no")
    console.print(table)
    console.print(f"{total / 2**20:,.1f} MiB in all")


@artifacts_app.command("verify")
def artifacts_verify(data_dir: Optional[str] = DataDirOpt) -> None:
    """Re-hash every artifact; exit 1 if any no longer matches its name."""
    from controller.artifacts import ArtifactStore
    from controller.config import Paths

    arts = ArtifactStore(Paths.resolve(data_dir).artifacts)
    bad = arts.verify()
    n = sum(1 for _ in arts.iter_files())
    for f, actual in bad:
        err_console.print(f"[red]corrupt:[/] {escape(str(f.path))} hashes to {actual[:16]}…; delete it and convert again")
    console.print(f"{n - len(bad)} of {n} artifacts intact")
    if bad:
        raise typer.Exit(1)


@artifacts_app.command("gc")
def artifacts_gc(
    dry_run: bool = typer.Option(False, help="Only list what would be deleted."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Delete artifacts that no stored model, data set, variant or record references (uploaded data sets stay)."""
    from controller.artifacts import ArtifactStore

    with _open_store(data_dir, db) as (paths, store):
        keep = store.referenced_artifacts()
    removed = ArtifactStore(paths.artifacts).gc(keep, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {len(removed)} artifact(s), {sum(f.size_bytes for f in removed) / 2**20:,.2f} MiB")


@app.command()
def fleet(
    broker: Optional[str] = typer.Option(None, envvar="FLEETBENCH_BROKER_URL", help="Redis URL of the fleet's broker."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
    controller_url: Optional[str] = ControllerOpt,
) -> None:
    """List agents: capabilities, online or offline since when, last heartbeat."""
    with _controller(controller_url, data_dir, db, broker) as c:
        agents = c.fleet()
    if not agents:
        console.print("No agents seen yet: start one with `fleetbench-agent --broker URL` and run "
                      "`fleetbench fleet --broker URL`, or run `fleetbench demo`.")  # fmt: skip
        return
    for a in agents:
        a["last_heartbeat"] = dt.datetime.fromisoformat(a["last_heartbeat"])
    title = f"Fleet of {controller_url}" if controller_url else "Fleet" + ("" if broker else " (as last seen; pass --broker for live status)")
    console.print(fleet_table(title, agents, width=console.width))


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
        table.add_row(a["agent_id"], a["hostname"], caps, status, *(() if narrow else (when,)))
    return table


@app.command()
def bundle(
    model: str = typer.Argument(..., help="Model id, id prefix or name (its stored variants go in)."),
    out: str = typer.Option(..., "--out", "-o", help="Bundle file to write."),
    variants: Optional[str] = typer.Option(None, help="Comma-separated variants (default: all stored)."),
    litert_capability: str = typer.Option("litert:cpu", help="Capability for tflite-* variants."),
    openvino_capability: str = typer.Option("openvino:CPU", help="Capability for openvino-* variants."),
    threads: int = typer.Option(1, help="Inference threads."),
    min_iterations: int = typer.Option(1000, help="Minimum steady-state inferences."),
    min_duration: float = typer.Option(1.0, help="Minimum steady-state seconds."),
    throughput_requests: int = typer.Option(0, help="Also measure throughput with N requests in flight."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Pack benchmark jobs, artifacts and data into one file for an air-gapped device."""
    from controller.artifacts import ArtifactStore
    from controller.bundles import create_bundle

    settings = BenchmarkSettings(threads=threads, min_iterations=min_iterations, min_duration_s=min_duration,
                                 max_iterations=max(200_000, min_iterations),
                                 throughput_requests=throughput_requests)  # fmt: skip
    if settings.problems():
        _fail("; ".join(settings.problems()), code=2)
    _writable_parent(Path(out), "-o")
    wanted = [v.strip() for v in variants.split(",")] if variants else None
    with _open_store(data_dir, db) as (paths, store):
        manifest = create_bundle(
            store, ArtifactStore(paths.artifacts), model, Path(out), variants=wanted, settings=settings,
            capabilities={"tflite": litert_capability, "openvino": openvino_capability},
        )  # fmt: skip
    size = Path(out).stat().st_size
    console.print(f"wrote {out}: {len(manifest['jobs'])} job(s), {size / 2**20:,.1f} MiB. On the device: "
                  f"`fleetbench-agent run-bundle {Path(out).name}`; then `fleetbench import` its results file.")  # fmt: skip


@app.command(name="import")
def import_(
    results_file: str = typer.Argument(..., help="A results file written by `fleetbench-agent run-bundle`."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Store the records of an offline run (idempotent: importing twice stores nothing twice)."""
    from controller.bundles import import_results
    from protocol.bundles import BundleError

    with _open_store(data_dir, db) as (_, store):
        try:
            report = import_results(store, Path(results_file))
        except BundleError as exc:
            _fail(str(exc))
    console.print(f"stored {report.stored} record(s); {report.already} already stored; {len(report.failed)} failed job(s)")
    for job_id, error in report.failed:
        err_console.print(f"[yellow]job {escape(job_id[:8])} failed on the device:[/] {escape(str(error))}", highlight=False)


agent_app = typer.Typer(help="Run an agent on this machine (the same as `fleetbench-agent`).", no_args_is_help=True)
app.add_typer(agent_app, name="agent")


@agent_app.command("start")
def agent_start(
    config: Optional[str] = typer.Option(None, "--config", "-c", help="Agent config file (JSON); flags win over it."),
    broker: Optional[str] = typer.Option(None, envvar="FLEETBENCH_BROKER_URL", help="Redis URL of the broker."),
    agent_id: Optional[str] = typer.Option(None, envvar="FLEETBENCH_AGENT_ID", help="Unique name of this agent."),
    capability: list[str] = typer.Option([], "--capability", help="Serve only this capability (repeatable)."),
    file_root: list[str] = typer.Option([], "--file-root", help="Read file:// artifacts only under this folder "
                                        "(repeatable; default: the controller's artifact store on this machine)."),  # fmt: skip
    probe: bool = typer.Option(False, "--probe", help="Print the capabilities found and exit."),
    loglevel: str = typer.Option("INFO", help="Celery log level."),
) -> None:
    """Discover this machine's capabilities and serve them from the broker until stopped."""
    from agent.cli import main as agent_main

    argv = [f"--loglevel={loglevel}"]
    for flag, value in (("--config", config), ("--broker", broker), ("--agent-id", agent_id)):
        if value:
            argv += [flag, value]
    for cap in capability:
        argv += ["--capability", cap]
    for root in file_root:
        argv += ["--file-root", root]
    if probe:
        argv.append("--probe")
    raise typer.Exit(agent_main(argv))


@app.command()
def worker(
    broker: str = typer.Option(..., envvar="FLEETBENCH_BROKER_URL", help="Redis URL of the broker."),
    data_dir: Optional[str] = DataDirOpt,
) -> None:
    """Run a converter worker (conversions from the fleetbench.convert queue)."""
    from controller.dispatch import broker_url_problem

    problem = broker_url_problem(broker)
    if problem:
        _fail(problem, code=2)
    from controller.worker import serve

    serve(broker, data_dir)


@app.command()
def dashboard(
    port: int = typer.Option(8501, help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 to let other machines in)."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Serve the Streamlit dashboard (Fleet, Sweeps, Explorer, Compare, History) on the database, read-only."""
    import importlib.util
    import os
    import sys

    from controller.config import Paths
    from controller.store import redact_url

    if importlib.util.find_spec("streamlit") is None:
        _fail("the dashboard needs Streamlit: pip install 'fleetbench[dashboard]'")
    from dashboard.data import DashboardError, readonly_engine
    from dashboard.ui import DB_ENV

    url = Paths.resolve(data_dir).db_url(db)
    try:
        readonly_engine(url).dispose()
    except DashboardError as exc:  # the pages say the same; say it here too
        err_console.print(f"[yellow]note:[/] {escape(str(exc))}", highlight=False)
    argv = [sys.executable, "-m", "dashboard.serve", "--server.port", str(port),
            "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--global.developmentMode", "false",
            "--client.showErrorDetails", "none", "--client.toolbarMode", "minimal"]  # fmt: skip
    console.print(f"fleetbench dashboard on [bold]http://{host}:{port}[/] reading {redact_url(url)} (Ctrl-C stops it)")
    sys.stdout.flush()
    os.execve(sys.executable, argv, {**os.environ, DB_ENV: url})


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


CSV_COLUMNS = ["job_id", "attempt", "model_name", "model_id", "variant", "capability", "device_name", "agent_id",
               "runtime", "runtime_version", "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "samples", "valid",
               "throughput_ips", "accuracy_top1", "accuracy_task", "accuracy_top5", "accuracy_mean_iou", "accuracy_mae",
               "accuracy_rmse", "top1_agreement", "fidelity_snr_db", "fidelity_cosine",
               "fidelity_max_abs_error", "fidelity_worst_output", "fidelity_warnings", "precision", "model_size_bytes", "peak_rss_bytes",
               "loadgen_scenario", "loadgen_verdict", "finished_at"]  # fmt: skip


def write_csv(records, out) -> None:
    import csv

    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for r in records:
        w.writerow([
            r.job_id, r.attempt, r.model_name, r.model_id, r.variant, r.capability, r.device_name, r.agent_id,
            r.runtime, r.runtime_version, r.settings.threads, r.stats.p50_ms, r.stats.p90_ms, r.stats.p99_ms,
            r.stats.mean_ms, r.stats.count, r.validity.valid, r.throughput_ips, r.accuracy_top1,
            *((a.task, a.top5, a.mean_iou, a.mae, a.rmse) if (a := r.accuracy) else ("", None, None, None, None)),
            r.fidelity.top1_agreement if r.fidelity else None, r.fidelity.snr_db if r.fidelity else None,
            r.fidelity.mean_cosine if r.fidelity else None, r.fidelity.max_abs_error if r.fidelity else None,
            r.fidelity.worst_output if r.fidelity else "", "; ".join(r.fidelity.warnings) if r.fidelity else "",
            r.precision, r.model_size_bytes, r.peak_rss_bytes,
            r.loadgen.scenario if r.loadgen else "", r.loadgen.verdict if r.loadgen else "", r.finished_at,
        ])  # fmt: skip


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


from controller import cli_readiness, cli_sweeps  # noqa: E402,F401 - register their commands


DEBUG_ENV = "FLEETBENCH_DEBUG"


def _known_errors() -> tuple[type[BaseException], ...]:
    """The project's own error types: their message is the whole story (no traceback hint)."""
    from controller.client import ApiError
    from controller.errors import DataDirError, DispatchError, ServiceError
    from protocol.bundles import BundleError

    known: list[type[BaseException]] = [ApiError, DataDirError, DispatchError, ServiceError, BundleError]
    for mod, name in (("controller.store", "StoreError"), ("controller.sweeps", "SweepError"),
                      ("controller.convert.service", "ConvertError")):  # fmt: skip
        module = sys.modules.get(mod)  # only if a command imported it; importing it here could fail too
        if module is not None and hasattr(module, name):
            known.append(getattr(module, name))
    return tuple(known)


def main() -> None:
    """The ``fleetbench`` entry point: every failure is one ``error:`` line.

    An exception no command turned into a message is one line too, naming what happened; with
    FLEETBENCH_DEBUG=1 the traceback is shown instead.
    """
    try:
        from typer._click import exceptions as click  # typer 0.2x carries its own click
    except ImportError:  # pragma: no cover - a typer that uses click itself
        from click import exceptions as click

    debug = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    try:
        code = app(standalone_mode=False)  # usage errors come here, said as one line below
        sys.exit(code if isinstance(code, int) else 0)
    except click.NoArgsIsHelpError as exc:  # `fleetbench` or `fleetbench baseline` alone: the help
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "fleetbench"
        try:
            _fail(f"{exc.format_message()} (see `{where} --help`)", code=exc.exit_code)
        except typer.Exit as done:
            sys.exit(done.exit_code)
    except click.ClickException as exc:
        try:
            _fail(exc.format_message(), code=exc.exit_code)
        except typer.Exit as done:
            sys.exit(done.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
        if debug:
            raise
        from controller.errors import DataDirError

        if isinstance(exc, _known_errors()):  # a message of ours (later lines: a log's tail, as context)
            message = str(exc).strip() or type(exc).__name__
        else:  # one line, whatever the exception's text holds
            text = " ".join(str(exc).split()) or "(no message)"
            message = f"{type(exc).__name__}: {text}; run with {DEBUG_ENV}=1 for the traceback"
        try:
            _fail(message, code=2 if isinstance(exc, DataDirError) else 1)
        except typer.Exit as done:
            sys.exit(done.exit_code)


if __name__ == "__main__":
    # `python -m controller.cli`: run the app of the imported module, where cli_sweeps registered its commands
    from controller.cli import main as _main

    _main()
