"""The agent's Celery app. The task is thin: fence check, :func:`agent.runner.run_job`, outbox.

The CLI (:mod:`agent.cli`) sets :data:`context` before the worker starts.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from celery import Celery

from agent.runner import run_job
from agent.transport import install as guard_queues
from protocol import (
    BENCHMARK_TASK,
    CELERY_SETTINGS,
    FENCE_PREFIX,
    JOB_TIME_LIMIT_S,
    MAX_STARTS,
    STARTED_KEY,
    STARTS_PREFIX,
    JobOutcome,
)  # fmt: skip
from protocol.errors import ErrorKind

log = logging.getLogger("fleetbench.agent")
#: the most start announcements kept on the broker while no scheduler takes them
STARTED_KEEP = 100_000

app = Celery("fleetbench-agent")
app.conf.update(CELERY_SETTINGS)
# Agents consume only queues they declare; never the default "celery" queue.
app.conf.task_create_missing_queues = True
guard_queues()  # an item on a queue that is not a task message is dropped, not fatal


@dataclass
class Context:
    outbox: object = None  # agent.outbox.Outbox
    relay: object = None  # agent.outbox.Relay
    redis: object = None  # redis.Redis on the broker, for fences
    job_time_limit_s: float = JOB_TIME_LIMIT_S
    forkserver: object = None  # agent.runner.ForkServer
    prejob: object = None  # agent.conditions.PreJob: cooldown and quiet-device waits


context = Context()


def agent_id() -> str:
    return os.environ.get("FLEETBENCH_AGENT_ID", "")


def _refusal(spec: dict, kind: str, message: str) -> JobOutcome:
    attempt = spec.get("attempt", 0)
    attempt = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 0
    return JobOutcome(job_id=str(spec.get("job_id", "?"))[:64], attempt=attempt, ok=False, error=message,
                      error_kind=kind, agent_id=agent_id())  # fmt: skip


def _gate(spec: dict) -> JobOutcome | None:
    """An outcome instead of running: the attempt was called off, or keeps killing its agents. Otherwise
    the start is counted and announced on :data:`STARTED_KEY` (the scheduler marks the job running): two
    round trips to the broker in all."""
    r = context.redis
    job_id, attempt = spec.get("job_id"), spec.get("attempt")
    if r is None or not job_id:
        return None
    import redis

    try:
        fence = r.get(FENCE_PREFIX + str(job_id))
        if fence is not None and int(fence) != attempt:
            log.info("job %s attempt %s is no longer current (now %s): not run", job_id, attempt, int(fence))
            return _refusal(spec, ErrorKind.SUPERSEDED, f"attempt {attempt} was superseded (current: {int(fence)}); not run")
        key = f"{STARTS_PREFIX}{job_id}.{attempt}"
        pipe = r.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 7 * 24 * 3600)
        pipe.rpush(STARTED_KEY, json.dumps({"job_id": str(job_id)[:64], "attempt": attempt, "agent_id": agent_id()}))
        pipe.ltrim(STARTED_KEY, -STARTED_KEEP, -1)  # nobody ticking (no sweep running): the list stays bounded
        starts = pipe.execute()[0]
    except (redis.exceptions.RedisError, ValueError):
        return None  # no fence to read: run it; the store fences the result
    if starts > MAX_STARTS:
        return _refusal(spec, ErrorKind.CRASHED, f"attempt {attempt} was started {starts - 1} times and never finished: "
                        "it takes its agent down with it, so it is not started again")  # fmt: skip
    return None


# The agent announces a start itself (_gate), and its outcome goes through the outbox to the results list: nothing
# is written to Celery's result backend for a job (no connection for it, and no result kept a day per job).
@app.task(name=BENCHMARK_TASK, track_started=False, ignore_result=True)
def benchmark(spec: dict | None = None, *extra, **kwargs) -> dict:
    if not isinstance(spec, dict) or extra or kwargs:  # a message of the right task name but not from a controller
        log.error("refused a job message whose argument is a %s, not a job spec", type(spec).__name__)
        return _refusal({}, ErrorKind.BAD_SPEC, f"the job argument is a {type(spec).__name__}, not a job spec").to_dict()
    outcome = _gate(spec)
    if outcome is None:
        settings = spec.get("settings")
        timeout = settings.get("timeout_s", 0) if isinstance(settings, dict) else 0
        if isinstance(timeout, (int, float)) and timeout > context.job_time_limit_s:
            outcome = _refusal(spec, ErrorKind.BAD_SPEC, f"timeout_s={timeout:g} is above this agent's job time limit "
                               f"({context.job_time_limit_s:g} s); lower it, or raise job_time_limit_s on the agents")  # fmt: skip
        else:
            outcome = run_job(spec, agent_id(), forkserver=context.forkserver, prejob=context.prejob)
    if context.outbox is not None and outcome.error_kind != ErrorKind.SUPERSEDED:
        row = context.outbox.put(outcome)  # on disk before the message is acknowledged (acks_late)
        context.relay.push(row)  # to the broker from here; the relay thread retries what this could not send
    return outcome.to_dict(samples="text")
