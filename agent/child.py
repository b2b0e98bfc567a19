"""Entry point of the benchmark child process.

``python -m agent.child SPEC.json OUTCOME.json AGENT_ID`` runs one job and
writes a :class:`protocol.JobOutcome`. The outcome goes to a file, not stdout,
so runtime log lines cannot corrupt it.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from protocol import ContractError, JobOutcome, JobSpec


def _write(path: Path, outcome: JobOutcome) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(outcome.to_json(), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    spec_path, out_path, agent_id = Path(argv[0]), Path(argv[1]), argv[2]
    from agent.benchmark import execute
    from agent.errors import JobError

    raw = spec_path.read_text(encoding="utf-8")
    try:
        spec = JobSpec.from_json(raw)
    except ContractError as exc:
        _write(out_path, JobOutcome(job_id="?", attempt=0, ok=False, error=str(exc), error_kind="bad-spec", agent_id=agent_id))
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
            error_kind="internal",
            agent_id=agent_id,
        )
    _write(out_path, outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
