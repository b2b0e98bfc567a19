"""The fleet: fleet, bundle and import (for devices off the network), agent start, worker, dashboard."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from controller.cli.app import (
    ControllerOpt,
    DataDirOpt,
    DbOpt,
    _controller,
    _fail,
    _open_store,
    _writable_parent,
    app,
    console,
    err_console,
)
from controller.cli.render import fleet_table
from protocol import BenchmarkSettings


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
        console.print("No agents seen yet." if controller_url else "No agents seen yet: start one with "
                      "`fleetbench-agent --broker URL` and run `fleetbench fleet --broker URL`, or run `fleetbench demo`.")  # fmt: skip
        return
    for a in agents:
        a["last_heartbeat"] = dt.datetime.fromisoformat(a["last_heartbeat"])
    title = f"Fleet of {controller_url}" if controller_url else "Fleet" + ("" if broker else " (as last seen; pass --broker for live status)")
    console.print(fleet_table(title, agents, width=console.width))


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
    profile: bool = typer.Option(False, "--profile", help="Also profile each job: per-op time, placement, precision "
                                                           "(`fleetbench profile JOB` once imported)."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Pack benchmark jobs, artifacts and data into one file for an air-gapped device."""
    from controller.artifacts import ArtifactStore
    from controller.bundles import create_bundle

    settings = BenchmarkSettings(threads=threads, min_iterations=min_iterations, min_duration_s=min_duration,
                                 max_iterations=max(200_000, min_iterations),
                                 throughput_requests=throughput_requests, profile=profile)  # fmt: skip
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
    cooldown_s: Optional[float] = typer.Option(None, "--cooldown-s", help="Before each job, wait S seconds (or at most "
                                               "S for --cooldown-within-c; default 300 then)."),  # fmt: skip
    cooldown_within_c: Optional[float] = typer.Option(None, "--cooldown-within-c", help="Before each job, wait until "
                                                      "every thermal zone is within C °C of its idle baseline."),  # fmt: skip
    on_disturbance: Optional[str] = typer.Option(None, "--on-disturbance", help="Other processes busy before a job: "
                                                 "record (default), wait, or refuse."),  # fmt: skip
    loglevel: str = typer.Option("INFO", help="Celery log level."),
) -> None:
    """Discover this machine's capabilities and serve them from the broker until stopped."""
    from agent.cli import main as agent_main

    argv = [f"--loglevel={loglevel}"]
    for flag, value in (("--cooldown-s", cooldown_s), ("--cooldown-within-c", cooldown_within_c),
                        ("--on-disturbance", on_disturbance)):  # fmt: skip
        if value is not None:
            argv += [flag, str(value)]
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
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 to let other machines in: then a token, one "
                             "of FLEETBENCH_API_TOKENS, opens it)."),
    insecure: bool = typer.Option(False, "--insecure", help="Beyond loopback without a token (closed lab networks, "
                                  "or behind a proxy that signs users in: docs/dashboard.md)."),  # fmt: skip
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Serve the Streamlit dashboard (Fleet, Sweeps, Explorer, Compare, Profile, History, Regressions) on the
    database, read-only."""
    import importlib.util
    import os
    import sys

    from controller.config import Paths
    from controller.store import redact_url

    if importlib.util.find_spec("streamlit") is None:
        _fail("the dashboard needs Streamlit: pip install 'fleetbench[dashboard]'")
    from dashboard.data import DashboardError, readonly_engine
    from dashboard.ui import DB_ENV

    env = dict(os.environ)
    if host not in ("127.0.0.1", "localhost", "::1") and not insecure:
        tokens = os.environ.get("FLEETBENCH_API_TOKENS", "").strip()
        if not any(t.strip() for t in tokens.split(",")):
            _fail(f"refusing to serve the dashboard on {host} without a token: set FLEETBENCH_API_TOKENS (the API's "
                  "user tokens open it), put it behind a proxy that signs users in and pass --insecure "
                  "(docs/dashboard.md), or bind 127.0.0.1", code=2)  # fmt: skip
        env["FLEETBENCH_DASHBOARD_TOKENS"] = tokens
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
    os.execve(sys.executable, argv, {**env, DB_ENV: url})
