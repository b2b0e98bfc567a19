"""The Typer app, its console, the options commands share, and the one-line failure."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

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


DataDirOpt = typer.Option(
    None, "--data-dir", help="Data directory (env FLEETBENCH_HOME; default ~/.local/share/fleetbench)."
)


DbOpt = typer.Option(
    None, "--db", help="SQLAlchemy database URL (env FLEETBENCH_DB_URL; default SQLite in the data dir)."
)


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
def _controller(
    controller_url: Optional[str], data_dir: Optional[str], db: Optional[str], broker: Optional[str] = None,
    fence: bool = False,
):
    """The controller a command talks to: a controller's API with ``--controller``, else this machine's store
    (asking ``broker``, when given, who is online; with ``fence``, checking that it answers and fencing cancelled
    jobs on it). A bad broker URL is exit code 2; an error on the way, one line."""
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
                scheduler = None
                if fence:
                    from controller.sweeps import Scheduler

                    d.ping()  # fail now, with advice, rather than after cancelling in the store alone
                    scheduler = Scheduler.on_broker(store, d)
                yield LocalController(store, scheduler=scheduler, live_agents=lambda: d.record_live_agents(store))
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
