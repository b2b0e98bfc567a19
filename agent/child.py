"""Entry point of the benchmark child process.

``python -m agent.child SPEC.json OUTCOME.json AGENT_ID [DEADLINE]`` runs one job and
writes a :class:`protocol.JobOutcome` (DEADLINE: the ``time.monotonic()`` at which the agent kills it). The outcome goes to a file, not stdout,
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
    from protocol import AgentInventory, ResultRecord
    from protocol.records import warm

    warm(JobSpec, JobOutcome, ResultRecord, AgentInventory)  # the contract converters, once for every child
    for runtime in REGISTRY:
        try:
            create(runtime).version  # importlib.metadata's first look-up is slow
        except Exception:  # noqa: BLE001 - a runtime this device lacks
            pass
    # openvino.runtime: 2022.3's API (NCS2 hosts), whose top-level package is empty
    for heavy in ("numpy.random", "multiprocessing", "ai_edge_litert.interpreter", "openvino", "openvino.runtime",
                  "tflite_runtime.interpreter"):  # fmt: skip
        try:
            importlib.import_module(heavy)
        except Exception:  # noqa: BLE001 - a runtime this device lacks
            pass


def _spare(devnull: int) -> tuple[int, int, int]:
    """Fork the next job's process ahead of its job: it waits, in its own session, for the job on a pipe.
    Returns (its pid, the pipe to write the job to, the pipe it says "written" on)."""
    import signal

    from protocol.proc import die_with_parent

    job_r, job_w = os.pipe()
    written_r, written_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the job's own process
        code = 70
        try:
            os.close(job_w)
            os.close(written_r)
            os.setsid()
            die_with_parent(signal.SIGKILL)
            chunks = []
            while chunk := os.read(job_r, 1 << 16):
                chunks.append(chunk)
            if not chunks:  # the fork server is going away: no job
                os._exit(0)
            job = json.loads(b"".join(chunks))
            fd = os.open(job["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a job's log is the lab's own
            os.dup2(devnull, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = run(job["spec"], Path(job["out"]), job["agent"], job.get("deadline"))
            os.write(written_w, b"w")
        except BaseException:  # noqa: BLE001 - report it as the child's own failure
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(job_r)
    os.close(written_w)
    return pid, job_w, written_r


def _zygote() -> int:
    """Run one job per line on stdin, each in a process of its own; report its pid, when its outcome is
    on disk, then how it ended, as JSON lines on stdout.

    The next job's process is forked ahead, once the last one is reaped (no job runs then), so a job
    does not wait for a fork. A job line carries the spec itself (no file to write and read). The
    child says its outcome file is written on a pipe of its own; the agent is told at once and goes on
    with the outcome while the child exits and is reaped. The garbage collector's objects are frozen
    before the first fork, so no child copies the pages it would otherwise touch.
    """
    import gc
    import select

    _preload()
    gc.collect()
    gc.freeze()
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_RDWR)
    pid, job_w, written_r = _spare(devnull)
    for line in sys.stdin:
        os.write(job_w, line.encode())  # the child reads it to the end (the pipe's close)
        os.close(job_w)
        replies.write(json.dumps({"pid": pid}) + "\n")
        select.select([written_r], [], [])  # "w" once the outcome is written; end of file if it died first
        if os.read(written_r, 1) == b"w":
            replies.write(json.dumps({"written": True}) + "\n")
        os.close(written_r)
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"exit": os.waitstatus_to_exitcode(status)}) + "\n")
        pid, job_w, written_r = _spare(devnull)
    os.close(job_w)  # the spare exits
    os.waitpid(pid, 0)
    return 0


def run(raw_spec: str, out_path: Path, agent_id: str, deadline: float | None = None) -> int:
    """Run one job whose spec is ``raw_spec`` (JSON) and write its outcome to ``out_path``; ``deadline``
    (``time.monotonic()``) is when the agent kills this process."""
    from agent.benchmark import execute
    from agent.errors import JobError

    try:
        spec = JobSpec.from_json(raw_spec)
    except ContractError as exc:
        _write(out_path, JobOutcome(job_id="?", attempt=0, ok=False, error=str(exc), error_kind=ErrorKind.BAD_SPEC, agent_id=agent_id))
        return 0
    try:
        record = execute(spec, agent_id, deadline)
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


def main(argv: list[str]) -> int:
    if argv == ["--zygote"]:
        return _zygote()
    spec_path, out_path, agent_id = Path(argv[0]), Path(argv[1]), argv[2]
    deadline = float(argv[3]) if len(argv) > 3 else None  # the agent's, on the clock every process shares
    return run(spec_path.read_text(encoding="utf-8"), out_path, agent_id, deadline)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # The outcome is on disk. Skip interpreter and runtime teardown (OpenVINO's
    # static destructors alone take a few hundred ms): the agent waits for exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
