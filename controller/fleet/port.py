"""What the scheduler needs of a fleet, and nothing more.

:class:`controller.sweeps.Scheduler` talks only to a :class:`FleetPort`. ``redis_celery.RedisCeleryFleet``
is the real one (Celery queues on Redis, heartbeat keys, the results list and its collector);
``memory.MemoryFleet`` keeps everything in memory, so the scheduler's rules are tested without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Union

from controller.fleet.presence import Snapshot
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
    def send_many(self, sends: list[tuple[JobSpec, str | None]]) -> int:
        """Queue one attempt of each job, in order, on its capability's queue or the given one (a pinned
        agent's); returns how many went (an error stops it: those before went)."""
        ...

    def fence_many(self, fences: list[tuple[str, int]]) -> None:
        """Tell every agent which attempt of each job is current; 0 calls the job off."""
        ...

    def started_events(self) -> dict[tuple[str, int], str]:
        """The attempts agents said they started since the last call: (job id, attempt) -> agent id ("" when
        it does not say). Each start is told once, to one caller."""
        ...

    def live_agents(self) -> list[AgentInventory]:
        """The agents whose heartbeat is current."""
        ...

    def presence(self, since: int | None = None) -> Snapshot:
        """The live agents, brought up to date and taken whole: a :class:`~controller.fleet.presence.Snapshot`
        with what came and went since generation ``since`` (a tick's cost follows those, not the fleet)."""
        ...

    def drain_outcomes(self, block_s: float = 0.0) -> list[Event]:
        """Store the outcomes agents sent since the last call (waiting up to ``block_s`` for a first one), and
        say what became of each."""
        ...
