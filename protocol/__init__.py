"""fleetbench's wire contract, shared by the controller and the agents.

Depends only on numpy, so it installs on a bare edge device. Nothing here
imports Celery; :data:`CELERY_SETTINGS` is a plain dict both sides apply.
"""

from protocol.records import (
    SCHEMA_VERSION,
    AgentInventory,
    ArtifactRef,
    BenchmarkSettings,
    CapabilityInfo,
    ContractError,
    Fidelity,
    HostFacts,
    JobOutcome,
    JobSpec,
    LatencyStats,
    ResultRecord,
    Throughput,
    LoadGenResult,
    LOADGEN_SCENARIOS,
    Validity,
    new_job_id,
    utc_now,
)

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


#: Agents keep ``AGENT_KEY_PREFIX + agent_id`` (an AgentInventory as JSON) in
#: the broker's Redis, refreshed every HEARTBEAT_S and expiring after
#: HEARTBEAT_TTL_S: a key that is gone means the agent is gone.
AGENT_KEY_PREFIX = "fleetbench:agent:"
HEARTBEAT_S = 5.0
HEARTBEAT_TTL_S = 15


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


__all__ = [
    "SCHEMA_VERSION",
    "AGENT_KEY_PREFIX",
    "HEARTBEAT_S",
    "HEARTBEAT_TTL_S",
    "AgentInventory",
    "ArtifactRef",
    "BenchmarkSettings",
    "BENCHMARK_TASK",
    "CELERY_SETTINGS",
    "CapabilityInfo",
    "ContractError",
    "Fidelity",
    "HostFacts",
    "JobOutcome",
    "JobSpec",
    "LatencyStats",
    "ResultRecord",
    "Throughput",
    "LoadGenResult",
    "LOADGEN_SCENARIOS",
    "Validity",
    "agent_queue",
    "new_job_id",
    "queue_for",
    "utc_now",
]
