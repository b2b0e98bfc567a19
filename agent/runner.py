"""Run one job in a child process, so a crashing runtime never takes the agent down.

The child (``python -m agent.child``) writes a :class:`JobOutcome` file. A
child killed by a signal (a segfault in native code), one that outlives
``settings.timeout_s``, or one that exits without an outcome becomes a failed
outcome with a clear error; the agent process carries on.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from agent import conditions
from agent.host import host_facts
from protocol import ContractError, JobOutcome, JobSpec
from protocol.errors import ErrorKind
from protocol.machines import split_selector
from protocol.private import create_private
from protocol.proc import die_with_parent, signal_name

_STDERR_TAIL = 2000


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-_STDERR_TAIL:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").strip()


def _failed(spec: dict | JobSpec, kind: str, error: str, agent_id: str) -> JobOutcome:
    if isinstance(spec, JobSpec):
        job_id, attempt = spec.job_id, spec.attempt
    else:
        job_id, attempt = str(spec.get("job_id", "?")), spec.get("attempt", 0)
        attempt = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 0
    return JobOutcome(job_id=job_id, attempt=attempt, ok=False, error=error, error_kind=kind, agent_id=agent_id)


def _benchmark_child_setup() -> None:
    # A killed agent (even kill -9) takes its benchmark with it: the job is
    # redelivered to another agent, and must not share the device with a ghost.
    die_with_parent(signal.SIGKILL)


def _child_env() -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))


class ForkServer:
    """A benchmark child factory: one process that has imported numpy, the agent and the runtimes,
    and forks a fresh child for each job (``agent.child --zygote``).

    Starting Python and importing the runtimes costs about half a second; a
    fork costs a few milliseconds. Each job still runs in its own process,
    in its own session, that exits after the job: a crash or a hang takes only
    that child, and the fork server reports how it ended. If the fork server
    itself is gone, the next job starts it again.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self._buf = b""
        #: the last child said its outcome was written; the line saying how it ended is still to come
        self._reaping = False
        #: a private folder for the fork server's own stderr; removed by close() and at exit
        self._dir: Path | None = None
        atexit.register(self._remove_dir)

    def start(self) -> "ForkServer":
        if self.proc is None or self.proc.poll() is not None:
            self._buf, self._reaping = b"", False
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="fleetbench-forkserver-"))
            log_path = self._dir / "forkserver.log"
            create_private(log_path)
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "agent.child", "--zygote"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=log, env=_child_env(), start_new_session=True,
                    preexec_fn=_benchmark_child_setup if sys.platform.startswith("linux") else None,
                )  # fmt: skip
        return self

    def _read(self, timeout_s: float) -> dict | None:
        """The next JSON line from the fork server; None on timeout; EOFError if it died."""
        import selectors

        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(timeout=left):
                    return None
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise EOFError("the fork server exited")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, spec_json: str, out_path: Path, agent_id: str, err_path: Path, timeout_s: float,
            deadline: float | None = None) -> int | None:  # fmt: skip
        """The child's exit code (negative: killed by that signal), or 0 as soon as it says its outcome is
        on disk (it is reaped meanwhile; the next run hears how it ended); None if it ran past
        ``timeout_s`` (killed)."""
        self.start()
        if self._reaping:  # the previous child's end, told after its outcome
            self._reaping = False
            told = self._read(30.0)
            if told is None or "exit" not in told:
                raise EOFError("the fork server did not reap the previous job")
        line = {"spec": spec_json, "out": str(out_path), "agent": agent_id, "err": str(err_path), "deadline": deadline}
        self.proc.stdin.write((json.dumps(line) + "\n").encode())
        self.proc.stdin.flush()
        started = self._read(120.0)  # the first job may wait for the fork server's imports
        if started is None or "pid" not in started:  # no answer, or out of step: run_job starts a new one
            raise EOFError("the fork server did not answer")
        pid = started["pid"]
        ended = self._read(timeout_s)
        if ended is not None and ended.get("written"):
            self._reaping = True
            return 0
        if ended is None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:  # it hung before its setsid(): it is in the fork server's group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for _ in range(2):  # it reaps the child and says so (after "written", if it got that far)
                told = self._read(30.0)
                if told is None:
                    self.close()  # out of step with it: the next job starts a new one
                    break
                if "exit" in told:
                    break
            return None
        return int(ended["exit"])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._remove_dir()

    def _remove_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def run_job(
    spec_data: dict,
    agent_id: str,
    *,
    child_argv: Sequence[str] | None = None,
    forkserver: ForkServer | None = None,
    prejob: "conditions.PreJob | None" = None,
) -> JobOutcome:
    """Run the job described by ``spec_data`` (a JobSpec dict) in a child process.

    ``child_argv`` replaces the child command; tests use it to run a child
    that crashes for real. ``forkserver`` forks the child from a process that
    has imported the runtimes already. ``prejob`` holds the agent's waits before
    a job (cooldown, a quiet device); what it waited is added to the record.
    """
    try:
        spec = JobSpec.from_dict(spec_data)
    except ContractError as exc:
        return _failed(spec_data if isinstance(spec_data, dict) else {}, ErrorKind.BAD_SPEC, str(exc), agent_id)
    problems = spec.settings.problems()
    if problems:
        return _failed(spec, ErrorKind.BAD_SPEC, "invalid benchmark settings: " + "; ".join(problems), agent_id)
    capability, machine = split_selector(spec.capability)
    if machine:  # routed by architecture (litert:cpu@aarch64): what runs, and is recorded, is the capability
        here = host_facts().machine
        if machine != here:
            return _failed(spec, ErrorKind.UNSUPPORTED_DEVICE, f"the job asks for {spec.capability} but this agent is "
                           f"{here or 'of an unknown machine'}: it reached the wrong agent's queue", agent_id)  # fmt: skip
        spec = dataclasses.replace(spec, capability=capability)
    waits = ()
    if prejob is not None and prejob.active:  # before the child's clock starts: waiting is not the job's time
        try:
            waits = prejob.run(spec.settings.disturbance_max_cores)
        except conditions.DeviceBusy as exc:
            return _failed(spec, ErrorKind.DEVICE_BUSY, str(exc), agent_id)
    return _with_waits(_run_child(spec, agent_id, child_argv, forkserver), waits)


def _with_waits(outcome: JobOutcome, waits: tuple) -> JobOutcome:
    record = outcome.record
    if not waits or record is None or record.conditions is None:
        return outcome
    return dataclasses.replace(outcome, record=dataclasses.replace(
        record, conditions=dataclasses.replace(record.conditions, waits=waits)))  # fmt: skip


# size: a benchmark child's life and each way it can end (signal, time-out, no outcome), in order
def _run_child(spec: JobSpec, agent_id: str, child_argv: Sequence[str] | None, forkserver: ForkServer | None) -> JobOutcome:
    with tempfile.TemporaryDirectory(prefix="fleetbench-job-") as tmp:
        tmpdir = Path(tmp)
        spec_path, out_path, err_path = tmpdir / "spec.json", tmpdir / "outcome.json", tmpdir / "stderr.log"
        spec_json = spec.to_json()
        # when this process kills the child, on the clock every process shares (the profile phase keeps within it)
        deadline = time.monotonic() + spec.settings.timeout_s
        argv = list(child_argv or [sys.executable, "-m", "agent.child"]) + [str(spec_path), str(out_path), agent_id,
                                                                             f"{deadline:.3f}"]  # fmt: skip
        what = f"{spec.model_name} {spec.variant} on {spec.capability}"
        returncode: int | None = -1
        served = False
        if forkserver is not None and child_argv is None:  # the spec goes through its pipe, not a file
            try:
                returncode, served = forkserver.run(spec_json, out_path, agent_id, err_path, spec.settings.timeout_s,
                                                    deadline), True  # fmt: skip
            except (EOFError, OSError):
                forkserver.close()  # started again for the next job; this one starts cold
        if not served:
            spec_path.write_text(spec_json, encoding="utf-8")
            create_private(err_path)
            with open(err_path, "wb") as err:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=_child_env(), start_new_session=True,
                    preexec_fn=_benchmark_child_setup if sys.platform.startswith("linux") else None,
                )  # fmt: skip
            try:
                returncode = proc.wait(timeout=spec.settings.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                returncode = None
        if returncode is None:
            return _failed(
                spec,
                ErrorKind.TIMEOUT,
                f"benchmark of {what} ran past timeout_s={spec.settings.timeout_s:g} s and was killed; "
                "raise the timeout, or lower min_duration_s / min_iterations for this model",
                agent_id,
            )
        if returncode < 0:
            tail = _tail(err_path)
            return _failed(
                spec,
                ErrorKind.CRASHED,
                f"benchmark process for {what} was killed by {signal_name(returncode)}: the runtime crashed on "
                "this model (the agent itself is fine). Try another variant or runtime version"
                + (f". Last output:\n{tail}" if tail else ""),
                agent_id,
            )
        if not out_path.exists():
            tail = _tail(err_path)
            return _failed(
                spec,
                ErrorKind.CRASHED,
                f"benchmark process for {what} exited with code {returncode} without a result"
                + (f". Last output:\n{tail}" if tail else ""),
                agent_id,
            )
        try:
            return JobOutcome.from_json(out_path.read_text(encoding="utf-8"))
        except ContractError as exc:
            return _failed(spec, ErrorKind.INTERNAL, f"benchmark child wrote an unreadable outcome: {exc}", agent_id)

