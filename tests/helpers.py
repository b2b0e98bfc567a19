"""Helpers the tests share, and bench/ uses too (bench imports these, never a test module): waiting on one
agent job through the broker's results list, the dashboard on a free port, and the browser's settings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from controller.errors import DispatchError, ServiceError
from controller.jobs import JobState
from protocol import JobOutcome, JobSpec
from protocol.proc import free_port, log_tail, spawn, stop
from protocol.records import ContractError

#: States reported to ``on_state`` while waiting.
WAITING_FOR_DEVICE, QUEUED, RUNNING = JobState.WAITING.value, JobState.QUEUED.value, JobState.RUNNING.value


def wait_outcome(
    dispatcher,
    sent,
    spec: JobSpec,
    on_state: Callable[[str], None] = lambda s: None,
    check: Callable[[], None] = lambda: None,
    poll_s: float = 0.2,
    device_check_s: float = 2.0,
    grace_s: float = 60.0,
) -> JobOutcome:
    """Wait for the outcome of one job ``sent`` to an agent, reporting its state; ``check`` may raise to abort.

    For tests that watch one agent task without a collector: the outcome is read where the agent's outbox
    puts it, the broker's results list (it is left there), and the start where the agent announces it.
    Agents store no Celery result for a job (``ignore_result``), so ``sent`` (what ``send_task`` returned)
    is not read. Gives up ``grace_s`` after the job's own timeout.
    """
    import json

    import redis

    from protocol import RESULTS_KEY, STARTED_KEY

    limit_s = spec.settings.timeout_s + grace_s
    deadline = time.monotonic() + limit_s
    next_device_check = 0.0
    state = None
    mine = (spec.job_id, spec.attempt or 1)

    def ids(raw) -> tuple:
        try:
            d = json.loads(raw)
            return d.get("job_id"), d.get("attempt")
        except (ValueError, AttributeError):
            return None, None

    while True:
        try:
            found = [raw for raw in dispatcher.redis.lrange(RESULTS_KEY, 0, -1) if ids(raw) == mine]
            started = any(ids(raw) == mine for raw in dispatcher.redis.lrange(STARTED_KEY, 0, -1))
        except redis.exceptions.RedisError as exc:
            raise DispatchError(dispatcher._broker_down(exc)) from None
        if found:
            break
        now = time.monotonic()
        if started:
            new_state = RUNNING
        elif now >= next_device_check:
            next_device_check = now + device_check_s
            new_state = QUEUED if dispatcher.agents_offering(spec.capability) else WAITING_FOR_DEVICE
        else:
            new_state = state or QUEUED
        if new_state != state:
            state = new_state
            on_state(state)
        check()
        if now > deadline:
            raise DispatchError(
                f"no outcome for job {spec.job_id} within {limit_s:g} s "
                f"(last state: {state}); is an agent with {spec.capability} running?"
            )
        time.sleep(poll_s)
    try:
        return JobOutcome.from_json(found[-1])
    except ContractError as exc:
        raise DispatchError(f"agent answered job {spec.job_id} with a malformed outcome: {exc}") from None


#: Flags that work on this machine: no sandbox as root, no GPU, and no calls home on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]  # fmt: skip
INSTALL = ("Debian's Chromium is needed for the browser tests: `apt-get install chromium chromium-driver` "
           "(`make test` installs it), or set FLEETBENCH_CHROMIUM to a Chromium binary")  # fmt: skip

# page, path, heading, a selector that shows the page's content is there, how many of them at least
PAGES = [
    ("fleet", "", "Fleet", ".js-plotly-plot", 1),
    ("sweeps", "sweeps", "Sweeps", '[data-testid="stProgress"]', 3),
    ("explorer", "explorer", "Explorer", ".js-plotly-plot", 4),
    ("compare", "compare", "Compare", ".js-plotly-plot", 1),
    ("history", "history", "History", ".js-plotly-plot", 1),
]


def chromium_path() -> str | None:
    return os.environ.get("FLEETBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


class LocalDashboard:
    """`fleetbench dashboard` on a free loopback port, reading ``db_url``; ``start`` returns once Streamlit
    answers its health check (the browser tests and bench/dashboard.py use it)."""

    def __init__(self, db_url: str, log_path: Path, port: int | None = None, env: dict | None = None):
        self.db_url = db_url
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.env = env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> "LocalDashboard":
        import urllib.request

        argv = [sys.executable, "-m", "controller.cli", "dashboard", "--port", str(self.port), "--db", self.db_url]
        self.proc = spawn(argv, self.log_path, env=None if self.env is None else {**os.environ, **self.env})
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read() == b"ok":
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"`fleetbench dashboard` did not come up within {timeout_s:g} s:\n"
                                   f"{log_tail(self.log_path, 40)}")  # fmt: skip
            time.sleep(0.3)

    def stop(self) -> None:
        stop(self.proc, grace_s=10.0)

    def __enter__(self) -> "LocalDashboard":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def at_once(fn, n: int) -> tuple[list, list[Exception]]:
    """Call ``fn()`` from ``n`` threads released together (a barrier): (what the calls returned, what they raised)."""
    import threading

    barrier, answers, errors = threading.Barrier(n), [], []

    def call():
        barrier.wait()
        try:
            answers.append(fn())
        except Exception as exc:  # noqa: BLE001 - the caller asserts on them
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers, errors


def tiny_sweep(folder: Path, tiny_model: dict, spec_lines: str) -> Path:
    """``folder`` holding the tests' tiny model (``tiny.tflite``), its data (``tiny.npz``) and a sweep spec of
    ``spec_lines`` (YAML, naming them by those file names); returns the spec's path."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "tiny.npz", x=tiny_model["x"], y=tiny_model["y"])
    (folder / "tiny.tflite").write_bytes(tiny_model["path"].read_bytes())
    spec = folder / "sweep.yaml"
    spec.write_text(spec_lines)
    return spec


def unavailable(why: str):
    """A test's set-up is missing here: skip it, except under CI=true, where `make test` makes everything, so fail."""
    import pytest

    from tests.conftest import IN_CI

    if IN_CI:
        pytest.fail(why)
    pytest.skip(why)


def venv_python(venv: str) -> str:
    """The Python of one of the venvs `make test` makes beside .venv (``.venv-tflite``, ``.venv-openvino-legacy``);
    :func:`unavailable` where it is missing."""
    python = Path(__file__).resolve().parent.parent / venv / "bin" / "python"
    if not python.exists():
        unavailable(f"no {venv}: run `make {venv.lstrip('.')}` (or `make test`, which makes it)")
    return str(python)
