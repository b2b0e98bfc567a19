"""`fleetbench sweep` and `fleetbench status`: sweeps over the fleet, with live progress."""

# size: sweep, status, serve and upload, with the local, embedded and remote ways to run a sweep side by side

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from controller.cli.app import (
    ControllerOpt,
    DataDirOpt,
    DbOpt,
    _controller,
    _fail,
    _open_store,
    _term_as_exit,
    app,
    console,
    err_console,
)  # fmt: skip
from controller.cli.render import results_table, sweep_progress
from controller.store.jobs import CANCELLED, DEAD_LETTER, EXPIRED, FAILED, FINAL_STATES
from controller.jobs import JobState, SweepState

BAD_END = (FAILED, DEAD_LETTER, EXPIRED, CANCELLED)


def follow(tick, total_of, poll_s: float = 0.5, total: int | None = None) -> dict[str, int]:
    """Call ``tick(poll_s) -> counts`` until every job is final, with a progress bar of the counts.

    ``tick`` waits up to ``poll_s`` itself (for the next outcome, or by sleeping)."""
    import redis
    from sqlalchemy.exc import SQLAlchemyError

    from controller.errors import DispatchError
    from controller.store import StoreError
    from controller.sweeps import finished, summary

    with sweep_progress() as progress:
        task = progress.add_task("sweep", total=total, counts="starting")  # the planned count at once
        while True:
            try:
                counts = tick(poll_s)
            except (StoreError, SQLAlchemyError, DispatchError, redis.exceptions.RedisError) as exc:  # outages: results wait in the broker/outboxes
                first = str(exc).splitlines()[0][:160]
                progress.update(task, counts=f"[yellow]retrying in 2 s: {first}[/]")
                time.sleep(2.0)
                continue
            progress.update(task, total=total_of(counts), completed=finished(counts), counts=summary(counts))
            if counts and finished(counts) == sum(counts.values()):
                return counts


@app.command()
def sweep(
    spec_file: Optional[str] = typer.Argument(None, help="Sweep spec (YAML): models, variants, devices, settings."),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="SWEEP",
                                         help="Continue an interrupted sweep (name or id) instead of starting one."),  # fmt: skip
    cancel: Optional[str] = typer.Option(None, "--cancel", metavar="SWEEP",
                                         help="End a sweep (name or id): its unfinished jobs become cancelled."),  # fmt: skip
    broker: Optional[str] = typer.Option(None, envvar="FLEETBENCH_BROKER_URL",
                                         help="Run on this fleet's broker (default: an embedded broker and local agent)."),  # fmt: skip
    artifact_url: Optional[str] = typer.Option(None, envvar="FLEETBENCH_ARTIFACT_URL",
                                               help="Base URL agents download artifacts from (the controller API), "
                                                    "e.g. http://controller:8080; default file:// (agents share this disk)."),  # fmt: skip
    controller_url: Optional[str] = ControllerOpt,
    detach: bool = typer.Option(False, "--detach", help="With --controller: submit and return at once."),
    yes: bool = typer.Option(False, "--yes", help="Run a sweep of more than 1,000 jobs."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Run a sweep: convert what is missing, benchmark every variant on every selected device."""
    from controller.sweeps import SweepError, parse_spec

    if sum(x is not None for x in (spec_file, resume, cancel)) != 1:
        _fail("give a sweep spec file, or --resume SWEEP, or --cancel SWEEP (one of them)", code=2)
    if resume and controller_url:
        _fail("--resume acts on this machine's database; a controller's API keeps its running sweeps going itself", code=2)
    if cancel:
        return _cancel(cancel, broker, data_dir, db, controller_url)
    signal.signal(signal.SIGTERM, _term_as_exit)
    if resume:
        return _finish(*_local_sweep(None, broker, artifact_url, data_dir, db, yes, resume=resume))
    path = Path(spec_file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read the sweep spec {spec_file}: {exc.strerror}", code=2)
    except UnicodeDecodeError as exc:
        _fail(f"{spec_file}: not UTF-8 text (byte {exc.start}); save the sweep spec as UTF-8 YAML", code=2)
    try:
        spec = parse_spec(text, base_dir=path.parent)
    except SweepError as exc:
        _fail(f"{spec_file}: {exc}", code=2)
    if controller_url:
        return _remote_sweep(controller_url, spec, text, path, detach, yes)
    _finish(*_local_sweep(spec, broker, artifact_url, data_dir, db, yes))


def _finish(counts, records, sweep_id, name) -> None:
    if records:
        console.print(results_table(records, title=f"Sweep {name} ({sweep_id})", width=console.width))
    bad = sum(counts.get(s, 0) for s in BAD_END)
    if bad:
        console.print(f"[yellow]{bad} job(s) did not finish:[/] `fleetbench status {sweep_id}` shows why")
        raise typer.Exit(1)


def _cancel(ref, broker, data_dir, db, controller_url) -> None:
    """``sweep --cancel``: on a controller's API, or on the store here (fencing the jobs on ``broker`` when given)."""
    from controller.service import ControllerError

    with _controller(controller_url, data_dir, db, broker, fence=True) as c:
        try:
            out = c.cancel(ref)
        except ControllerError as exc:  # not running: nothing to do, as a usage error
            _fail(str(exc), code=2 if exc.status == 409 else 1)
        for line in getattr(getattr(c, "scheduler", None), "errors", None) or []:  # the broker's notes, if any
            console.print(f"  · {line}", highlight=False, markup=False)
        if not controller_url and not broker:  # the embedded broker that held its messages ended with its run
            console.print("  · without --broker the jobs are not fenced: if this sweep ran on a fleet's broker, "
                          "its agents may still run what they were sent (the results are kept apart, not counted)",
                          highlight=False, markup=False)  # fmt: skip
    where = f" on {controller_url}" if controller_url else ""
    console.print(f"sweep {out.get('name', ref)} ({out['sweep_id']}) cancelled{where}: {out['cancelled']} unfinished job(s) "
                  "marked cancelled", highlight=False, markup=False)  # fmt: skip


def _embedded_tick(scheduler, sweep_id, fleet, name):
    """``scheduler.tick``, ending the sweep with one line if the embedded broker is gone (it keeps nothing)."""
    import redis

    from controller.errors import DispatchError, ServiceError

    def lost() -> ServiceError:
        scheduler.stopping = True
        code = fleet.redis.proc.returncode
        return ServiceError(f"the embedded broker (redis-server) stopped (exit code {code}; log {fleet.redis.log_path}) "
                            f"during sweep {name}. Its unfinished jobs are kept: `fleetbench sweep --resume {name}` "
                            f"continues it, `fleetbench sweep --cancel {name}` ends it")  # fmt: skip

    def tick(wait: float):
        if fleet.redis.proc.poll() is not None:
            raise lost()
        try:
            return scheduler.tick(sweep_id, wait_s=wait)
        except (redis.exceptions.RedisError, DispatchError, OSError):
            time.sleep(0.2)
            if fleet.redis.proc.poll() is not None:
                raise lost() from None
            raise

    return tick


# size: the embedded fleet's start, the sweep's progress and its interrupted end, which share one set of processes
def _local_sweep(spec, broker, artifact_url, data_dir, db, yes=False, resume=None):
    from controller.artifacts import ArtifactStore
    from controller.convert.service import ConvertError
    from controller.dispatch import Dispatcher
    from controller.embedded import EmbeddedFleet
    from controller.errors import DispatchError, ServiceError
    from controller.store import StoreError
    from controller.sweeps import DATA_SHA256, Scheduler, SweepError, http_artifact_ref, prepare_models, spec_of_sweep

    with _open_store(data_dir, db) as (paths, store), contextlib.ExitStack() as stack:
        try:
            row = None
            if resume:
                row = store.get_sweep(resume)
                if row.state != SweepState.RUNNING:
                    _fail(f"sweep {row.name} ({row.sweep_id}) is {row.state}: there is nothing to resume; "
                          "`fleetbench status` lists the sweeps", code=2)  # fmt: skip
                spec = spec_of_sweep(row)
            for m in spec.models:  # before starting anything
                for what, p in (("model", m.path), ("data set", m.data)):
                    if p and not DATA_SHA256.fullmatch(str(p)) and not Path(p).exists():
                        _fail(f"the sweep's {what} {p} does not exist", code=2)
            if broker:
                dispatcher = Dispatcher(broker)
                stack.callback(dispatcher.close)
                dispatcher.ping()
                runner = lambda job, on_event: dispatcher.convert(job, on_event)  # noqa: E731
            else:
                fleet = stack.enter_context(EmbeddedFleet(paths, lambda m: console.print(f"  · {m}", highlight=False, markup=False)))
                dispatcher = fleet.dispatcher()
                fleet.ensure_agent()
                runner = fleet.convert
            ref = http_artifact_ref(artifact_url) if artifact_url else (lambda r: r)
            scheduler = Scheduler.on_broker(store, dispatcher, artifact_ref=ref)
            stack.callback(setattr, scheduler, "stopping", True)  # before the fleet stops: conversions it cuts stay resumable
            with console.status("reading the models…"):
                models = prepare_models(spec, store, ArtifactStore(paths.artifacts), runner)
            if row is not None:
                sweep_id = row.sweep_id
                left = scheduler.resume(sweep_id, models, resend=not broker)
                planned = sum(store.job_counts(sweep_id).values())
                console.print(f"sweep {spec.name}: id {sweep_id}, resuming {left:,} unfinished job(s) of {planned:,}")
            else:
                sweep_id = scheduler.submit(spec, models, confirm=yes)
                planned = sum(store.job_counts(sweep_id).values())
                console.print(f"sweep {spec.name}: id {sweep_id}, {planned:,} job(s)")
            for note in scheduler.errors:
                console.print(f"  · {note}", highlight=False, markup=False)
            if broker:
                tick = lambda wait: scheduler.tick(sweep_id, wait_s=wait)  # noqa: E731 - a fleet's broker may come back
            else:
                tick = _embedded_tick(scheduler, sweep_id, fleet, spec.name)
            try:
                counts = follow(tick, lambda c: sum(c.values()), total=planned)
            except KeyboardInterrupt:
                left = sum(n for s, n in store.job_counts(sweep_id).items() if s not in FINAL_STATES)
                err_console.print(f"interrupted: sweep {spec.name} keeps {left:,} unfinished job(s); "
                                  f"`fleetbench sweep --resume {spec.name}` continues it, "
                                  f"`fleetbench sweep --cancel {spec.name}` ends it", highlight=False, markup=False)  # fmt: skip
                raise typer.Exit(130) from None
            return counts, store.sweep_results(sweep_id), sweep_id, spec.name
        except (SweepError, ConvertError, DispatchError, ServiceError, StoreError) as exc:
            _fail(str(exc))


def _remote_sweep(controller_url, spec, text, path, detach, yes=False):
    from controller.client import ApiClient, ApiError

    try:
        client = ApiClient.from_env(controller_url)
        if any(m.path for m in spec.models):
            _fail("with --controller, models are stored ones (`- id: NAME`); upload files first with "
                  "`fleetbench upload MODEL --controller URL`", code=2)  # fmt: skip
        sweep_id = client.post("/api/v1/sweeps", json={"spec": spec.raw, "confirm": yes})["sweep_id"]
        console.print(f"sweep {spec.name}: id {sweep_id} on {controller_url}")
        if detach:
            return
        counts = follow(lambda wait: time.sleep(wait) or client.get(f"/api/v1/sweeps/{sweep_id}")["counts"],
                        lambda c: sum(c.values()), poll_s=1.0)  # fmt: skip
        records = client.get("/api/v1/results", params={"sweep": sweep_id})["records"]
    except ApiError as exc:
        _fail(str(exc))
    from protocol import ResultRecord

    if records:
        console.print(results_table([ResultRecord.from_dict(r) for r in records], title=f"Sweep {spec.name} ({sweep_id})",
                                    width=console.width))  # fmt: skip
    if sum(counts.get(s, 0) for s in BAD_END):
        raise typer.Exit(1)


@app.command()
def status(
    sweep: Optional[str] = typer.Argument(None, help="A sweep (id, id prefix or name); default: list the sweeps."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
    controller_url: Optional[str] = ControllerOpt,
    broker: Optional[str] = typer.Option(None, envvar="FLEETBENCH_BROKER_URL",
                                         help="Also count the results set aside on this broker (unreadable or inconsistent)."),  # fmt: skip
) -> None:
    """Sweeps and their jobs: state, attempts, agent, and why a job failed or waits."""
    if broker:
        _dead_letters(broker)
    with _controller(controller_url, data_dir, db) as c:
        if sweep is None:
            _sweeps_table(c.sweeps())
        else:
            view = c.sweep(sweep)
            _jobs_table(view, view["jobs"])


def _dead_letters(broker: str) -> None:
    import redis

    from controller.collector import DEAD_KEY, dead_letters

    try:
        client = redis.Redis.from_url(broker, socket_timeout=5, socket_connect_timeout=5)
        count, newest = dead_letters(client, limit=3)
    except (redis.exceptions.RedisError, ValueError, OSError) as exc:
        _fail(f"cannot reach the broker {broker}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
              "Check that it runs and the URL (--broker / FLEETBENCH_BROKER_URL) is right")  # fmt: skip
    if not count:
        console.print("results set aside: none")
        return
    console.print(f"[yellow]results set aside: {count}[/] in {DEAD_KEY} (each with its reason); the newest:", highlight=False)
    for d in newest:
        console.print(f"  · {d.get('at') or '?'} job {d.get('job_id') or '?'}: {d.get('reason')}", highlight=False, markup=False)


def _sweeps_table(rows: list[dict]) -> None:
    from controller.sweeps import summary

    if not rows:
        console.print("No sweeps yet: run `fleetbench sweep SPEC.yaml`.")
        return
    table = Table(title="Sweeps", title_justify="left")
    for col in ("sweep", "name", "state", "created", "jobs"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["sweep_id"], r["name"], r["state"], str(r["created_at"]), summary(r["counts"]))
    console.print(table)


def _jobs_table(sweep: dict, jobs: list[dict]) -> None:
    from controller.sweeps import summary

    console.print(f"sweep {sweep['name']} ({sweep['sweep_id']}): {sweep['state']}; {summary(sweep['counts'])}")
    table = Table(title_justify="left")
    for col in ("job", "model", "variant", "device", "threads", "state", "attempt", "agent", "why"):
        table.add_column(col, no_wrap=col not in ("why", "device"))
    colour = {JobState.DONE: "green", JobState.FAILED: "red", JobState.DEAD_LETTER: "red", JobState.EXPIRED: "yellow",
              JobState.WAITING: "yellow"}  # fmt: skip
    for j in jobs:
        state = f"[{colour[j['state']]}]{j['state']}[/]" if j["state"] in colour else j["state"]
        device = j["capability"] + (f" @ {j['pinned_agent']}" if j.get("pinned_agent") else "")
        table.add_row(j["job_id"][:8], j["model_name"], j["variant"], device, str(j["threads"]), state,
                      f"{j['attempt']}/{j['max_attempts']}", j["agent_id"] or "", j["reason"] or "")  # fmt: skip
    console.print(table)


__all__ = ["follow", "sweep", "status", "serve", "upload"]


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for a fleet)."),
    port: int = typer.Option(8080, help="Port to listen on."),
    broker: Optional[str] = typer.Option(None, envvar="FLEETBENCH_BROKER_URL", help="The fleet's broker (needed for sweeps)."),
    public_url: Optional[str] = typer.Option(None, envvar="FLEETBENCH_PUBLIC_URL",
                                             help="The URL agents reach this API at (for artifact downloads); default http://HOST:PORT."),  # fmt: skip
    max_upload_mb: float = typer.Option(512.0, help="Largest upload accepted; larger ones get 413."),
    data_dir: Optional[str] = DataDirOpt,
    db: Optional[str] = DbOpt,
) -> None:
    """Run the controller's HTTP API (tokens in FLEETBENCH_API_TOKENS and FLEETBENCH_AGENT_TOKENS)."""
    import uvicorn

    from controller.api import Tokens, create_app
    from controller.config import Paths
    from controller.store import StoreError

    tokens = Tokens.from_env()
    if not tokens.users:
        _fail("set FLEETBENCH_API_TOKENS to one or more user tokens (comma-separated); agents use FLEETBENCH_AGENT_TOKENS", code=2)
    paths = Paths.resolve(data_dir)
    paths.run.mkdir(parents=True, exist_ok=True)
    url = public_url or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        api = create_app(paths, paths.db_url(db), broker, tokens, max_upload_bytes=int(max_upload_mb * 2**20), public_url=url)
    except (StoreError, ValueError) as exc:  # ValueError: a bad FLEETBENCH_MAX_JSON_BYTES or FLEETBENCH_BODY_TIMEOUT_S
        _fail(str(exc))
    console.print(f"fleetbench API on http://{host}:{port} (OpenAPI at /openapi.json); agents fetch artifacts from {url}")
    uvicorn.run(api, host=host, port=port, log_level="warning")


@app.command()
def upload(
    model: str = typer.Argument(..., help="Model file (.keras, .h5, .tflite, .onnx)."),
    data: Optional[str] = typer.Option(None, help="Data set (.npz) to upload with it."),
    name: Optional[str] = typer.Option(None, help="Display name."),
    controller_url: str = typer.Option(..., "--controller", envvar="FLEETBENCH_CONTROLLER", help="The controller's API URL."),
) -> None:
    """Upload a model (and a data set) to a controller; sweeps then name it with `- id: NAME`."""
    from controller.client import ApiClient, ApiError

    try:
        client = ApiClient.from_env(controller_url)
        m = client.upload("/api/v1/models", Path(model), params={"filename": Path(model).name, "name": name})
        console.print(f"model {m['name']}: id {m['model_id']} ({m['kind']}, {m['size_bytes']:,} bytes)")
        if data:
            import os

            keep_nan = {"allow_nan": "true"} if os.environ.get("FLEETBENCH_ALLOW_NAN") == "1" else None  # as locally
            d = client.upload("/api/v1/datasets", Path(data), params=keep_nan)
            console.print(f"data set: {d['dataset']} ({d['samples']} samples)", soft_wrap=True)
            console.print("in a sweep spec, name it as the model's `data:`")
    except ApiError as exc:
        _fail(str(exc))
    except OSError as exc:  # reading the file to upload (the client turns network errors into ApiError)
        _fail(f"cannot read {exc.filename or model}: {exc.strerror or exc}", code=2)
