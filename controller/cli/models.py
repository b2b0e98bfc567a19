"""Models and their variants: demo, convert, models, variants, artifacts."""

from __future__ import annotations

import signal
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from controller.cli.app import (
    DataDirOpt,
    DbOpt,
    _fail,
    _open_store,
    _term_as_exit,
    app,
    console,
    err_console,
)
from controller.analysis.quantization import details_summary
from controller.cli.render import conversion_table, results_table, spinner
from controller.convert.variants import QAT_DEFAULTS
from protocol import BenchmarkSettings


# size: a Typer command: its options take half of it
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
    profile: bool = typer.Option(False, "--profile", help="Also profile each variant: per-op time, placement, precision "
                                                           "per node (`fleetbench profile demo` shows them)."),
    quant: bool = typer.Option(False, "--quant", help="Post-training int8, QAT int8 and accuracy-controlled int8 side by "
                                                       "side (a train/calibration/validation split of the held-out set)."),
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
        max_iterations=max(1_000_000, min_iterations),  # a 4 µs int8 variant needs 250,000 to fill 1 s
        max_duration_s=max(300.0, min_duration * 2),
        # room for load, warm-up and the accuracy pass beyond the sampling cap
        timeout_s=max(900.0, min_duration * 2 + 600.0),
        throughput_requests=throughput_requests,
        profile=profile,
    )
    problems = settings.problems()
    if problems:
        _fail("; ".join(problems), code=2)
    signal.signal(signal.SIGTERM, _term_as_exit)
    paths = Paths.resolve(data_dir)
    db_url = paths.db_url(db)
    console.print(f"fleetbench demo: data in [bold]{paths.root}[/]")
    try:
        wanted = parse_variants(variants) if variants or not quant else None
        with spinner() as progress:
            task = progress.add_task("starting", total=None)

            def on_step(message: str) -> None:
                console.print(f"  · {message}", highlight=False, markup=False)
                progress.update(task, description=message)

            run = run_demo(paths, db_url, settings, rebuild=rebuild, variants=wanted, on_step=on_step, quant=quant)
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
        "`fleetbench dashboard`." + (" Their profiles: `fleetbench profile demo`." if profile else "")
    )


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


# size: a Typer command: its options take half of it
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
    train_samples: int = typer.Option(0, help="QAT: labelled samples set apart to fine-tune on (never validated on)."),
    qat_epochs: int = typer.Option(QAT_DEFAULTS["epochs"], help="QAT: epochs of fine-tuning."),
    qat_lr: float = typer.Option(QAT_DEFAULTS["learning_rate"], help="QAT: the fine-tune's learning rate (Adam)."),
    max_accuracy_drop: float = typer.Option(1.0, help="openvino-int8-ac: the top-1 drop allowed, in points."),
    fidelity_target_db: Optional[float] = typer.Option(None, help="tflite-int8-mixed: the worst output's SNR to reach, dB."),
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
    options = _quant_options(train_samples, qat_epochs, qat_lr, max_accuracy_drop, fidelity_target_db)
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
                n_train=train_samples, options=options,
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


def _quant_options(train_samples, qat_epochs, qat_lr, max_drop_points, fidelity_target_db):
    """The accuracy-keeping variants' options, checked (each bad value is one line and exit 2)."""
    from controller.convert.variants import QuantOptions

    if train_samples < 0:
        _fail(f"--train-samples must be 0 or more; got {train_samples}", code=2)
    if qat_epochs < 1:
        _fail(f"--qat-epochs must be 1 or more; got {qat_epochs}", code=2)
    if not (0 < qat_lr < 1):
        _fail(f"--qat-lr must be between 0 and 1 (e.g. 0.0001); got {qat_lr:g}", code=2)
    if not (0 <= max_drop_points < 100):
        _fail(f"--max-accuracy-drop is in points of top-1 accuracy, 0 to 100 (e.g. 1); got {max_drop_points:g}", code=2)
    if fidelity_target_db is not None and not (0 < fidelity_target_db <= 200):
        _fail(f"--fidelity-target-db is an SNR in dB above 0 (e.g. 30); got {fidelity_target_db:g}", code=2)
    return QuantOptions(qat_epochs=qat_epochs, qat_learning_rate=qat_lr, max_accuracy_drop=max_drop_points / 100,
                        fidelity_target_db=fidelity_target_db)  # fmt: skip


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
            elif e["event"] == "progress":
                progress.update(t, note=escape(e.get("note", "")))
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
        found = store.models()
        rows = [(m, len({v.variant for v in store.variants(m.model_id)})) for m in found]
        version = store.versions(found)
    if not rows:
        console.print("No models yet: run `fleetbench convert MODEL` or `fleetbench demo`.")
        return
    latest: dict[str, int] = {}
    for m in found:
        latest[m.name] = max(latest.get(m.name, 0), version[m.model_id])
    table = Table(title="Models", title_justify="left", caption_justify="left")
    for col in ("id", "name", "version", "kind", "file", "size KiB", "variants", "added"):
        table.add_column(col, justify="right" if col in ("version", "size KiB", "variants") else "left")
    for m, n in rows:
        v = version[m.model_id]
        table.add_row(m.model_id[:12], escape(m.name), f"v{v}" + ("" if v == latest[m.name] else " (old)"), m.kind,
                      escape(m.filename), f"{m.size_bytes / 1024:,.1f}", str(n), m.created_at.strftime("%Y-%m-%d %H:%M"))  # fmt: skip
    if any(v > 1 for v in version.values()):
        table.caption = ("A name whose source changed (a new sha256) has one version per source; its history runs across "
                         "them. A name means its newest version; give the id for an older one.")  # fmt: skip
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
                      f"{tuple(r.input_shape)} {r.input_dtype}", r.artifact["sha256"][:12], tools,
                      r.recipe["how"] + (f" — {found}" if (found := details_summary(r.details)) else ""))  # fmt: skip
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
