"""Names both sides of the broker agree on: queues, Redis keys, the Celery settings.

Nothing here imports Celery or Redis; :data:`CELERY_SETTINGS` is a plain dict both sides apply.
"""

from __future__ import annotations

#: Name of the Celery task an agent serves.
BENCHMARK_TASK = "fleetbench.benchmark"

#: Celery settings both sides must agree on. JSON only: a pickled message is
#: refused, never executed.
CELERY_SETTINGS = {
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_track_started": True,
    "result_expires": 24 * 3600,
    "broker_connection_retry_on_startup": True,
}


#: Agents' heartbeats and inventories: protocol/presence.py (one sorted set and one hash for the fleet).
from protocol.presence import HEARTBEAT_S, HEARTBEAT_TTL_S  # noqa: E402,F401 (re-exported)


#: Agents push every JobOutcome (JSON) onto this Redis list, from their outbox;
#: the controller's collector stores them (see agent/outbox.py).
RESULTS_KEY = "fleetbench:results"
#: ``FENCE_PREFIX + job_id`` holds the job's current attempt, set by the
#: controller when it sends one; "0" means the job was called off. An agent
#: runs a message only if its attempt is the current one.
FENCE_PREFIX = "fleetbench:fence:"
#: Agents push ``{"job_id", "attempt", "agent_id"}`` (JSON) onto this Redis list as they start a job;
#: the scheduler takes them in batches and marks those jobs running (work per started job, not a lookup
#: per queued job per tick). Celery's own STARTED state is not written for benchmark tasks.
STARTED_KEY = "fleetbench:started"
#: ``STARTS_PREFIX + job_id.attempt`` counts how often agents started that
#: attempt; past MAX_STARTS it is not started again (it kills its agents).
STARTS_PREFIX = "fleetbench:starts:"
MAX_STARTS = 3
#: A job may run this long at most (its ``timeout_s`` is capped here) ...
JOB_TIME_LIMIT_S = 3600
#: ... and the broker hands an unacknowledged job to another agent only after
#: this long, which must be longer: otherwise a slow job runs twice at once.
VISIBILITY_TIMEOUT_S = 7200


def check_visibility_timeout(visibility_timeout_s: float, job_time_limit_s: float) -> str | None:
    """Why these settings are unsafe, or None when the visibility timeout is longer than the job time limit."""
    if visibility_timeout_s > job_time_limit_s:
        return None
    return (
        f"the broker's visibility timeout ({visibility_timeout_s:g} s) must be longer than the job time limit "
        f"({job_time_limit_s:g} s): otherwise Redis hands a job that is still running to a second agent. "
        "Raise visibility_timeout_s or lower job_time_limit_s"
    )


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_broker_url(url: str, allow_insecure: bool = False) -> str | None:
    """Why ``url`` is not a broker an agent may use, or None.

    A Redis beyond this machine must ask for a password: anyone who can write to it
    can queue jobs on every device (and read every result). Loopback is allowed
    without one (the embedded demo, tests); a closed lab network can opt out.
    """
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        host = u.hostname
    except ValueError as exc:
        return f"the broker URL {url!r} does not parse: {exc}"
    if u.scheme not in ("redis", "rediss"):
        return f"the broker must be a redis:// or rediss:// URL, not {u.scheme or 'no scheme'}://"
    if u.password or allow_insecure or host in LOOPBACK:
        return None
    return (
        f"the broker {host}:{u.port or 6379} is given without a password: an agent refuses an unauthenticated "
        "Redis beyond this machine. Use redis://:PASSWORD@HOST:6379/0 (docker-compose.yml sets REDIS_PASSWORD), "
        "or, on a closed lab network only, allow_insecure_broker in the agent config (--allow-insecure-broker)"
    )


def queue_for(capability: str) -> str:
    """The Celery queue that serves one capability, e.g. ``fleetbench.cap.litert:cpu``."""
    if not capability or " " in capability:
        raise ValueError(f"not a capability string: {capability!r}")
    return f"fleetbench.cap.{capability}"


def agent_queue(agent_id: str) -> str:
    """The queue of one agent, for jobs pinned to it."""
    if not agent_id or " " in agent_id:
        raise ValueError(f"not an agent id: {agent_id!r}")
    return f"fleetbench.agent.{agent_id}"


#: The converter workers' task and queue (controller only; agents never serve them).
CONVERT_TASK = "fleetbench.convert"
CONVERT_QUEUE = "fleetbench.convert"
#: Results items the collector could not store, set aside with the reason (never retried).
RESULTS_DEAD_KEY = RESULTS_KEY + ":dead"


def results_processing_key(collector_name: str) -> str:
    """The list one collector moves results items into while it stores them."""
    return f"{RESULTS_KEY}:processing:{collector_name}"
