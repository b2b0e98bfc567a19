"""The ``fleetbench`` command: the Typer app (``app.py``), its tables (``render.py``) and one module per group
of commands. Importing this package registers every command; ``main`` is the entry point."""

from __future__ import annotations

import os
import sys

import typer

from controller.cli.app import (  # noqa: F401
    ControllerOpt,
    DataDirOpt,
    DbOpt,
    _controller,
    _fail,
    _open_store,
    _term_as_exit,
    _writable_parent,
    app,
    console,
    err_console,
)
from controller.cli.render import (  # noqa: F401
    CSV_COLUMNS,
    RESULT_COLUMNS,
    conversion_table,
    fidelity_cell,
    fleet_table,
    results_table,
    write_csv,
)
# each module registers its commands on import; this order is the order `fleetbench --help` lists them
from controller.cli import models, quant, fleet, results, profiles, readiness, regressions, sweeps  # noqa: E402,F401,I001

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
