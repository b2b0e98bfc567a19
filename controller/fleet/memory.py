"""A whole fleet in memory, for tests of the scheduler's logic: no broker, no agents, no waiting.

A test plays the agents: it adds and removes them, starts a sent attempt on one, and finishes it with an
outcome (or a result that breaks the contract). Outcomes are checked and stored exactly as the real
collector does (the same contract check, the same :meth:`Store.ingest_many`), so what the scheduler sees
after :meth:`drain_outcomes` is what it would see from Redis. What it does not model: Celery's
redelivery of an unacknowledged message, heartbeat expiry (an agent is live until it is removed), and
the broker being unreachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.collector import REFUSED, _check, ids_of
from controller.fleet.port import Delivered, Event, SetAside
from controller.fleet.presence import FleetMirror, Snapshot
from protocol import AgentInventory, CapabilityInfo, HostFacts, JobOutcome, JobSpec, queue_for, utc_now


@dataclass
class Sent:
    spec: JobSpec
    queue: str


@dataclass
class MemoryFleet:
    store: object
    agents: dict[str, AgentInventory] = field(default_factory=dict)
    #: every attempt sent, in order
    sent: list[Sent] = field(default_factory=list)
    #: job id -> current attempt (0: called off), as the scheduler fenced it
    fences: dict[str, int] = field(default_factory=dict)
    #: "job_id.attempt" -> the agent that started it
    starts: dict[str, str] = field(default_factory=dict)
    #: starts not yet told to the scheduler (started_events)
    _announced: dict[tuple[str, int], str] = field(default_factory=dict)
    _inbox: list[str] = field(default_factory=list)
    mirror: FleetMirror = field(default_factory=FleetMirror)

    # ------------------------------------------------------------ the test's side: playing the agents

    def add_agent(self, agent_id: str, *capabilities: str, machine: str = "x86_64") -> None:
        caps = tuple(CapabilityInfo(name=c, runtime=c.split(":")[0], runtime_version="0", device=c.split(":")[1],
                                    device_name=c) for c in capabilities)  # fmt: skip
        host = HostFacts(hostname=agent_id, cpu_model="test", cpu_cores=1, ram_bytes=1, os="test", python="3", machine=machine)
        self.put_agent(AgentInventory(agent_id=agent_id, host=host, capabilities=caps, started_at=utc_now(),
                                      heartbeat_at=utc_now()))  # fmt: skip

    def put_agent(self, inventory: AgentInventory) -> None:
        """An agent joins, or comes back with this inventory."""
        self.agents[inventory.agent_id] = inventory
        self.mirror.apply(inventory.agent_id, inventory)

    def remove_agent(self, agent_id: str) -> None:
        self.agents.pop(agent_id)
        self.mirror.apply(agent_id, None)

    def last_sent(self, job_id: str) -> JobSpec:
        return next(s.spec for s in reversed(self.sent) if s.spec.job_id == job_id)

    def start(self, job_id: str, agent_id: str) -> JobSpec:
        """``agent_id`` takes the newest sent attempt of ``job_id`` (as a Celery worker would, fence unchecked)."""
        spec = self.last_sent(job_id)
        self.starts[f"{job_id}.{spec.attempt}"] = agent_id
        self._announced[(job_id, spec.attempt)] = agent_id
        return spec

    def finish(self, outcome: JobOutcome) -> None:
        """An agent's outcome arrives on the results list."""
        self._inbox.append(outcome.to_json(samples="text"))

    def finish_raw(self, raw: str) -> None:
        """Anything at all arrives on the results list."""
        self._inbox.append(raw)

    # ------------------------------------------------------------ the FleetPort

    def send_many(self, sends: list[tuple[JobSpec, str | None]]) -> int:
        self.sent += [Sent(spec, queue or queue_for(spec.capability)) for spec, queue in sends]
        return len(sends)

    def fence_many(self, fences: list[tuple[str, int]]) -> None:
        self.fences.update(fences)

    def started_events(self) -> dict[tuple[str, int], str]:
        out, self._announced = self._announced, {}
        return out

    def live_agents(self) -> list[AgentInventory]:
        return list(self.agents.values())

    def presence(self, since: int | None = None) -> Snapshot:
        return self.mirror.snapshot(since)

    def drain_outcomes(self, block_s: float = 0.0) -> list[Event]:
        events: list[Event] = []
        good: list[JobOutcome] = []
        for raw in self._inbox:
            try:
                good.append(_check(raw))
            except REFUSED as exc:
                events.append(SetAside(*ids_of(raw), str(exc)))
        self._inbox.clear()
        answers = self.store.ingest_many(good) if good else []
        events += [Delivered(o, what) for o, what in zip(good, answers)]
        return events
