"""A sweep job's life: its states, and the pure rules that move it.

Nothing here talks to a database, a broker or a clock: the scheduler (``controller/sweeps/scheduler.py``) and
the store's ingestion (``controller/store/jobs.py``) ask these functions what to do and do it, so
every rule is tested from tables of cases (tests/test_jobs.py) in milliseconds.

==================== =====================================================
``converting``       its variant is being converted; it starts when it exists
``pending``          ready to send (shown as queued)
``queued``           sent to the capability's (or pinned agent's) queue
``running``          an agent took it
``waiting-for-device`` no live agent offers its capability; expires later
``done``             its record is stored
``failed``           failed with an error that a retry cannot fix
``dead-letter``      failed ``max_attempts`` times (crashes, time-outs, lost agents)
``expired``          waited for a device longer than the sweep allows
``superseded``       replaced by a newer sweep of the same name
``cancelled``        its sweep was cancelled before it finished
==================== =====================================================
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocol.errors import ErrorKind, is_retryable


class JobState(str, enum.Enum):
    """A job's state; the value is what the jobs table, the API and the CLI show."""

    CONVERTING = "converting"
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting-for-device"
    DONE = "done"
    FAILED = "failed"
    DEAD_LETTER = "dead-letter"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class SweepState(str, enum.Enum):
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


#: Unfinished states, in the order a job passes through them; the scheduler moves these.
ACTIVE_STATES = (JobState.PENDING, JobState.CONVERTING, JobState.QUEUED, JobState.RUNNING, JobState.WAITING)
#: Final states: nothing moves a job out of them.
FINAL_STATES = (JobState.DONE, JobState.FAILED, JobState.DEAD_LETTER, JobState.EXPIRED, JobState.SUPERSEDED,
                JobState.CANCELLED)  # fmt: skip


class Ingest(str, enum.Enum):
    """What ingestion did with one outcome (the collector counts these)."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    LATE = "superseded"  # an older attempt's, or a finished job's: kept apart, never counted
    RETRY = "retry"
    FAILED_FINAL = "failed"
    UNKNOWN = "unknown-job"

    def __str__(self) -> str:
        return self.value


#: After these, a message of the job that is still on a queue must not run: its fence goes to 0.
FENCE_OFF_AFTER = (Ingest.STORED, Ingest.DUPLICATE, Ingest.FAILED_FINAL)


class Job(Protocol):
    """What the rules read of a job (a ``JobRow`` has all of it)."""

    state: str
    attempt: int
    max_attempts: int
    sent_attempt: int
    agent_id: str | None
    pinned_agent: str | None
    capability: str
    expires_at: dt.datetime | None


@dataclass(frozen=True)
class Change:
    """Fields to set on a job, applied only while its attempt is still ``attempt``; then, if ``fence`` is
    not None, the job's fence is set to it (0: an agent that still gets a message of it does not run it)."""

    fields: dict[str, Any]
    attempt: int
    fence: int | None = None


@dataclass(frozen=True)
class Send:
    """Send the job's next attempt."""

    attempt: int


@dataclass(frozen=True)
class FleetView:
    """The live agents at one tick: agent id -> the capabilities it offers."""

    live: dict[str, set[str] | frozenset[str]] = field(default_factory=dict)
    #: every capability some live agent offers, read for every job: made from ``live`` unless given (a
    #: presence mirror keeps it up to date as agents come and go)
    offered: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.offered is None:
            object.__setattr__(self, "offered", frozenset().union(*self.live.values()))

    def can_run(self, job: Job) -> bool:
        if job.pinned_agent:  # its own queue: any capability it has, whatever queues it serves (an emulated agent's)
            return job.capability.partition("@")[0] in {n.partition("@")[0] for n in self.live.get(job.pinned_agent, ())}
        return job.capability in self.offered


def after_failure(job: Job, kind: ErrorKind | str, why: str) -> dict[str, Any]:
    """The one retry-or-dead-letter rule: a failure of a retryable kind sends the job again until its
    ``max_attempts``, then makes it a dead letter; any other kind fails it at once."""
    kind = str(kind)
    if not is_retryable(kind):
        return {"state": JobState.FAILED, "reason": why, "error_kind": kind}
    if job.attempt < job.max_attempts:
        return {"state": JobState.PENDING, "reason": f"{why}; retrying", "error_kind": kind}
    return {"state": JobState.DEAD_LETTER, "reason": f"failed {job.attempt} time(s), the last because {why}",
            "error_kind": kind}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """What to do with an outcome: the answer, and the fields to set on its job (none when it changes nothing)."""

    answer: Ingest
    fields: dict[str, Any] = field(default_factory=dict)


def on_outcome(job: Job, attempt: int, ok: bool, agent_id: str = "", error_kind: str | None = None,
               error: str | None = None) -> Verdict:  # fmt: skip
    """An agent's outcome of ``attempt`` for a sweep job: stored, late (kept apart), a duplicate, or a failure
    that is retried or final."""
    if attempt < job.attempt or job.state in (JobState.SUPERSEDED, JobState.EXPIRED, JobState.CANCELLED):
        return Verdict(Ingest.LATE)
    if job.state in (JobState.DONE, JobState.FAILED, JobState.DEAD_LETTER):
        return Verdict(Ingest.DUPLICATE)
    agent = {"agent_id": agent_id or job.agent_id}
    if ok:
        return Verdict(Ingest.STORED, {"state": JobState.DONE, "reason": "", "error_kind": None, **agent})
    if not is_retryable(error_kind):
        fields = {
            "state": JobState.FAILED,
            "reason": error or "failed without an error message",
            "error_kind": error_kind,
        }
        return Verdict(Ingest.FAILED_FINAL, {**fields, **agent})
    fields = after_failure(job, error_kind, f"attempt {job.attempt} failed ({error_kind}): {error}")
    if fields["state"] == JobState.PENDING:
        return Verdict(Ingest.RETRY, {**fields, **agent})
    fields["reason"] = f"failed {job.attempt} time(s), the last with ({error_kind}): {error}"  # the agent's own words
    return Verdict(Ingest.FAILED_FINAL, {**fields, **agent})


def on_result_set_aside(job: Job, attempt: int | None, reason: str) -> Change | None:
    """A job whose agent's result broke the contract (the collector set it aside) runs again, up to its
    attempts; None when the result was not the current attempt's of a job in flight."""
    if job.state not in (JobState.QUEUED, JobState.RUNNING) or (attempt is not None and attempt != job.attempt):
        return None
    why = f"attempt {job.attempt}'s result was set aside ({reason[:200]})"
    return Change(after_failure(job, ErrorKind.BAD_RESULT, why), job.attempt)


def on_tick(job: Job, fleet: FleetView, now: dt.datetime, expire_s: float, started: str | None = None
            ) -> Change | Send | None:  # fmt: skip
    """One scheduler step for an active, converted job (pending, waiting, queued or running).

    ``started`` is the id of the agent that announced it started this attempt ("" when it does not name
    one), else None; it moves a queued job, or a waiting one whose message is on a queue, to running. Returns the change to make, a :class:`Send`, or None to leave it as it is.
    """
    if job.pinned_agent:
        missing = f"waiting for agent {job.pinned_agent} (with {job.capability}) to come online"
    else:
        missing = f"waiting for a device with {job.capability}"
    available = fleet.can_run(job)
    wait = Change({"state": JobState.WAITING, "reason": missing, "expires_at": now + dt.timedelta(seconds=expire_s)},
                  job.attempt)  # fmt: skip
    if started is not None and (job.state == JobState.QUEUED or _on_a_queue(job)):
        # started: queued, or waiting with its message still on a queue (its agent came back and took it)
        fields = {"state": JobState.RUNNING, "agent_id": started or None}
        if job.state == JobState.WAITING:
            fields.update(reason="", expires_at=None)
        return Change(fields, job.attempt)
    if job.state == JobState.RUNNING:
        if job.agent_id and job.agent_id not in fleet.live:
            why = f"agent {job.agent_id} went away (no heartbeat) during attempt {job.attempt}"
            return Change(after_failure(job, ErrorKind.AGENT_LOST, why), job.attempt)
        return None
    if job.state == JobState.QUEUED:
        return None if available else wait
    if not available:  # pending or waiting
        if job.state == JobState.PENDING:
            return wait
        if job.expires_at is not None and now > _utc(job.expires_at):
            return Change({"state": JobState.EXPIRED, "reason": f"{missing}: none came within {expire_s:g} s"},
                          job.attempt, fence=0)  # fmt: skip
        return None
    if _on_a_queue(job):  # it was sent before its device went away: its message is still on the queue
        return Change({"state": JobState.QUEUED, "reason": "", "expires_at": None}, job.attempt)
    return Send(job.attempt + 1)


def _on_a_queue(job: Job) -> bool:
    """Waiting for a device, but sent before it went away: its message is still on a queue."""
    return job.state == JobState.WAITING and job.sent_attempt == job.attempt and job.attempt > 0


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)  # SQLite hands timestamps back without a zone
