"""What the scheduler needs of a fleet, and nothing more.

:class:`controller.sweeps.Scheduler` talks only to a :class:`FleetPort`. ``redis_celery.RedisCeleryFleet``
is the real one (Celery queues on Redis, heartbeat keys, the results list and its collector);
``memory.MemoryFleet`` keeps everything in memory, so the scheduler's rules are tested without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union

from protocol import AgentInventory, JobOutcome, JobSpec


@dataclass(frozen=True)
class Delivered:
    """An agent's outcome, stored by the fleet's collector; ``what`` is what ingestion did (controller.jobs.Ingest)."""

    outcome: JobOutcome
    what: str


@dataclass(frozen=True)
class SetAside:
    """An agent's result that broke the contract and was set aside; job id and attempt when they could be read."""

    job_id: str | None
    attempt: int | None
    reason: str


Event = Union[Delivered, SetAside]


class FleetPort(Protocol):
    def send(self, spec: JobSpec, queue: str | None = None) -> None:
        """Queue one attempt of a job, on its capability's queue or ``queue`` (a pinned agent's)."""
        ...

    def fence(self, job_id: str, attempt: int) -> None:
        """Tell every agent which attempt of ``job_id`` is current; 0 calls the job off."""
        ...

    def started(self, job_id: str, attempt: int) -> str | None:
        """The id of the agent that started this attempt ("" when the fleet does not say which), or None."""
        ...

    def live_agents(self) -> list[AgentInventory]:
        """The agents whose heartbeat is current."""
        ...

    def drain_outcomes(self, block_s: float = 0.0) -> list[Event]:
        """Store the outcomes agents sent since the last call (waiting up to ``block_s`` for a first one), and
        say what became of each."""
        ...
