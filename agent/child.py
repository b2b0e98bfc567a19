"""Entry point of the benchmark child process.

``python -m agent.child SPEC.json OUTCOME.json AGENT_ID`` runs one job and
writes a :class:`protocol.JobOutcome`. The outcome goes to a file, not stdout,
so runtime log lines cannot corrupt it.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from protocol import ContractError, JobOutcome, JobSpec
from protocol.errors import ErrorKind


def _write(path: Path, outcome: JobOutcome) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(outcome.to_json(samples="text"), encoding="utf-8")
    os.replace(tmp, path)


def _preload() -> None:
    """What every job needs, imported once in the fork server (see agent.runner.ForkServer)."""
    import importlib

    import agent.benchmark  # noqa: F401 - numpy, the measurement module, the backends table
    from agent.host import host_facts

    host_facts()  # cached per process: CPU model, cores, RAM
    from agent.backends import REGISTRY, create
    from protocol.stats import summarize_ns

    summarize_ns([1000 + i for i in range(700)])  # lazy numpy paths of the statistics
    for runtime in REGISTRY:
        try:
            create(runtime).version  # importlib.metadata's first look-up is slow
        except Exception:  # noqa: BLE001 - a runtime this device lacks
            pass
    for heavy in ("numpy.random", "multiprocessing", "ai_edge_litert.interpreter", "openvino", "tflite_runtime.interpreter"):
        try:
            importlib.import_module(heavy)
        except Exception:  # noqa: BLE001 - a runtime this device lacks
            pass


def _zygote() -> int:
    """Fork one child per job line on stdin; report its pid, then how it ended, as JSON lines on stdout."""
    import signal

    from protocol.proc import die_with_parent

    _preload()
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for line in sys.stdin:
        spec_path, out_path, agent_id, err_path = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the job's own process, in its own session
            code = 70
            try:
                os.setsid()
                die_with_parent(signal.SIGKILL)
                fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a job's log is the lab's own
                os.dup2(devnull, 0)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = main([spec_path, out_path, agent_id])
            except BaseException:  # noqa: BLE001 - report it as the child's own failure
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"exit": os.waitstatus_to_exitcode(status)}) + "\n")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--zygote"]:
        return _zygote()
    spec_path, out_path, agent_id = Path(argv[0]), Path(argv[1]), argv[2]
    from agent.benchmark import execute
    from agent.errors import JobError

    raw = spec_path.read_text(encoding="utf-8")
    try:
        spec = JobSpec.from_json(raw)
    except ContractError as exc:
        _write(out_path, JobOutcome(job_id="?", attempt=0, ok=False, error=str(exc), error_kind=ErrorKind.BAD_SPEC, agent_id=agent_id))
        return 0
    try:
        record = execute(spec, agent_id)
        outcome = JobOutcome(job_id=spec.job_id, attempt=spec.attempt, ok=True, record=record, agent_id=agent_id)
    except JobError as exc:
        outcome = JobOutcome(
            job_id=spec.job_id, attempt=spec.attempt, ok=False, error=exc.message, error_kind=exc.kind, agent_id=agent_id
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes an outcome
        tb = traceback.format_exc(limit=5)
        outcome = JobOutcome(
            job_id=spec.job_id,
            attempt=spec.attempt,
            ok=False,
            error=f"internal agent error {type(exc).__name__}: {exc}\n{tb}",
            error_kind=ErrorKind.INTERNAL,
            agent_id=agent_id,
        )
    _write(out_path, outcome)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # The outcome is on disk. Skip interpreter and runtime teardown (OpenVINO's
    # static destructors alone take a few hundred ms): the agent waits for exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
